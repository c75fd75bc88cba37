"""SQL LIKE patterns as regular expressions, so every evaluator reads them the same way.

`%` matches any run of characters, `_` exactly one, a backslash makes the next character literal
(`'50\\%'`); everything else matches itself. Matching is case-sensitive and covers the whole string,
as in SQL. CONTAINS / STARTS WITH / ENDS WITH are plain substring tests and need no pattern.
"""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=1024)
def like_regex(pattern: str) -> re.Pattern[str]:
    out = []
    chars = iter(pattern)
    for ch in chars:
        if ch == "\\":
            out.append(re.escape(next(chars, "\\")))
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def like(value: str, pattern: str) -> bool:
    """Whether `value` matches the SQL LIKE `pattern` (whole string, case-sensitive)."""
    return like_regex(pattern).fullmatch(value) is not None
