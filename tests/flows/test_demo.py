"""`metarec demo` end to end, as the README's first command runs it, on a small slice of
the bundled ml-latest-small sample (the full sample takes minutes): the command exits 0,
prints what it produced, the night's record, a user's titled list and the evaluation, and
the lake it leaves is queryable with `metarec sql`."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from tasks.sources.movielens import bundled_sample_path

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

USERS = 80  # the most active users of the sample's last two years, on its top ITEMS films
ITEMS = 800


def _slice(folder: Path) -> Path:
    """The sample's last two years of ratings by its USERS most active users on its ITEMS
    most rated films, in the sample's own layout (ratings.csv, movies.csv)."""
    src = bundled_sample_path()
    ratings = pl.read_csv(gzip.decompress((src / "ratings.csv.gz").read_bytes()))
    recent = ratings.filter(pl.col("timestamp") >= ratings["timestamp"].max() - 2 * 365 * 86400)
    top = recent.group_by("movieId").len().sort(["len", "movieId"], descending=[True, False])
    recent = recent.filter(pl.col("movieId").is_in(top["movieId"].head(ITEMS).implode()))
    users = recent.group_by("userId").len().sort(["len", "userId"], descending=[True, False])
    keep = recent.filter(pl.col("userId").is_in(users["userId"].head(USERS).implode()))
    movies = pl.read_csv(gzip.decompress((src / "movies.csv.gz").read_bytes()))
    movies = movies.filter(pl.col("movieId").is_in(keep["movieId"].unique().implode()))
    folder.mkdir()
    keep.write_csv(folder / "ratings.csv")
    movies.write_csv(folder / "movies.csv")
    return folder


def test_demo_runs_end_to_end_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sample = _slice(tmp_path / "sample")
    lake = tmp_path / "lake"
    code = main(["demo", "--storage", str(lake), "--days", "1", "--sample", str(sample)])
    out = capsys.readouterr().out
    assert code == 0, out
    for heading in ("what was produced", "the nightly runs", "recommendations for user",
                    "evaluation on the holdout", "query it yourself"):  # fmt: skip
        assert f"=== {heading}" in out, out
    assert "published" in out
    # The user's list is shown with titles from the sample's movies.csv.
    titles = pl.read_csv(sample / "movies.csv")["title"].to_list()
    assert sum(title in out for title in titles) >= 5
    # The lake it leaves answers SQL.
    capsys.readouterr()
    assert (
        main(
            [
                "sql",
                "--storage",
                str(lake),
                "-c",
                "SELECT count(DISTINCT user_id) AS users FROM recommendations_latest",
            ]
        )
        == 0
    )
    assert str(USERS) in capsys.readouterr().out
