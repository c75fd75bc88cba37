"""The error users see for a bad query.

One line: what is wrong, where (line:column, 1-based, in the query text), and a suggestion where one
fits, e.g. `unknown table 'ordrs' at 1:15 — did you mean 'orders'?`. The position is also kept on the
exception so a UI can underline it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from graph_engine.errors import RelfmError
from relfm_core.pql.nodes import Pos


class QueryError(RelfmError):
    """A query that does not parse, or does not fit the graph it is asked of."""

    def __init__(self, message: str, pos: Pos | None = None, hint: str | None = None) -> None:
        where = f" at {pos.line}:{pos.column}" if pos is not None and pos.line > 0 else ""
        tail = f" — {hint}" if hint else ""
        super().__init__(f"{message}{where}{tail}")
        self.pos = pos
        self.hint = hint


def did_you_mean(name: str, options: Iterable[str], prefix: str = "") -> str | None:
    """ "did you mean '<prefix>x'?" for the closest option (case-insensitive closeness), or None."""
    by_lower = {o.lower(): o for o in options}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"did you mean '{prefix}{by_lower[close[0]]}'?" if close else None
