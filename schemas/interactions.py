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

VERSION = "2"

# Columns a raw landing file may carry; anything else is an "unknown column": dropped at
# ingest and reported per file (only declared columns reach bronze), or kept as JSON text
# in bronze `extra` when Settings.keep_unknown_columns is set. Never a reason to reject a row.
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
        # JSON object: the unknown columns (only with Settings.keep_unknown_columns), or
        # {"_raw_line": ...} for an unreadable line; null otherwise.
        ("extra", pa.string()),
        # Reason code when the line, or an id in it, could not be read as declared
        # (malformed_line, invalid_encoding, invalid_user_id, invalid_item_id).
        ("parse_error", pa.string()),
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
      parse_ok      `parse_error` is not this reason (ingest read the line, and its ids
                    as scalars: a JSON object, array or boolean, or a nested Parquet
                    value, is no id)
      not_empty     column is non-null and non-blank
      max_length    column (trimmed) has at most Settings.max_id_length characters
      parsed        raw text present => typed column non-null (unparseable otherwise)
      not_before    ts >= Settings.min_ts (older is a wrong clock or a wrong unit)
      not_future    ts <= end of the landing day + tolerance
      in_set        column in Settings.event_types
      in_range      column null or within [Settings.value_min, Settings.value_max]
      unique_key    no other row with the same UNIQUE_KEY but a different value
    Rules are checked in order; a row gets the reason of the first rule it fails. Ids are
    compared after `ID_NORMALISATION` (trimmed; an integral number without its zero
    fraction), which is also what silver stores.
    """

    reason: str
    kind: str
    column: str
    expectation: str  # GX 1.x expectation class name that states the same rule


RULES: tuple[Rule, ...] = (
    Rule("malformed_line", "parse_ok", "parse_error", "ExpectColumnValuesToBeNull"),
    Rule("invalid_encoding", "parse_ok", "parse_error", "ExpectColumnValuesToBeNull"),
    Rule("invalid_user_id", "parse_ok", "parse_error", "ExpectColumnValuesToBeNull"),
    Rule("invalid_item_id", "parse_ok", "parse_error", "ExpectColumnValuesToBeNull"),
    Rule("missing_user_id", "not_empty", "user_id", "ExpectColumnValuesToNotBeNull"),
    Rule("missing_item_id", "not_empty", "item_id", "ExpectColumnValuesToNotBeNull"),
    Rule("user_id_too_long", "max_length", "user_id", "ExpectColumnValueLengthsToBeBetween"),
    Rule("item_id_too_long", "max_length", "item_id", "ExpectColumnValueLengthsToBeBetween"),
    Rule("missing_ts", "not_empty", "ts_raw", "ExpectColumnValuesToNotBeNull"),
    Rule("unparseable_ts", "parsed", "ts", "ExpectColumnValuesToNotBeNull"),
    Rule("ts_before_floor", "not_before", "ts", "ExpectColumnValuesToBeBetween"),
    Rule("future_ts", "not_future", "ts", "ExpectColumnValuesToBeBetween"),
    Rule("unknown_event_type", "in_set", "event_type", "ExpectColumnValuesToBeInSet"),
    Rule("unparseable_value", "parsed", "value", "ExpectColumnValuesToNotBeNull"),
    Rule("value_out_of_range", "in_range", "value", "ExpectColumnValuesToBeBetween"),
    Rule("conflicting_duplicate", "unique_key", "value", "ExpectCompoundColumnsToBeUnique"),
)

# Every reason a quarantined row can carry (the synthetic generator's manifest uses the
# same names). `parse_error` holds one of the first four.
REASONS: tuple[str, ...] = tuple(r.reason for r in RULES)
# Ids as silver stores and compares them: trimmed, and an integral number written with a
# zero fraction ("1.0", as float columns print it) loses it ("1"); "1.5" and "007" stay.
# (pattern, replacement) for a regex replace of the trimmed id.
ID_NORMALISATION = (r"^([+-]?[0-9]+)\.0+$", "${1}")
# Exact duplicates (same key and same value) are dropped and counted, not quarantined.
DUPLICATE = "duplicate"
