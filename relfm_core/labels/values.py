"""Column values and three-valued truth as flat NumPy vectors, and the comparisons between them.

Everything the label engine evaluates, per table row or per (entity, anchor) pair, is a `Vec`: one value
and one validity flag per position. Value kinds are few on purpose, so that a comparison is written once:

- NUM: float64 (numerical columns, COUNT/SUM/AVG results);
- TIME: int64 nanoseconds (timestamp columns, the time column, MIN/MAX of them);
- CODE: int64 codes into a sorted vocabulary (categorical columns, text factorised once, primary keys
  and foreign keys, whose codes are the parent's row ids). Because the vocabulary is sorted, `=`, `IN`
  and `<` become comparisons of codes against one binary search, and string operators (LIKE, CONTAINS)
  are evaluated once per distinct value, not per row;
- MULTI: multicategorical lists (only membership, COUNT and IS NULL apply); OPAQUE: embeddings (only
  validity).

Conditions are `Truth` pairs (definitely true, definitely false): SQL's unknown is neither, so AND, OR and
NOT follow three-valued logic by plain boolean algebra.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import numpy as np
import numpy.typing as npt

from relfm_core.pql import CompOp, Literal, LiteralKind, like_regex
from relfm_core.pql.errors import QueryError

BoolArray = npt.NDArray[np.bool_]
Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class Kind(StrEnum):
    NUM = "num"
    TIME = "time"
    CODE = "code"
    MULTI = "multi"
    OPAQUE = "opaque"


class Vocab:
    """The sorted distinct values codes index into, loaded on first use: a foreign key's vocabulary is
    its parent's keys, which only a comparison on that key ever needs."""

    def __init__(self, load: Callable[[], np.ndarray]) -> None:
        self._load = load

    @cached_property
    def values(self) -> np.ndarray:
        return self._load()

    @classmethod
    def of(cls, values: np.ndarray) -> Vocab:
        v = cls(lambda: values)
        return v

    def __len__(self) -> int:
        return len(self.values)

    def find(self, value: object) -> int:
        """Code of `value`, or -1 when it is not in the vocabulary."""
        vals = self.values
        if len(vals) == 0:
            return -1
        i = int(np.searchsorted(vals, value, side="left"))  # type: ignore[call-overload]
        return i if i < len(vals) and vals[i] == value else -1

    def bound(self, value: object, side: str) -> int:
        return int(np.searchsorted(self.values, value, side=side))  # type: ignore[call-overload]


@dataclass(frozen=True)
class Multi:
    """Multicategorical storage: row r holds codes items[start[r] : start[r] + count[r]] into vocab."""

    start: Int64Array
    count: Int64Array
    items: npt.NDArray[np.int32]
    vocab: Vocab


@dataclass(frozen=True)
class Vec:
    kind: Kind
    value: np.ndarray  # NUM float64 | TIME int64 | CODE int32/int64 | MULTI/OPAQUE: row index into storage
    valid: BoolArray
    vocab: Vocab | None = None
    multi: Multi | None = None

    def __len__(self) -> int:
        return len(self.valid)

    def take(self, idx: Int64Array) -> Vec:
        """Positions `idx` of this vector; -1 gives null (a missing link)."""
        missing = idx < 0
        safe = np.where(missing, 0, idx) if missing.any() else idx
        if len(self.valid) == 0:
            value = np.zeros(len(idx), dtype=self.value.dtype)
            valid = np.zeros(len(idx), dtype=bool)
        else:
            value = self.value[safe]
            valid = self.valid[safe] & ~missing
        return Vec(self.kind, value, valid, self.vocab, self.multi)

    def numbers(self) -> FloatArray:
        """Values as float64 (NUM as is, CODE through a numeric or boolean vocabulary)."""
        if self.kind is Kind.NUM:
            return np.asarray(self.value, dtype=np.float64)
        if self.kind is Kind.CODE and self.vocab is not None:
            table = np.asarray(self.vocab.values).astype(np.float64)
            if len(table) == 0:
                return np.zeros(len(self.value), dtype=np.float64)
            out: FloatArray = table[np.clip(self.value, 0, len(table) - 1)]
            return np.where(self.valid, out, 0.0)
        if self.kind is Kind.TIME:
            return np.asarray(self.value, dtype=np.float64)
        raise QueryError(f"{self.kind.value} values are not numbers")

    def distinct_keys(self) -> Int64Array:
        """int64 identities for COUNT_DISTINCT / LIST_DISTINCT: equal values, equal keys."""
        if self.kind is Kind.NUM:
            v = np.asarray(self.value, dtype=np.float64) + 0.0  # -0.0 and 0.0 are one value
            return np.where(self.valid, v, 0.0).view(np.int64)
        if self.kind in (Kind.TIME, Kind.CODE):
            return np.asarray(self.value, dtype=np.int64)
        raise QueryError(f"{self.kind.value} values cannot be counted as distinct")


@dataclass(frozen=True)
class Truth:
    """Three-valued condition: `true` and `false` are never both set; neither means unknown (NULL)."""

    true: BoolArray
    false: BoolArray

    @property
    def known(self) -> BoolArray:
        return self.true | self.false

    def __and__(self, other: Truth) -> Truth:
        return Truth(self.true & other.true, self.false | other.false)

    def __or__(self, other: Truth) -> Truth:
        return Truth(self.true | other.true, self.false & other.false)

    def __invert__(self) -> Truth:
        return Truth(self.false, self.true)

    def take(self, idx: Int64Array) -> Truth:
        return Truth(self.true[idx], self.false[idx])

    @classmethod
    def of(cls, result: BoolArray, valid: BoolArray) -> Truth:
        return cls(result & valid, ~result & valid)


