"""The lake: where every table lives and how partitions are written.

This module is the only place that turns (table, partition) into a path. The root is a
local directory or any fsspec URL (`file://`, `memory://`, `s3://`, ...). Each partition
of a table is one Parquet file (zstd) `ROOT/<table>/<key>=<value>/part-0.parquet`,
written to a hidden temporary name in the same folder and renamed into place, so a
reader sees either the old partition or the new one, never half of one, and a rerun
replaces the partition whole.

Tables (see DESIGN.md): raw/interactions, bronze/interactions, silver/interactions,
quarantine/interactions, gold/episodes, gold/recommendations, gold/metrics, gold/runs,
gold/validation (GX results per batch), staging/recommendations, models.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from tasks.lake.dates import parse_date

PART_FILE = "part-0.parquet"
_TABLE_RE = re.compile(r"^[a-z_]+(/[a-z_]+)*$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")


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
    def path(self, table: str, **partition: Any) -> str:
        """Folder of a table, or of one partition when `key=value` is given."""
        if not _TABLE_RE.match(table):
            raise ValueError(f"invalid table name: {table!r}")
        parts = [self.base.rstrip("/"), table]
        for key, value in partition.items():
            text = value.isoformat() if isinstance(value, dt.date) else str(value)
            if not _VALUE_RE.match(text):
                raise ValueError(f"invalid partition value {key}={text!r}")
            parts.append(f"{key}={text}")
        return "/".join(parts)

    def url(self, table: str, **partition: Any) -> str:
        """Like `path` but with the protocol, for engines that take URLs (DuckDB, Polars)."""
        p = self.path(table, **partition)
        return p if self.is_local else f"{_protocols(self.fs)[0]}://{p.lstrip('/')}"

    def partition_file(self, table: str, **partition: Any) -> str:
        return f"{self.path(table, **partition)}/{PART_FILE}"

    def relpath(self, path: str) -> str:
        """A path under the root (as `files()` returns) made relative to the root."""
        base = self.base.rstrip("/") + "/"
        if not path.startswith(base):
            raise ValueError(f"{path!r} is not under the lake root {self.base!r}")
        return path[len(base) :]

    def exists(self, table: str, **partition: Any) -> bool:
        return self.fs.exists(self.partition_file(table, **partition))

    def partitions(self, table: str, key: str = "dt") -> list[str]:
        """Sorted partition values of a table (`dt=2024-01-01` -> `2024-01-01`)."""
        folder = self.path(table)
        if not self.fs.exists(folder):
            return []
        prefix = f"{key}="
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))
        return sorted(n[len(prefix) :] for n in names if n.startswith(prefix))

    def files(self, table: str, **partition: Any) -> list[str]:
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
        table: str,
        data: pl.DataFrame | pa.Table,
        schema: pa.Schema | None = None,
        **partition: Any,
    ) -> str:
        """Atomically write (or replace) one partition; returns the file path.

        With `schema`, the data is cast to it (columns selected in its order), so stored
        files match the table contract exactly (Polars exports large_string otherwise).
        """
        arrow = data.to_arrow() if isinstance(data, pl.DataFrame) else data
        if schema is not None:
            arrow = arrow.select(schema.names).cast(schema)
        target = self.partition_file(table, **partition)
        buf = io.BytesIO()
        pq.write_table(arrow, buf, compression="zstd")
        self._atomic_put(target, buf.getvalue())
        return target

    def read_partition(self, table: str, **partition: Any) -> pl.DataFrame:
        """Read one partition (without the partition column)."""
        with self.fs.open(self.partition_file(table, **partition), "rb") as f:
            return pl.from_arrow(pq.read_table(f))

    def delete_partition(self, table: str, **partition: Any) -> None:
        folder = self.path(table, **partition)
        if self.fs.exists(folder):
            self.fs.rm(folder, recursive=True)

    def scan(
        self,
        table: str,
        key: str = "dt",
        values: list[str] | None = None,
        until: dt.date | None = None,
    ) -> pl.DataFrame:
        """Read a partitioned table in one pass, with the partition key as a Date column.

        `values` keeps only those partitions; `until` keeps partitions with key <= until.
        The key is typed explicitly, so readers never hit the large_string/string mismatch
        of Hive keys stored as text (FIELD-NOTES).
        """
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
        frame = pl.from_arrow(dataset.to_table())
        return frame.with_columns(pl.col(key).str.to_date())

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

    def write_file(self, table: str, name: str, payload: bytes, **partition: Any) -> str:
        """Atomically write one named file (e.g. a raw landing file) under a table/partition."""
        if "/" in name or name.startswith((".", "_")):
            raise ValueError(f"invalid file name: {name!r}")
        target = f"{self.path(table, **partition)}/{name}"
        self._atomic_put(target, payload)
        return target

    def _atomic_put(self, target: str, payload: bytes) -> None:
        folder, name = target.rsplit("/", 1)
        self.fs.makedirs(folder, exist_ok=True)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        with self.fs.open(tmp, "wb") as f:
            f.write(payload)
        # Local: os.rename, atomic and replacing. Object stores: a copy, the best they offer.
        self.fs.mv(tmp, target)


def lake_from(storage: str | Path) -> Lake:
    """A Lake for a `--storage` value; local relative paths become absolute."""
    text = str(storage)
    if "://" not in text:
        text = str(Path(text).expanduser().resolve())
    return Lake(text)


@functools.lru_cache(maxsize=64)
def _filesystem(root: str) -> tuple[fsspec.AbstractFileSystem, str]:
    # Cached: url_to_fs costs ~20 us and Lake.fs/base are called per partition.
    fs, path = fsspec.core.url_to_fs(root)
    return fs, path


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
