"""Pseudonymous user ids: a keyed HMAC-SHA256 of the real id, the same everywhere.

Everything that leaves the serving path (UI artifacts and previews, gold/episodes, the
published table when Settings.publish_pseudonyms is set) carries `Pseudonyms.of(user_id)`:
the first 16 hex digits (64 bits) of HMAC-SHA256(key, user_id). 64 bits keep collisions
away below billions of users, and without the key nobody can go back from a pseudonym
to an id or test a guess (docs/privacy.md).

The key, first found wins: the environment variable METAREC_PSEUDONYM_KEY; the Prefect
Secret block named by Settings.pseudonym_secret_block (loaded only when set); else a
per-lake random key generated once at ROOT/_keys/pseudonym.key (mode 0600). The key is
never a Settings field, so it is never dumped into fingerprints, logs or repr().
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field

import polars as pl

from tasks.config import Settings
from tasks.lake.storage import Lake

KEY_ENV = "METAREC_PSEUDONYM_KEY"
KEY_FILE = "_keys/pseudonym.key"
DIGITS = 16  # hex digits kept: 64 bits
_MIN_KEY_CHARS = 16


@dataclass(frozen=True)
class Pseudonyms:
    """The keyed pseudonym function; `source` says where the key came from (never the key)."""

    key: bytes = field(repr=False)
    source: str

    def of(self, user_id: str) -> str:
        """The pseudonym of one user id."""
        return hmac.new(self.key, str(user_id).encode(), hashlib.sha256).hexdigest()[:DIGITS]

    def series(self, ids: pl.Series) -> pl.Series:
        """Pseudonyms of a column of ids (nulls stay null), each distinct id hashed once."""
        text = ids.cast(pl.String)
        distinct = text.drop_nulls().unique()
        base = hmac.new(self.key, digestmod=hashlib.sha256)  # the keyed pads, computed once
        mapping = {}
        for value in distinct.to_list():
            h = base.copy()
            h.update(value.encode())
            mapping[value] = h.hexdigest()[:DIGITS]
        return text.replace_strict(mapping, default=None, return_dtype=pl.String).alias(ids.name)

    def frame(self, frame: pl.DataFrame, column: str = "user_id") -> pl.DataFrame:
        """`frame` with `column` replaced by its pseudonyms."""
        return frame.with_columns(self.series(frame.get_column(column)))


def pseudonyms_for(lake: Lake, settings: Settings) -> Pseudonyms:
    """The pseudonyms of this lake: the key from the environment, the configured Prefect
    Secret block, or the lake's own generated key (see the module docstring)."""
    text = os.environ.get(KEY_ENV, "")
    if text:
        return Pseudonyms(_checked(text, f"${KEY_ENV}").encode(), f"environment {KEY_ENV}")
    if settings.pseudonym_secret_block:
        name = settings.pseudonym_secret_block
        # Imported only when a block is configured: importing Prefect costs seconds, and
        # the environment and the lake key need none of it.
        from prefect.blocks.system import Secret

        value = str(Secret.load(name).get())
        return Pseudonyms(_checked(value, f"Secret block {name!r}").encode(), f"Secret {name!r}")
    return Pseudonyms(_lake_key(lake), f"lake key {KEY_FILE}")


def _checked(text: str, where: str) -> str:
    if len(text) < _MIN_KEY_CHARS:
        # The message names where the key came from, never the key.
        raise ValueError(
            f"the pseudonym key in {where} is shorter than {_MIN_KEY_CHARS} characters"
        )
    return text


def _lake_key(lake: Lake) -> bytes:
    """The lake's generated key, created on first use (mode 0600 on local disks).

    Local lakes write a private temporary file and hard-link it into place, which fails
    when the key exists: two runs starting at once agree on one key, and no reader sees a
    half-written one. On an object store the last write wins (documented in
    docs/privacy.md: provide the key there) and every run reads the stored key back.
    """
    path = f"{lake.base.rstrip('/')}/{KEY_FILE}"
    fs = lake.fs
    if not fs.exists(path):
        fresh = secrets.token_hex(32).encode()
        if lake.is_local:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            tmp = f"{path}.{secrets.token_hex(8)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(fresh)
            try:
                os.link(tmp, path)
            except FileExistsError:  # another run created it first: use theirs
                pass
            finally:
                os.unlink(tmp)
        else:
            lake.write_bytes(KEY_FILE, fresh)
    with fs.open(path, "rb") as f:
        key = f.read().strip()
    if len(key) < _MIN_KEY_CHARS:
        raise ValueError(f"the pseudonym key file {path} is empty or too short")
    return key