def _number(lit: Literal) -> float | int:
    if lit.kind is LiteralKind.BOOL:
        return 1 if lit.value else 0
    if lit.kind in (LiteralKind.INT, LiteralKind.TIMESTAMP):
        assert isinstance(lit.value, int)
        return lit.value
    assert isinstance(lit.value, int | float)
    return float(lit.value)


def _ordered(value: np.ndarray, op: CompOp, x: object) -> BoolArray:
    if op is CompOp.EQ:
        return np.asarray(value == x)
    if op is CompOp.NE:
        return np.asarray(value != x)
    if op is CompOp.LT:
        return np.asarray(value < x)
    if op is CompOp.LE:
        return np.asarray(value <= x)
    if op is CompOp.GT:
        return np.asarray(value > x)
    return np.asarray(value >= x)


def _string_test(op: CompOp, pattern: str) -> Callable[[str], bool]:
    if op in (CompOp.CONTAINS, CompOp.NOT_CONTAINS):
        return lambda s: pattern in s
    if op in (CompOp.STARTS_WITH, CompOp.NOT_STARTS_WITH):
        return lambda s: s.startswith(pattern)
    if op in (CompOp.ENDS_WITH, CompOp.NOT_ENDS_WITH):
        return lambda s: s.endswith(pattern)
    rx = like_regex(pattern)
    return lambda s: rx.fullmatch(s) is not None


_NEGATED = frozenset(
    {
        CompOp.NE,
        CompOp.NOT_IN,
        CompOp.NOT_CONTAINS,
        CompOp.NOT_STARTS_WITH,
        CompOp.NOT_ENDS_WITH,
        CompOp.NOT_LIKE,
    }
)
_POSITIVE = {
    CompOp.NE: CompOp.EQ,
    CompOp.NOT_IN: CompOp.IN,
    CompOp.NOT_CONTAINS: CompOp.CONTAINS,
    CompOp.NOT_STARTS_WITH: CompOp.STARTS_WITH,
    CompOp.NOT_ENDS_WITH: CompOp.ENDS_WITH,
    CompOp.NOT_LIKE: CompOp.LIKE,
}


def compare(vec: Vec, op: CompOp, values: tuple[Literal, ...]) -> Truth:
    """`vec op values` with SQL semantics: null on either side is unknown (IS [NOT] NULL excepted)."""
    if op is CompOp.IS_NULL:
        return Truth(~vec.valid, vec.valid.copy())
    if op is CompOp.IS_NOT_NULL:
        return Truth(vec.valid.copy(), ~vec.valid)
    if op in _NEGATED:
        return ~compare(vec, _POSITIVE[op], values)
    result = _positive(vec, op, values)
    return Truth.of(result, vec.valid)


def _positive(vec: Vec, op: CompOp, values: tuple[Literal, ...]) -> BoolArray:
    if vec.kind in (Kind.NUM, Kind.TIME):
        if op is CompOp.IN:
            return np.isin(vec.value, np.array([_number(v) for v in values]))
        return _ordered(vec.value, op, _number(values[0]))
    if vec.kind is Kind.CODE:
        assert vec.vocab is not None
        return _code_test(vec.value, vec.vocab, op, values)
    if vec.kind is Kind.MULTI and op is CompOp.CONTAINS:
        assert vec.multi is not None
        return _multi_contains(vec, values[0])
    raise QueryError(f"'{op.value}' does not apply to {vec.kind.value} values")


def _literal_value(lit: Literal, vocab: Vocab) -> object:
    """The literal as the vocabulary's values are typed (TRUE is not 1, 1 is not 1.0 in a bool vocab)."""
    v = lit.value
    dtype = np.asarray(vocab.values).dtype
    if dtype.kind == "b":
        return bool(v)
    if dtype.kind in "iuf" and lit.kind is LiteralKind.BOOL:
        return 1 if v else 0
    return v


def _code_test(codes: np.ndarray, vocab: Vocab, op: CompOp, values: tuple[Literal, ...]) -> BoolArray:
    if op is CompOp.EQ:
        return np.asarray(codes == vocab.find(_literal_value(values[0], vocab)))
    if op is CompOp.IN:
        found = [vocab.find(_literal_value(v, vocab)) for v in values]
        hits = np.array([c for c in found if c >= 0], dtype=np.int64)
        return np.isin(codes, hits)
    if op in (CompOp.LT, CompOp.LE, CompOp.GT, CompOp.GE):
        x = _literal_value(values[0], vocab)
        if op is CompOp.LT:
            return np.asarray(codes < vocab.bound(x, "left"))
        if op is CompOp.LE:
            return np.asarray(codes < vocab.bound(x, "right"))
        if op is CompOp.GT:
            return np.asarray(codes >= vocab.bound(x, "right"))
        return np.asarray(codes >= vocab.bound(x, "left"))
    # String operators: evaluated once per distinct value, then looked up by code.
    pattern = values[0].value
    assert isinstance(pattern, str)
    test = _string_test(op, pattern)
    table = np.fromiter((isinstance(s, str) and test(s) for s in vocab.values), dtype=bool, count=len(vocab))
    if len(table) == 0:
        return np.zeros(len(codes), dtype=bool)
    return np.asarray(table[np.clip(codes, 0, len(table) - 1)])


def _multi_contains(vec: Vec, lit: Literal) -> BoolArray:
    m = vec.multi
    assert m is not None
    code = m.vocab.find(lit.value)
    if code < 0:
        return np.zeros(len(vec.value), dtype=bool)
    hits = np.concatenate([[0], np.cumsum(m.items == code, dtype=np.int64)])
    rows = np.asarray(vec.value, dtype=np.int64)
    start = m.start[rows]
    end = start + m.count[rows]
    return np.asarray(hits[end] - hits[start] > 0)
