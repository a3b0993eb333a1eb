"""Side tables: reading from the lake in every landing format, encoding, JSON round trip."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.lake.storage import lake_from
from tasks.learn.features import FeatureEncoder
from tasks.learn.side_tables import read_side_tables

GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def ml100k_users(data: Path) -> pl.DataFrame:
    """u.user as a side table: user_id, age, gender, occupation, zip."""
    return pl.read_csv(
        data / "ml-100k" / "u.user",
        separator="|",
        has_header=False,
        new_columns=["user_id", "age", "gender", "occupation", "zip"],
        schema_overrides={"user_id": pl.String, "zip": pl.String},
    )


def ml100k_items(data: Path) -> pl.DataFrame:
    """u.item as a side table: item_id, title, release_date, url, genres (`|`-joined)."""
    raw = (data / "ml-100k" / "u.item").read_bytes().decode("latin-1")
    cols = ["item_id", "title", "release_date", "video_date", "url", *GENRES]
    frame = pl.read_csv(
        io.StringIO(raw), separator="|", has_header=False, new_columns=cols,
        quote_char=None, schema_overrides={"item_id": pl.String},
    )  # fmt: skip
    genres = pl.concat_list(
        [pl.when(pl.col(g) == 1).then(pl.lit(g)) for g in GENRES]
    ).list.drop_nulls()
    return frame.select(
        "item_id", "title", "release_date", "url", genres.list.join("|").alias("genres")
    )


@pytest.fixture(scope="module")
def users(shared_data: Path) -> pl.DataFrame:
    return ml100k_users(shared_data)


@pytest.fixture(scope="module")
def items(shared_data: Path) -> pl.DataFrame:
    return ml100k_items(shared_data)


def test_infers_kinds_and_skips_display_and_identifier_columns(users, items):
    uenc = FeatureEncoder.fit(users, "user_id", min_count=2)
    kinds = {c.name: c.kind for c in uenc.columns}
    # zip: 795 distinct values over 943 users, identifier-like, so not a feature.
    assert kinds == {"age": "numeric", "gender": "categorical", "occupation": "categorical"}
    ienc = FeatureEncoder.fit(items, "item_id")
    ikinds = {c.name: c.kind for c in ienc.columns}
    assert "title" not in ikinds and "url" not in ikinds  # display / identifier-like
    assert ikinds["genres"] == "multi"
    genres = next(c for c in ienc.columns if c.name == "genres")
    assert set(genres.vocab) == set(GENRES)
    assert genres.max_len == 6  # the most genres any ML-100K movie has


def test_encode_users(users):
    enc = FeatureEncoder.fit(users, "user_id", min_count=2)
    ids = np.array(["1", "2", "no-such-user"])
    out = enc.encode(users, ids)
    assert out.tokens.shape == (3, 2) and out.numeric.shape == (3, 2)
    occ = next(c for c in enc.columns if c.name == "occupation")
    names = enc.token_names()
    assert names[out.tokens[0, 1]] == "occupation=technician"
    assert names[out.tokens[1, 0]] == "gender=F"
    # With a high min count, rare occupations fall back to the column's unknown token.
    strict = FeatureEncoder.fit(users, "user_id", min_count=50)
    rare = strict.encode(users, np.array(["4"]))  # a technician: 27 of them
    assert strict.token_names()[rare.tokens[0, 1]] == "occupation=<unk>"
    # Unknown user: unknown tokens and a missing flag, value 0.
    assert out.tokens[2, 1] == occ.offset
    assert out.numeric[2].tolist() == [0.0, 1.0]
    age = enc.columns[0]
    assert out.numeric[0, 0] == pytest.approx((24 - age.mean) / age.std, rel=1e-5)
    all_users = enc.encode(users, users["user_id"].to_numpy())
    assert abs(all_users.numeric[:, 0].mean()) < 1e-5
    assert all_users.tokens.max() < enc.n_tokens


def test_encode_items_bags(items):
    enc = FeatureEncoder.fit(items, "item_id")
    ids = items["item_id"].to_numpy()
    out = enc.encode(items, ids)
    names = enc.token_names()
    genres = next(c for c in enc.columns if c.name == "genres")
    slot = [c.name for c in enc.columns if c.kind != "numeric"].index("genres")
    bag = out.tokens[0, slot : slot + genres.max_len]  # Toy Story: Animation|Children's|Comedy
    assert sorted(names[t] for t in bag if t) == [
        "genres=Animation", "genres=Children's", "genres=Comedy"
    ]  # fmt: skip
    assert (bag == 0).sum() == genres.max_len - 3
    n_genres = items["genres"].str.split("|").list.len().to_numpy()
    assert ((out.tokens[:, slot : slot + genres.max_len] > 0).sum(1) == n_genres).all()


def test_json_round_trip(users, items):
    for frame, key in ((users, "user_id"), (items, "item_id")):
        enc = FeatureEncoder.fit(frame, key)
        back = FeatureEncoder.from_json(enc.to_json())
        ids = frame[key].to_numpy()
        a, b = enc.encode(frame, ids), back.encode(frame, ids)
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.numeric, b.numeric)
        assert back.token_names() == enc.token_names()


def test_no_side_table_gives_empty_inputs():
    enc = FeatureEncoder.fit(None, "item_id")
    out = enc.encode(None, np.array(["a", "b"]))
    assert out.tokens.shape == (2, 0) and out.numeric.shape == (2, 0) and enc.n_tokens == 1


def test_read_side_tables_formats(tmp_path, users, items):
    lake = lake_from(tmp_path / "lake")
    assert read_side_tables(lake).users is None
    half = users.height // 2
    lake.fs.makedirs(lake.path("raw/users"), exist_ok=True)
    lake.fs.makedirs(lake.path("raw/items"), exist_ok=True)
    users.head(half).write_csv(Path(lake.path("raw/users")) / "a.csv")
    with gzip.open(Path(lake.path("raw/users")) / "b.jsonl.gz", "wb") as f:
        users.slice(half).write_ndjson(f)
    items.write_parquet(Path(lake.path("raw/items")) / "items.parquet")
    (Path(lake.path("raw/items")) / ".tmp-partial.csv").write_text("junk")
    side = read_side_tables(lake)
    assert side.users.height == users.height and side.items.height == items.height
    assert side.users["user_id"].dtype == pl.String
    got = side.users.sort(pl.col("user_id").cast(pl.Int64))
    assert got["occupation"].to_list() == users["occupation"].to_list()


def test_a_small_table_whose_values_never_repeat_encodes_to_unknown_tokens():
    """No value reaches min_count: the vocabularies are empty and every value is unknown
    (found by the privacy tests: training crashed on a 40-user table)."""
    users = pl.DataFrame({"user_id": [f"u{k}" for k in range(40)],
                          "city": [f"c{k}" for k in range(40)],
                          "tags": [f"t{k}|s{k}" for k in range(40)]})  # fmt: skip
    enc = FeatureEncoder.fit(users, "user_id", min_count=2)
    out = enc.encode(users, users["user_id"].to_numpy())
    assert out.tokens.shape[0] == 40 and out.tokens.max() <= enc.n_tokens
