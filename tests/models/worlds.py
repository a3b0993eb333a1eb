"""Small synthetic worlds whose right answers are known."""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.learn.interactions import Interactions, SideFeatures

N_PER_GROUP, N_ITEMS_PER_GROUP = 40, 20


def two_groups(seed: int = 0, n_per_group: int = N_PER_GROUP) -> tuple[pl.DataFrame, SideFeatures]:
    """Users u0.. in group a like items a0..a19, users in group b like b0..b19 (12 events
    each, random order); side tables carry the group; item `a_new` has features only."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in ("a", "b"):
        for u in range(n_per_group):
            picks = rng.choice(N_ITEMS_PER_GROUP, size=12, replace=False)
            for k, i in enumerate(picks):
                rows.append((f"{g}u{u}", f"{g}{i}", 1_700_000_000 + 3600 * k, float(1 + i % 5)))
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "ts", "value"], orient="row")
    items = [f"{g}{i}" for g in "ab" for i in range(N_ITEMS_PER_GROUP)] + ["a_new"]
    side = SideFeatures(
        users=pl.DataFrame({
            "user_id": [f"{g}u{u}" for g in "ab" for u in range(n_per_group)] + ["zs_b"],
            "group": ["a"] * n_per_group + ["b"] * n_per_group + ["b"],
        }),
        items=pl.DataFrame({
            "item_id": items,
            "kind": [x[0] for x in items],
            "tags": [f"{x[0]}|common" for x in items],
            "title": items,
        }),
    )  # fmt: skip
    return frame, side


def catalogue(side: SideFeatures) -> np.ndarray:
    """The two-group world's item ids, sorted (object array)."""
    return np.sort(side.items["item_id"].to_numpy().astype(str)).astype(object)


def history(rows: list[tuple[str, str]], users: list[str], items: np.ndarray) -> Interactions:
    """(user, item) events in the given order over catalogue `items`, for `users`."""
    frame = pl.DataFrame(
        {"user_id": [u for u, _ in rows], "item_id": [i for _, i in rows],
         "ts": list(range(len(rows))), "value": [4.0] * len(rows)},
        schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "value": pl.Float64},
    )  # fmt: skip
    return Interactions.from_frame(frame, item_ids=items, user_ids=np.array(users, dtype=object))
