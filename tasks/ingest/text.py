"""CSV and JSONL lines -> bronze text rows (fields as text; unknown columns dropped, or
kept in `extra` when asked).

CSV fields are split by Polars (field count checked by counting commas); lines holding
quotes go through Arrow's CSV reader. JSONL objects are split by DuckDB's JSON functions,
guarded by `json_valid`; an id that is a JSON object, array or boolean is read as its JSON
text with `parse_error` = invalid_user_id / invalid_item_id. Every line gives exactly one
row: an unparseable one keeps its text in `extra` with `parse_error` set, so validation
quarantines it visibly.
"""

from __future__ import annotations

import csv
import io

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from schemas.interactions import RAW_COLUMNS
from tasks.ingest.landing import UnreadableFile, bad_lines, duck

# Text columns of a parsed line, in the order the JSONL query extracts them.
_TEXT = ("user_id", "item_id", "ts_raw", "event_type", "value_raw")
_META = ["source_line", "source_file", "_day"]


# ---- CSV --------------------------------------------------------------------------------
def csv_header(
    text: pa.Array, invalid: pl.DataFrame
) -> tuple[tuple[str, ...], pa.Array, pl.DataFrame]:
    """(header names, body lines, invalid-UTF-8 body lines) of a CSV file's first block
    (its lines and invalid lines as `split_lines` gives them)."""
    if len(text) == 0:  # nothing but an empty block: no header, no rows
        raise UnreadableFile("missing_header")
    if invalid.height and invalid["source_line"][0] == 1:  # header shown lossily
        header, invalid = invalid["text"][0], invalid.slice(1)
    else:
        header = text[0].as_py().rstrip("\r\n")
    names = [n.strip() for n in next(csv.reader([header.lstrip("\ufeff")]), [])]
    if not any(names):
        raise UnreadableFile("missing_header")
    return tuple(names), text.slice(1), invalid


def parse_csv(lines: pl.DataFrame, names: list[str], keep_unknown: bool) -> pl.DataFrame:
    """Body lines (of files sharing `names`) -> text rows; malformed lines flagged; unknown
    columns dropped (or, with `keep_unknown`, packed into `extra`)."""
    n = len(names)
    quoted = pl.col("text").str.contains('"', literal=True)
    commas = pl.col("text").str.count_matches(",", literal=True)
    lines = lines.with_columns(_q=quoted, _ok=commas == n - 1)
    fields = (
        lines.filter(~pl.col("_q") & pl.col("_ok"))
        .with_columns(pl.col("text").str.split_exact(",", n - 1))
        .select(
            *_META,
            *[pl.col("text").struct.field(f"field_{i}").alias(c) for i, c in enumerate(names)],
        )
    )
    malformed = [lines.filter(~pl.col("_q") & ~pl.col("_ok")).select(*_META, "text")]
    q = lines.filter(pl.col("_q"))
    if q.height:
        q_fields, q_bad = _parse_quoted(q.select(*_META, "text"), names)
        fields = pl.concat([fields, q_fields], how="vertical_relaxed")
        malformed.append(q_bad)
    fields = fields.with_columns(pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in names)
    bad = bad_lines(pl.concat(malformed), "malformed_line")
    rows = _from_columns(fields, names, keep_unknown)
    return pl.concat([rows, bad], how="diagonal_relaxed")


