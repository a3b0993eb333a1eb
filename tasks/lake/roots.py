"""Lake roots checked at the edge: a `--storage` value that cannot be a lake root fails
with an error naming it, before anything reads or writes there."""

from __future__ import annotations

# In a root these are fsspec/DuckDB glob syntax (views silently match nothing, a listing
# matches other folders) or fsspec URL chaining (`a::b` is "b through a": the lake moves
# elsewhere).
FORBIDDEN = ("::", "[", "]", "*", "?", "{", "}")


class StorageError(ValueError):
    """A --storage value that cannot be a lake root, or names no lake where one must be."""


def check_root(text: str) -> None:
    """A StorageError when the root holds glob characters or `::`."""
    if bad := [c for c in FORBIDDEN if c in text]:
        raise StorageError(
            f"invalid --storage {text!r}: {' '.join(repr(c) for c in bad)} not allowed in a "
            "lake root (glob characters and '::' change which files it names)"
        )


def no_lake(text: str) -> StorageError:
    """The error for a root with nothing there, for commands that read the lake."""
    return StorageError(
        f"no lake at {text}: run metarec import-movielens or synth first, or check --storage"
    )
