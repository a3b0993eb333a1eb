"""The meta-learner's hyperparameters (MetaConfig, saved with every checkpoint) and the
constants of its checkpoint format."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

# 2: time prior (item_prior, prior_w); 3: item-item part (item_item.pt); 4: several parts;
# 5: sparse parts only (cosine replaced the dense EASE part)
FORMAT_VERSION = 5
N_BUCKETS = 8  # log2 buckets for support sizes and recency ranks: 0, 1, 2-3, ..., 64+


@dataclass(frozen=True)
class ItemItemConfig:
    """Which parts, and their hyperparameters (fields of MetaConfig carry the values)."""

    kinds: tuple[str, ...] = ("cosine", "sequence", "recent")
    cosine_shrink: float = 10.0  # cosine: added to the denominator, damps rare pairs
    window: int = 100  # sequence: pairs at most this many events apart
    backward: float = 0.5  # sequence: weight of "b came before a" pairs
    beta: float = 0.5  # sequence: C[a, :] scaled by count(a)^-beta
    half_life: float = 5.0  # sequence: user row weights halve every this many events back
    top_k: int = 256  # cosine, sequence: each row keeps its top_k entries (0 = all)
    recent_days: tuple[float, ...] = (7.0, 30.0, 90.0, 365.0)  # recent: one part per window
    stale_days: float = 30.0  # a user whose latest event is older than this is "stale"


@dataclass
class MetaConfig:
    """Model and training hyperparameters (saved with every checkpoint)."""

    # -- model
    dim: int = 64  # factor size d of user and item vectors (factors have d + 1 columns)
    hidden: int = 128  # width of the encoder MLP
    dropout: float = 0.1  # in the encoder MLP
    id_dropout: float = 0.25  # share of items whose ID part is hidden per step (cold items)
    max_support: int = 50  # a user is encoded from at most this many most recent events
    # Time prior windows in days (0 = all time before t); () turns the prior off.
    prior_windows_days: tuple[float, ...] = (7.0, 30.0, 0.0)
    prior_snapshots: int = 64  # training cut times are rounded down to this many snapshots
    prior_init: tuple[float, ...] = ()  # initial weight per window (default 0: ID bias rules)
    # -- episodes (training.py)
    support_sizes: tuple[int, ...] = (0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50)  # 0 = zero-shot
    first_cut_share: float = 0.8  # episodes whose support is the user's first events
    query_size: int = 32  # query events sampled from everything after the cut
    # -- optimisation
    batch_users: int = 256
    lr: float = 5e-3
    weight_decay: float = 1e-5
    full_softmax_max_items: int = 50_000  # beyond: sampled softmax with logQ correction
    n_negatives: int = 2048  # sampled negatives per step (sampled softmax only)
    # -- validation / early stopping
    val_share: float = 0.15  # latest-arriving users held out for early stopping
    eval_every: int = 25  # steps between validations
    patience: int = 8  # validations without improvement before stopping
    min_count: int = 2  # vocabulary min count of side-feature values
    # -- item-item parts (item_item.py), fitted after training: sparse matrices with at
    # most seq_top_k entries per row, the sparse tail of the factors.
    item_item_kinds: tuple[str, ...] = ("cosine", "sequence", "recent")
    cosine_shrink: float = 10.0  # cosine: added to the denominator
    seq_window: int = 100  # sequence: pairs at most this many events apart
    seq_backward: float = 0.5  # sequence: weight of pairs in reverse order
    seq_beta: float = 0.5  # sequence: row a scaled by count(a)^-beta
    seq_half_life: float = 5.0  # sequence: user row weights halve every this many events
    seq_top_k: int = 256  # cosine and sequence: entries kept per row
    recent_days: tuple[float, ...] = (7.0, 30.0, 90.0, 365.0)  # recent parts' windows
    # Users whose latest event is older have their own mixing: returning after a gap, as
    # the gate's returning_after_gap segment (Settings.returning_gap_days). 1 day made
    # everyone not active today "stale" and cost new users 0.05-0.1 NDCG@10 (results.md).
    stale_days: float = 30.0
    item_item_max_items: int = 2_000_000  # memory is O(n_items * seq_top_k) per part
    # The last slot of each list goes to the best item without interactions at fit (new
    # items) when the list has none: exploration, so new items get their first events.
    new_item_slot: bool = True
    extra: dict = field(default_factory=dict)  # free-form notes (e.g. the data it ran on)

    @classmethod
    def from_dict(cls, doc: dict) -> MetaConfig:
        """The config saved in a checkpoint (JSON lists back to tuples; unknown keys, from
        other versions, ignored)."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in doc.items() if k in known}
        for name in (
            "support_sizes",
            "prior_windows_days",
            "prior_init",
            "item_item_kinds",
            "recent_days",
        ):
            if name in kw:
                kw[name] = tuple(kw[name])
        return cls(**kw)

    def item_item(self) -> ItemItemConfig:
        """The item-item parts' settings."""
        return ItemItemConfig(
            kinds=self.item_item_kinds, cosine_shrink=self.cosine_shrink, window=self.seq_window,
            backward=self.seq_backward, beta=self.seq_beta, half_life=self.seq_half_life,
            top_k=self.seq_top_k, recent_days=self.recent_days, stale_days=self.stale_days,
        )  # fmt: skip