def _parse_quoted(q: pl.DataFrame, names: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Lines containing quotes: parsed by Arrow's CSV reader, each prefixed by its row id.

    A line with an odd number of quotes cannot close its quoted field on the same line
    (multi-line values are not supported) and is malformed up front, so Arrow never joins
    two physical lines. Rows Arrow rejects come back through the handler, by row id.
    Whatever Arrow makes of the rest, each line keeps its own fate: an error or a count
    that does not add up sends them through the strict parser, line by line.
    """
    q = q.with_row_index("_id")
    odd = pl.col("text").str.count_matches('"', literal=True) % 2 == 1
    bad = [q.filter(odd).drop("_id")]
    ok = q.filter(~odd)
    fields, rejected = _parse_quoted_arrow(ok, names)
    if fields is None:
        # A stray quote inside an unquoted field made Arrow join lines, or Arrow gave up
        # on the batch: redo these (rare) lines one by one with the strict csv module.
        fields, rejected = _parse_quoted_strict(ok, names)
    meta = ok.select("_id", *_META)
    fields = meta.join(fields.cast({"_id": pl.UInt32}), on="_id").drop("_id")
    bad.append(ok.filter(pl.col("_id").is_in(rejected)).drop("_id"))
    return fields, pl.concat(bad)


def _parse_quoted_arrow(
    ok: pl.DataFrame, names: list[str]
) -> tuple[pl.DataFrame | None, list[int]]:
    """(fields by row id, rejected row ids) of quoted lines with balanced quotes, in one
    Arrow pass; fields None when Arrow's rows do not match the lines one to one."""
    schema = {"_id": pl.UInt32, **dict.fromkeys(names, pl.String)}
    if ok.is_empty():  # every quoted line was malformed: Arrow rejects an empty input
        return pl.DataFrame(schema=schema), []
    rejected: list[int] = []
    lost: list[str] = []  # rejected rows without a readable row id

    def on_invalid(row: pacsv.InvalidRow) -> str:  # called for rejected rows only
        head = row.text.split(",", 1)[0]
        if head.isdigit():
            rejected.append(int(head))
        else:
            lost.append(head)
        return "skip"

    body = ok.select(pl.format("{},{}", "_id", "text")).to_series().str.join("\n")
    try:
        table = pacsv.read_csv(
            io.BytesIO(body[0].encode()),
            read_options=pacsv.ReadOptions(column_names=["_id", *names], use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={"_id": pa.uint32(), **dict.fromkeys(names, pa.string())},
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:  # e.g. a row longer than Arrow's block
        return None, []
    fields = pl.from_arrow(table)
    joined = fields["_id"].n_unique() != table.num_rows  # one row id seen twice
    if lost or joined or table.num_rows + len(rejected) != ok.height:
        return None, []
    return fields.cast(schema), rejected


def _parse_quoted_strict(ok: pl.DataFrame, names: list[str]) -> tuple[pl.DataFrame, list[int]]:
    """(fields by row id, rejected row ids) of quoted lines, parsed one by one."""
    rows, rejected = [], []
    for row_id, text in ok.select("_id", "text").iter_rows():  # pathological quoting only
        try:
            values = next(csv.reader([text], strict=True))
        except csv.Error:
            values = []
        if len(values) == len(names):
            rows.append([row_id, *values])
        else:
            rejected.append(row_id)
    schema = {"_id": pl.UInt32, **dict.fromkeys(names, pl.String)}
    return pl.DataFrame(rows, schema=schema, orient="row"), rejected


def _from_columns(fields: pl.DataFrame, names: list[str], keep_unknown: bool) -> pl.DataFrame:
    """Known columns renamed to bronze text columns; unknown ones dropped or in `extra`."""
    unknown = [c for c in names if c not in RAW_COLUMNS] if keep_unknown else []
    known = {"ts": "ts_raw", "value": "value_raw"}
    present = set(fields.columns)
    return fields.select(
        *_META,
        *[
            (pl.col(c).cast(pl.String) if c in present else pl.lit(None, pl.String)).alias(
                known.get(c, c)
            )
            for c in RAW_COLUMNS
        ],
        extra=pl.struct(unknown).struct.json_encode() if unknown else pl.lit(None, pl.String),
        parse_error=pl.lit(None, pl.String),
    )


# ---- JSONL ------------------------------------------------------------------------------
def parse_jsonl(
    lines: pl.DataFrame, keep_unknown: bool
) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """JSON lines -> (text rows, unknown keys per file). One DuckDB pass for all files;
    unknown keys are dropped (kept in `extra` with `keep_unknown`)."""
    keys = ", ".join(f"'{c}'" for c in RAW_COLUMNS)
    drop = "{" + ", ".join(f'"{c}": null' for c in RAW_COLUMNS) + "}"
    paths = ", ".join(f"'$.{c}'" for c in RAW_COLUMNS)
    # One JSON object per line; anything else (broken JSON, arrays, scalars) is malformed.
    # CASE keeps the JSON functions away from invalid lines (they raise on those). A
    # merge-patch with nulls deletes the known keys, leaving the unknown ones for `extra`.
    # json_type runs only where an id's text looks like an object, array or boolean.
    fields = ", ".join(f"f[{i + 1}] as {c}" for i, c in enumerate(_TEXT))
    extra = f"json_merge_patch(text, '{drop}')::varchar" if keep_unknown else "null"
    not_id = "('OBJECT', 'ARRAY', 'BOOLEAN')"
    looks = [f"(f[{i}][1] in ('{{', '[') or f[{i}] in ('true', 'false'))" for i in (1, 2)]
    # DuckDB keeps insertion order (preserve_insertion_order, on by default), so rows
    # come back aligned with `lines` and need no key to be matched up again.
    query = f"""
        with c as (
            select text, json_valid(text) and ltrim(text)[1] = '{{' as ok from body),
        d as (
            select *, case when ok then list_filter(json_keys(text),
                                                    lambda k: k not in ({keys})) end as unk,
                case when ok then json_extract_string(text, [{paths}]) end as f
            from c)
        select ok, case when len(unk) > 0 then unk end as unk, {fields},
            case when len(unk) > 0 then {extra} end as extra,
            case when {looks[0]} and json_type(text, '$.user_id') in {not_id}
                    then 'invalid_user_id'
                 when {looks[1]} and json_type(text, '$.item_id') in {not_id}
                    then 'invalid_item_id' end as parse_error
        from d"""
    con = duck()
    con.register("body", lines.select("text").to_arrow())
    parsed = pl.from_arrow(con.sql(query).to_arrow_table())
    con.close()
    if parsed.height != lines.height:
        raise RuntimeError("JSONL parse lost rows")  # cannot happen: a projection only
    parsed = pl.concat([lines.select(*_META), parsed], how="horizontal")
    good = parsed.filter(pl.col("ok"))
    unknown = (
        good.filter(pl.col("unk").is_not_null())
        .select("source_file", pl.col("unk").explode())
        .unique()
        .sort("source_file", "unk")
        .group_by("source_file", maintain_order=True)
        .agg("unk")
    )
    frame = good.select(*_META, *_TEXT, "extra", "parse_error")
    bad = bad_lines(lines.filter(~parsed["ok"]), "malformed_line")
    return pl.concat([frame, bad], how="diagonal_relaxed"), dict(unknown.iter_rows())
