"""The interaction event, through its layers: raw -> bronze -> silver (+ quarantine).

Grain of silver: one row per (user_id, item_id, event_type, ts); exact duplicates are
dropped and counted, everything else that fails a rule is quarantined with its reason.

The quality rules are declared here once, as data: `tasks/validate/rules.py` compiles them
into row-level Polars predicates (which decide each row's fate), `tasks/validate/gx.py`
into a Great Expectations suite (which validates the result and is kept as evidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

VERSION = "1"

# Columns a raw landing file may carry; anything else is an "unknown column", kept in
# bronze as JSON text in `extra` and reported, never a reason to reject a row.
RAW_COLUMNS = ("user_id", "item_id", "ts", "event_type", "value")
REQUIRED_RAW_COLUMNS = ("user_id", "item_id", "ts")
DEFAULT_EVENT_TYPE = "interaction"

TS = pa.timestamp("us", tz="UTC")

# Bronze: a typed copy of raw. Typed columns are null where the raw text did not parse;
# the raw text is kept beside them so validation can tell "missing" from "unparseable".
BRONZE = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", TS),
        ("event_type", pa.string()),
        ("value", pa.float64()),
        ("ts_raw", pa.string()),
        ("value_raw", pa.string()),
        ("extra", pa.string()),  # JSON object of unknown columns, null when none
        ("parse_error", pa.string()),  # reason code when the line itself was unreadable
        ("source_file", pa.string()),
        ("source_line", pa.int64()),  # 1-based line (CSV/JSONL, header = line 1) or row
        ("ingested_at", TS),
    ]
)

SILVER = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", TS),
        ("event_type", pa.string()),
        ("value", pa.float64()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
    ]
)

QUARANTINE = pa.schema(
    [
        *[(f.name, f.type) for f in BRONZE],
        ("reason", pa.string()),
        ("expectation", pa.string()),  # the GX expectation type that states the rule
    ]
)

UNIQUE_KEY = ("user_id", "item_id", "event_type", "ts")


@dataclass(frozen=True)
class Rule:
    """One row-level quality rule: rows failing it are quarantined with `reason`.

    kind:
      parse_ok      `parse_error` is null (the line was readable)
      not_empty     column is non-null and non-blank
      parsed        raw text present => typed column non-null (unparseable otherwise)
      not_future    ts <= end of the landing day + tolerance
      in_set        column in Settings.event_types
      in_range      column null or within [Settings.value_min, Settings.value_max]
      unique_key    no other row with the same UNIQUE_KEY but a different value
    Rules are checked in order; a row gets the reason of the first rule it fails.
    """

    reason: str
    kind: str
    column: str
    expectation: str  # GX 1.x expectation class name that states the same rule


RULES: tuple[Rule, ...] = (
    Rule("malformed_line", "parse_ok", "parse_error", "ExpectColumnValuesToBeNull"),
    Rule("invalid_encoding", "parse_ok", "parse_error", "ExpectColumnValuesToBeNull"),
    Rule("missing_user_id", "not_empty", "user_id", "ExpectColumnValuesToNotBeNull"),
    Rule("missing_item_id", "not_empty", "item_id", "ExpectColumnValuesToNotBeNull"),
    Rule("missing_ts", "not_empty", "ts_raw", "ExpectColumnValuesToNotBeNull"),
    Rule("unparseable_ts", "parsed", "ts", "ExpectColumnValuesToNotBeNull"),
    Rule("future_ts", "not_future", "ts", "ExpectColumnValuesToBeBetween"),
    Rule("unknown_event_type", "in_set", "event_type", "ExpectColumnValuesToBeInSet"),
    Rule("unparseable_value", "parsed", "value", "ExpectColumnValuesToNotBeNull"),
    Rule("value_out_of_range", "in_range", "value", "ExpectColumnValuesToBeBetween"),
    Rule("conflicting_duplicate", "unique_key", "value", "ExpectCompoundColumnsToBeUnique"),
)

# Every reason a quarantined row can carry (the synthetic generator's manifest uses the
# same names). `parse_error` holds one of the first two.
REASONS: tuple[str, ...] = tuple(r.reason for r in RULES)
# Exact duplicates (same key and same value) are dropped and counted, not quarantined.
DUPLICATE = "duplicate"
