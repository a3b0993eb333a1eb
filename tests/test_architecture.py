"""The layout's rules, checked: layers import only downward, no cycles, short modules.

`lint-imports` (import-linter, contracts in pyproject.toml) is the check; the second test
shows it is not vacuous: a copy of the project with one upward import added must fail it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
# Modules allowed past ~300 lines, each with the reason.
LONG_MODULES: dict[str, str] = {}


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--no-logo", "--no-cache"], cwd=cwd, capture_output=True, text=True
    )


def test_layers_and_cycles_hold():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path):
    copy = tmp_path / "repo"
    for name in ("tasks", "flows", "schemas"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    storage = copy / "tasks" / "lake" / "storage.py"
    storage.write_text(storage.read_text() + "\nfrom tasks.serve import publish  # noqa\n")
    env_path = f"{copy}"
    result = subprocess.run(
        [str(LINT), "--no-logo", "--no-cache"],
        cwd=copy,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": str(LINT.parent)},
    )
    assert result.returncode != 0
    assert "tasks.lake is not allowed to import tasks.serve" in result.stdout


@pytest.mark.parametrize("folder", ["tasks", "flows", "schemas"])
def test_modules_stay_short(folder: str):
    too_long = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        rel = str(path.relative_to(REPO))
        lines = len(path.read_text().splitlines())
        if lines > 320 and rel not in LONG_MODULES:
            too_long[rel] = lines
    assert not too_long, f"modules over ~300 lines (split them or say why): {too_long}"
