"""The lake: where every table lives and the only code that reads or writes its Parquet.

This module is the only place that turns (table, partition) into a path. The root is a
local directory or any fsspec URL (`file://`, `memory://`, `s3://`, ...). Each partition
of a table is one Parquet file (zstd) `ROOT/<table>/<key>=<value>/part-0.parquet`,
written to a hidden temporary name in the same folder (fsynced on a local disk) and
renamed into place, so a reader sees the old partition or the new one, even after a crash,
and a rerun replaces it whole. Tables are declared in `schemas.tables`; a write is cast to
its table's schema, so stored files match the contract exactly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from schemas.tables import BY_NAME, Table
from tasks.lake import durable
from tasks.lake.dates import parse_date
from tasks.lake.parquet import PartitionWriter, parquet_bytes
from tasks.lake.roots import check_root, no_lake

PART_FILE = "part-0.parquet"
_TABLE_RE = re.compile(r"^[a-z_]+(/[a-z_]+)*$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")
_DATE_KEYS = ("dt", "run_date")  # keys whose partitions are only YYYY-MM-DD folders
_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Lake:
    """A lake rooted at a local path or fsspec URL."""

    root: str

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return _filesystem(self.root)[0]

    @property
    def base(self) -> str:
        """Root path as the filesystem sees it (no protocol)."""
        return _filesystem(self.root)[1]

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    # ---- paths -------------------------------------------------------------------
    def path(self, table: Table | str, **partition: Any) -> str:
        """Folder of a table, or of one partition when `key=value` is given."""
        table = str(table)
        if not _TABLE_RE.match(table):
            raise ValueError(f"invalid table name: {table!r}")
        parts = [self.base.rstrip("/"), table]
        for key, value in partition.items():
            text = value.isoformat() if isinstance(value, dt.date) else str(value)
            if not _VALUE_RE.match(text):
                raise ValueError(f"invalid partition value {key}={text!r}")
            parts.append(f"{key}={text}")
        return "/".join(parts)

    def url(self, table: Table | str, **partition: Any) -> str:
        """Like `path` but with the protocol, for engines that take URLs (DuckDB, Polars)."""
        p = self.path(table, **partition)
        return p if self.is_local else f"{_protocols(self.fs)[0]}://{p.lstrip('/')}"

    def partition_file(self, table: Table | str, **partition: Any) -> str:
        return f"{self.path(table, **partition)}/{PART_FILE}"

    def relpath(self, path: str) -> str:
        """A path under the root (as `files()` returns) made relative to the root."""
        base = self.base.rstrip("/") + "/"
        if not path.startswith(base):
            raise ValueError(f"{path!r} is not under the lake root {self.base!r}")
        return path[len(base) :]

    def exists(self, table: Table | str, **partition: Any) -> bool:
        return self.fs.exists(self.partition_file(table, **partition))

    def partitions(self, table: Table | str, key: str | None = None) -> list[str]:
        """Sorted partition values of a table (`dt=2024-01-01` -> `2024-01-01`); for a date
        key only exact ISO dates (`tasks.lake.listing.stray_partitions` names the rest)."""
        key = key or _first_key(table)
        folder = self.path(table)
        if not self.fs.exists(folder):
            return []
        prefix = f"{key}="
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))
        values = (n[len(prefix) :] for n in names if n.startswith(prefix))
        return sorted(v for v in values if key not in _DATE_KEYS or _is_date(v))

    def files(self, table: Table | str, **partition: Any) -> list[str]:
        """Data files (not hidden, not temporary) directly under a table or partition."""
        folder = self.path(table, **partition)
        if not self.fs.exists(folder):
            return []
        out = []
        for info in self.fs.ls(folder, detail=True):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info["type"] == "file" and not name.startswith((".", "_")):
                out.append(info["name"])
        return sorted(out)

    # ---- Parquet partitions ------------------------------------------------------
    def write_partition(
        self,
        table: Table | str,
        data: pl.DataFrame | pa.Table | Iterable[pl.DataFrame | pa.Table],
        schema: pa.Schema | None = None,
        **partition: Any,
    ) -> str:
        """Atomically write (or replace) one partition; returns the file path.

        `data` is a frame or consecutive pieces of one (written row group by row group,
        never concatenated). Each piece is cast to `schema`, else to the table's declared
        schema (columns selected in its order), so stored files match the contract.
        """
        schema = schema if schema is not None else _resolve(table).schema
        pieces = [data] if isinstance(data, pl.DataFrame | pa.Table) else data
        with self.partition_writer(table, schema, **partition) as writer:
            for piece in pieces:
                writer.write(piece)
        return writer.path

    @contextlib.contextmanager
    def partition_writer(
        self, table: Table | str, schema: pa.Schema | None = None, **partition: Any
    ) -> Iterator[PartitionWriter]:
        """A writer of one partition, put in place atomically when the block ends (and
        not at all when it raises)."""
        writer = PartitionWriter(self.partition_file(table, **partition), schema)
        yield writer
        self._atomic_put(writer.path, writer.finish())

    def write_parquet_file(
        self, table: Table | str, name: str, data: pl.DataFrame | pa.Table, **partition: Any
    ) -> str:
        """Atomically write one named Parquet file (e.g. a raw landing file) as given."""
        return self.write_file(table, name, parquet_bytes(data), **partition)

    def read_partition(self, table: Table | str, **partition: Any) -> pl.DataFrame:
        """Read one partition (without the partition column)."""
        with self.fs.open(self.partition_file(table, **partition), "rb") as f:
            return pl.from_arrow(pq.read_table(f))

    def delete_partition(self, table: Table | str, **partition: Any) -> None:
        folder = self.path(table, **partition)
        if self.fs.exists(folder):
            self.fs.rm(folder, recursive=True)

    def scan(
        self,
        table: Table | str,
        key: str | None = None,
        values: list[str] | None = None,
        until: dt.date | None = None,
        columns: list[str] | None = None,
    ) -> pl.DataFrame:
        """Read the chosen partitions of a table in one pass, with the key as a Date column.

        Only the partitions asked for are opened: `values` keeps those, `until` keeps
        partitions with key <= until; `columns` reads only those columns (the key is
        always added). The key is typed explicitly, so readers never hit the
        large_string/string mismatch of Hive keys stored as text (FIELD-NOTES).
        """
        key = key or _first_key(table)
        chosen = self.partitions(table, key) if values is None else sorted(values)
        if until is not None:
            chosen = [v for v in chosen if parse_date(v) <= until]
        files = [self.partition_file(table, **{key: v}) for v in chosen]
        files = [f for f in files if self.fs.exists(f)] if values is not None else files
        if not files:
            return pl.DataFrame()
        dataset = pads.dataset(
            files,
            format="parquet",
            filesystem=self.fs,
            partitioning=pads.partitioning(pa.schema([(key, pa.string())]), flavor="hive"),
            partition_base_dir=self.path(table),
        )
        wanted = None if columns is None else [*columns, key]
        frame = pl.from_arrow(dataset.to_table(columns=wanted))
        return frame.with_columns(pl.col(key).str.to_date())

    def scan_lazy(self, table: Table | str, values: list[dt.date]) -> pl.LazyFrame:
        """The partitions of `values` as one lazy frame with the key as a Date column, so
        each pass decodes only the columns (and, prefiltered, the rows) it needs. Local
        roots scan the files lazily; other stores read the partitions eagerly."""
        key = _first_key(table)
        files = {self.partition_file(table, **{key: v}): v for v in values}
        if not self.is_local:
            parts = [self.read_partition(table, **{key: v}).with_columns(pl.lit(v).alias(key))
                     for v in values]  # fmt: skip
            return pl.concat(parts).lazy() if parts else pl.LazyFrame()
        frame = pl.scan_parquet(list(files), include_file_paths="_path", parallel="prefiltered")
        day = pl.col("_path").replace_strict(files, return_dtype=pl.Date)
        return frame.with_columns(day.alias(key)).drop("_path")

    # ---- small JSON documents (manifests, GX results, configs) -------------------
    def write_json(self, relpath: str, obj: Any) -> str:
        target = f"{self.base.rstrip('/')}/{relpath.lstrip('/')}"
        self._atomic_put(target, json.dumps(obj, indent=2, default=str).encode())
        return target

    def read_json(self, relpath: str) -> Any | None:
        target = f"{self.base.rstrip('/')}/{relpath.lstrip('/')}"
        if not self.fs.exists(target):
            return None
        with self.fs.open(target, "rb") as f:
            return json.loads(f.read())

    def write_bytes(self, relpath: str, payload: bytes) -> str:
        target = f"{self.base.rstrip('/')}/{relpath.lstrip('/')}"
        self._atomic_put(target, payload)
        return target

    def write_file(self, table: Table | str, name: str, payload: bytes, **partition: Any) -> str:
        """Atomically write one named file (e.g. a raw landing file) under a table/partition."""
        if "/" in name or name.startswith((".", "_")):
            raise ValueError(f"invalid file name: {name!r}")
        target = f"{self.path(table, **partition)}/{name}"
        self._atomic_put(target, payload)
        return target

    def replace_folder(self, relpath: str, files: dict[str, bytes]) -> str:
        """Make the folder `relpath` hold exactly `files` (name -> bytes). Local: built
        aside and renamed into place whole. Object stores have no folder rename: the old
        files go, then each file is put in the order given (the last marks it complete)."""
        target = f"{self.base.rstrip('/')}/{relpath.strip('/')}"
        if self.is_local:
            durable.replace_folder(target, files)
            return target
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)
        for name, payload in files.items():
            self._atomic_put(f"{target}/{name}", payload)
        return target

    def _atomic_put(self, target: str, payload: bytes) -> None:
        if self.is_local:  # fsynced before and after the rename: survives a power cut
            durable.put_file(target, payload)
            return
        folder, name = target.rsplit("/", 1)
        self.fs.makedirs(folder, exist_ok=True)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        with self.fs.open(tmp, "wb") as f:
            f.write(payload)
        # Local: os.rename, atomic and replacing. Object stores: a copy, the best they offer.
        self.fs.mv(tmp, target)


def _resolve(table: Table | str) -> Table:
    if isinstance(table, Table):
        return table
    if table not in BY_NAME:
        raise ValueError(f"unknown table {table!r}: tables are declared in schemas/tables.py")
    return BY_NAME[table]


def _is_date(value: str) -> bool:
    """An exact, real ISO date (not 2024-02-30, 20240115 or 2024-W03-1)."""
    try:
        return bool(_ISO_DATE_RE.match(value)) and bool(dt.date.fromisoformat(value))
    except ValueError:
        return False


def _first_key(table: Table | str) -> str:
    keys = _resolve(table).keys
    return keys[-1] if keys else "dt"


def lake_from(storage: str | Path, must_exist: bool = False) -> Lake:
    """A Lake for a `--storage` value (relative paths made absolute); a StorageError for
    glob characters or `::`, and with `must_exist` (readers) for a root with no lake."""
    text = str(storage)
    check_root(text)
    if "://" not in text:
        text = str(Path(text).expanduser().resolve())
    lake = Lake(text)
    if must_exist and not lake.fs.isdir(lake.base):
        raise no_lake(text)
    return lake


@functools.lru_cache(maxsize=64)
def _filesystem(root: str) -> tuple[fsspec.AbstractFileSystem, str]:
    # Cached: url_to_fs costs ~20 us and Lake.fs/base are called per partition.
    fs, path = fsspec.core.url_to_fs(root)
    return fs, path


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
