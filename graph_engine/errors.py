"""The one error type users see.

Every bad input (spec, data, query, config) raises `RelfmError` with a single-line message that names the
table, column or query position. The CLI prints it without a traceback and exits with `exit_code` (2),
so scripts and schedulers can tell bad input from crashes.
"""

from __future__ import annotations


class RelfmError(Exception):
    """A user-facing error: one line, names what is wrong and where."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        # Keep messages to one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class SpecError(RelfmError):
    """The graph spec is inconsistent with itself or with the data."""


class DataError(RelfmError):
    """Source data violates the spec (duplicate keys, unparseable timestamps, wrong key types)."""


class SourceError(RelfmError):
    """A source cannot be found or read."""
