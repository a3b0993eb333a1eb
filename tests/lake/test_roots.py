"""Lake roots checked at the edge: glob characters and `::` are refused with the value
named, and a root with no lake is an error for the commands that read it; the CLI prints
one `metarec: error:` line and exits 2, without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from tasks.lake.roots import StorageError
from tasks.lake.storage import lake_from


@pytest.mark.parametrize(
    ("name", "bad"),
    [("lake[1]", "'[' ']'"), ("la*ke", "'*'"), ("lake?x=1", "'?'"), ("l{a,b}", "'{' '}'")],
)
def test_glob_characters_are_refused(tmp_path: Path, name: str, bad: str) -> None:
    root = str(tmp_path / name)
    with pytest.raises(StorageError) as caught:
        lake_from(root)
    assert str(caught.value) == (
        f"invalid --storage {root!r}: {bad} not allowed in a lake root "
        "(glob characters and '::' change which files it names)"
    )


def test_fsspec_chaining_is_refused() -> None:
    with pytest.raises(StorageError, match=r"^invalid --storage 'memory://a::/tmp/b': '::' "):
        lake_from("memory://a::/tmp/b")


def test_a_missing_root_is_an_error_only_where_the_lake_is_read(tmp_path: Path) -> None:
    root = tmp_path / "typo"
    with pytest.raises(StorageError) as caught:
        lake_from(root, must_exist=True)
    assert str(caught.value) == (
        f"no lake at {root}: run metarec import-movielens or synth first, or check --storage"
    )
    assert lake_from(root).root == str(root)  # writers (synth, import) create it
    root.mkdir()
    assert lake_from(root, must_exist=True).root == str(root)


def test_the_cli_refuses_a_mistyped_storage(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope"
    commands = (["ingest", "--date", "2024-01-01"], ["nightly", "--date", "2024-01-01"],
                ["backfill", "--start", "2024-01-01", "--end", "2024-01-02"], ["sql"])  # fmt: skip
    for argv in commands:
        assert main([*argv, "--storage", str(missing)]) == 2, argv
        err = capsys.readouterr().err
        assert err == (
            f"metarec: error: no lake at {missing}: run metarec import-movielens or synth "
            "first, or check --storage\n"
        )
    assert not missing.exists()  # nothing was created there either


def test_the_cli_refuses_glob_characters_in_storage(tmp_path: Path, capsys) -> None:
    root = str(tmp_path / "lake[1]")
    argv = ["synth", "--users", "5", "--items", "5", "--days", "1", "--events-per-day", "5"]
    assert main([*argv, "--storage", root]) == 2
    assert capsys.readouterr().err == (
        f"metarec: error: invalid --storage {root!r}: '[' ']' not allowed in a lake root "
        "(glob characters and '::' change which files it names)\n"
    )
    assert not Path(root).exists()
    assert main(["sql", "--storage", f"{tmp_path}/a?b"]) == 2
    assert "'?' not allowed in a lake root" in capsys.readouterr().err
