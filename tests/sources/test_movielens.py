"""MovieLens import: exact row counts from ../shared/data, side tables, idempotent reruns."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.lake.storage import lake_from
from tasks.sources.movielens import bundled_sample_path, detect_flavour, import_movielens


def _interactions(root: Path) -> pl.DataFrame:
    """Every landed interaction with its partition date (thousands of small files: read
    them as one CSV body rather than one reader call per file)."""
    files = sorted((root / "raw" / "interactions").glob("dt=*/*.csv.gz"))
    header, bodies, days = b"", [], []
    for f in files:
        header, _, body = gzip.decompress(f.read_bytes()).partition(b"\n")
        bodies.append(body)
        days += [f.parent.name.removeprefix("dt=")] * body.count(b"\n")
    frame = pl.read_csv(
        io.BytesIO(header + b"\n" + b"".join(bodies)),
        schema_overrides={"user_id": pl.String, "item_id": pl.String, "value": pl.Float64},
    )
    ts = pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC")
    return frame.with_columns(ts, dt=pl.Series(days).str.to_date())


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_import_ml100k_lands_every_rating(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "ml-100k"
    result = import_movielens(source, lake_from(tmp_path))
    assert (result.flavour, result.rows, result.users, result.items) == (
        "ml-100k",
        100_000,
        943,
        1682,
    )
    assert result.user_features and result.dates == len(result.files) - 2

    got = _interactions(tmp_path)
    assert got.height == 100_000
    assert set(got["event_type"]) == {"rating"}
    # Each event sits in the partition of its UTC date.
    assert (got["ts"].dt.date() == got["dt"]).all()
    # Same (user, item, epoch, rating) multiset as u.data.
    want = pl.read_csv(
        source / "u.data",
        separator="\t",
        has_header=False,
        new_columns=["user_id", "item_id", "value", "ts"],
        schema_overrides={"user_id": pl.String, "item_id": pl.String, "value": pl.Float64},
    )
    got = got.select("user_id", "item_id", "value", pl.col("ts").dt.epoch("s"))
    cols = ["user_id", "item_id", "ts", "value"]
    assert got.select(cols).sort(cols).equals(want.select(cols).sort(cols))

    users = pl.read_parquet(tmp_path / "raw/users/users.parquet")
    assert users.height == 943 and users.schema["age"].is_numeric()
    assert set(users.columns) == {"user_id", "age", "gender", "occupation", "zip_region"}
    assert users.filter(pl.col("user_id") == "1").row(0) == ("1", 24, "M", "technician", "8")
    # Plain (not large) strings: DuckDB, pandas and PyArrow readers agree on the types.
    for name in ("users", "items"):
        schema = pq.read_schema(tmp_path / f"raw/{name}/{name}.parquet")
        assert schema.field(f"{name[:-1]}_id").type == pa.string()

    items = pl.read_parquet(tmp_path / "raw/items/items.parquet")
    assert items.height == 1682
    toy = items.filter(pl.col("item_id") == "1").row(0, named=True)
    assert toy == {
        "item_id": "1",
        "title": "Toy Story (1995)",
        "genres": "Animation|Children's|Comedy",
        "year": 1995,
    }
    # u.item is Latin-1: accented titles must survive as proper text.
    assert items["title"].str.contains("é").any()
    assert (items["genres"] != "").sum() == 1680  # 267 and 1373 are flagged 'unknown' only


def test_import_bundled_sample(tmp_path: Path) -> None:
    source = bundled_sample_path()
    assert detect_flavour(source) == "ml-latest-small"
    result = import_movielens(source, lake_from(tmp_path))
    assert (result.rows, result.users, result.items) == (100_836, 610, 9742)
    assert not result.user_features and not (tmp_path / "raw" / "users").exists()
    assert str(result.first_date) == "1996-03-29" and str(result.last_date) == "2018-09-24"

    got = _interactions(tmp_path)
    assert got.height == 100_836
    assert (got["ts"].dt.date() == got["dt"]).all()
    assert got["value"].min() == 0.5 and got["value"].max() == 5.0
    assert got.select(pl.col("user_id"), pl.col("item_id")).n_unique() == 100_836

    items = pl.read_parquet(tmp_path / "raw/items/items.parquet")
    assert set(items.columns) == {"item_id", "title", "genres", "year", "tags"}
    toy = items.filter(pl.col("item_id") == "1").row(0, named=True)
    assert toy["year"] == 1995 and "Animation" in toy["genres"].split("|")
    assert "pixar" in toy["tags"].split("|")
    assert items.filter(pl.col("genres").str.contains("no genres")).height == 0
    assert (items["genres"] == "").sum() == 34  # the "(no genres listed)" movies
    assert items["year"].null_count() < 20
    assert items["tags"].str.contains("[A-Z]").sum() == 0  # tags are lowercased
    series = items.filter(pl.col("item_id") == "171749").row(0, named=True)
    assert series["year"] == 2006  # "(2006–2007)": the first year


def test_bundled_sample_is_the_shared_dataset(shared_data: Path) -> None:
    folder = bundled_sample_path()
    for name in ("ratings", "movies", "tags", "links"):
        packed = (folder / f"{name}.csv.gz").read_bytes()
        assert (
            gzip.decompress(packed)
            == (shared_data / "ml-latest-small" / f"{name}.csv").read_bytes()
        )
    assert (folder / "README.txt").read_text().count("Usage License") == 1
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1_500_000


def test_rerun_gives_the_same_bytes(shared_data: Path, tmp_path: Path) -> None:
    lake = lake_from(tmp_path)
    import_movielens(shared_data / "ml-100k", lake)
    first = _tree(tmp_path)
    import_movielens(shared_data / "ml-100k", lake)
    assert _tree(tmp_path) == first
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left behind


def test_unknown_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a MovieLens folder"):
        import_movielens(tmp_path, lake_from(tmp_path / "lake"))
