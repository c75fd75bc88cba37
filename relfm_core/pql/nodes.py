"""The PQL syntax tree: what the label engine evaluates.

Nodes are frozen dataclasses so a query can be hashed, cached and shared across workers. Source
positions (`pos`, `spans`) and the source text never take part in `==`: two queries are equal when
they ask the same thing, however they were written (that is what `format_query` round-trips).

`parse` builds these nodes from text alone; `validate` returns the same nodes with everything resolved
against a graph schema (`Aggregation.link_fk`, `Query.task_type`, timestamp literals as nanoseconds,
bare boolean columns in conditions rewritten to `= TRUE`). The label engine must only consume validated
queries (`Query.validated`).

Evaluation semantics the nodes encode:
- `Aggregation` reduces the rows of `table` (a direct child of the entity table through the foreign key
  `link_fk`) whose time lies in `anchor + start < time <= anchor + end` (see `windows.window_bounds`),
  after `where`, over `column` reached through `path` (`*` counts rows). COUNT and SUM over no rows
  are 0; AVG, MIN, MAX, FIRST and LAST over no rows are null. Nulls follow SQL (skipped by aggregates).
- `ColumnRef` outside an aggregation is a static column of the entity row (or a parent reached
  through `path`).
- Conditions use SQL three-valued logic: a comparison with a null side is null; WHERE-like contexts
  (aggregation WHERE, entity filter, ASSUMING) keep only rows/entities where the condition is true; a
  null target label leaves the example out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple


class Pos(NamedTuple):
    """1-based line and column in the query text."""

    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


NO_POS = Pos(0, 0)

# Sub-part positions of a node (e.g. ("column", Pos(1, 20))), kept for error messages only.
Spans = tuple[tuple[str, Pos], ...]


class AggFunc(StrEnum):
    SUM = "SUM"
    AVG = "AVG"
    MIN = "MIN"
    MAX = "MAX"
    COUNT = "COUNT"
    COUNT_DISTINCT = "COUNT_DISTINCT"
    FIRST = "FIRST"
    LAST = "LAST"
    LIST_DISTINCT = "LIST_DISTINCT"


class TimeUnit(StrEnum):
    SECONDS = "seconds"
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"
    WEEKS = "weeks"
    MONTHS = "months"


class CompOp(StrEnum):
    """Every predicate operator, negations spelled out so an evaluator needs one flat switch."""

    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "IN"
    NOT_IN = "NOT IN"
    IS_NULL = "IS NULL"
    IS_NOT_NULL = "IS NOT NULL"
    CONTAINS = "CONTAINS"
    NOT_CONTAINS = "NOT CONTAINS"
    STARTS_WITH = "STARTS WITH"
    NOT_STARTS_WITH = "NOT STARTS WITH"
    ENDS_WITH = "ENDS WITH"
    NOT_ENDS_WITH = "NOT ENDS WITH"
    LIKE = "LIKE"
    NOT_LIKE = "NOT LIKE"


NEGATIONS: dict[CompOp, CompOp] = {
    CompOp.IN: CompOp.NOT_IN,
    CompOp.IS_NULL: CompOp.IS_NOT_NULL,
    CompOp.CONTAINS: CompOp.NOT_CONTAINS,
    CompOp.STARTS_WITH: CompOp.NOT_STARTS_WITH,
    CompOp.ENDS_WITH: CompOp.NOT_ENDS_WITH,
    CompOp.LIKE: CompOp.NOT_LIKE,
}
ORDERING_OPS = frozenset({CompOp.LT, CompOp.LE, CompOp.GT, CompOp.GE})
EQUALITY_OPS = frozenset({CompOp.EQ, CompOp.NE, CompOp.IN, CompOp.NOT_IN})
NULL_OPS = frozenset({CompOp.IS_NULL, CompOp.IS_NOT_NULL})
STRING_OPS = frozenset(
    {
        CompOp.CONTAINS,
        CompOp.NOT_CONTAINS,
        CompOp.STARTS_WITH,
        CompOp.NOT_STARTS_WITH,
        CompOp.ENDS_WITH,
        CompOp.NOT_ENDS_WITH,
        CompOp.LIKE,
        CompOp.NOT_LIKE,
    }
)


class LiteralKind(StrEnum):
    INT = "int"
    FLOAT = "float"
    STRING = "string"
    BOOL = "bool"
    NULL = "null"
    # Only after validation: a string compared with a timestamp column, as int64 nanoseconds since epoch.
    TIMESTAMP = "timestamp"


class BoolOpKind(StrEnum):
    AND = "AND"
    OR = "OR"


class EntityMode(StrEnum):
    EACH = "each"  # FOR EACH t.pk
    EQ = "eq"  # FOR t.pk = v
    IN = "in"  # FOR t.pk IN (v, ...)


class TaskType(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    MULTILABEL = "multilabel"
    REGRESSION = "regression"
    LINK_PREDICTION = "link_prediction"


LiteralValue = int | float | str | bool | None


@dataclass(frozen=True)
class Literal:
    """A constant. `kind` is explicit so TRUE and 1 never compare equal."""

    kind: LiteralKind
    value: LiteralValue
    pos: Pos = field(default=NO_POS, compare=False)


class Hop(NamedTuple):
    """One step of a parent path: follow foreign-key column `fk` of the current table to `table`."""

    fk: str
    table: str


def _span(spans: Spans, name: str, default: Pos) -> Pos:
    for key, pos in spans:
        if key == name:
            return pos
    return default


@dataclass(frozen=True)
class ColumnRef:
    """`table.col` or `table.fk->parent.col` (chains allowed).

    Outside an aggregation it reads the entity row (static column); inside an aggregation's WHERE it
    reads the aggregated row. `link` is the `table[link]` written by the user; only aggregations take
    one, and `validate` clears it on condition references (it is the aggregation's `link_fk`).
    """

    table: str
    path: tuple[Hop, ...]
    column: str
    link: str | None = None
    pos: Pos = field(default=NO_POS, compare=False)
    spans: Spans = field(default=(), compare=False, repr=False)

    @property
    def final_table(self) -> str:
        """The table that holds `column` (the end of the path)."""
        return self.path[-1].table if self.path else self.table

    def span(self, name: str) -> Pos:
        return _span(self.spans, name, self.pos)


@dataclass(frozen=True)
class Aggregation:
    """`FUNC(table[link_fk].path.column [WHERE where], start, end, unit)`.

    `start` is an int or `-math.inf` (only in entity filters); `end` is an int; both count `unit`s from
    the anchor time. `column` is a column of `path`'s last table (or `table` when `path` is empty), or
    `'*'` (COUNT only, never after a path).
    """

    func: AggFunc
    table: str
    link_fk: str | None
    path: tuple[Hop, ...]
    column: str
    where: Condition | None
    start: int | float
    end: int
    unit: TimeUnit
    pos: Pos = field(default=NO_POS, compare=False)
    spans: Spans = field(default=(), compare=False, repr=False)

    @property
    def final_table(self) -> str:
        return self.path[-1].table if self.path else self.table

    @property
    def is_star(self) -> bool:
        return self.column == "*"

    def span(self, name: str) -> Pos:
        return _span(self.spans, name, self.pos)


@dataclass(frozen=True)
class Comparison:
    """`lhs op values`: one value for =, <, CONTAINS, ...; several for IN; none for IS [NOT] NULL."""

    lhs: Operand
    op: CompOp
    values: tuple[Literal, ...]
    # True when written as a bare operand in a condition (`WHERE users.active`), read as `= TRUE`.
    implicit: bool = field(default=False, compare=False, repr=False)
    pos: Pos = field(default=NO_POS, compare=False)

    @property
    def value(self) -> Literal:
        """The single right-hand value (ops other than IN / IS NULL)."""
        return self.values[0]


@dataclass(frozen=True)
class BoolOp:
    """AND / OR over two or more children: a chain `a AND b AND c` is one node with three children;
    parentheses the user wrote (`a AND (b AND c)`) stay nested."""

    op: BoolOpKind
    children: tuple[Condition, ...]
    pos: Pos = field(default=NO_POS, compare=False)


@dataclass(frozen=True)
class Not:
    child: Condition
    pos: Pos = field(default=NO_POS, compare=False)


Operand = Aggregation | ColumnRef
# After validation, conditions are only these three; a bare operand appears only as a whole target.
Condition = Comparison | BoolOp | Not
Target = Comparison | BoolOp | Not | Aggregation | ColumnRef


@dataclass(frozen=True)
class EntitySpec:
    """Which entities the query is about: all rows of `table`, one key, or a list of keys."""

    table: str
    key: str
    mode: EntityMode
    values: tuple[Literal, ...] = ()
    pos: Pos = field(default=NO_POS, compare=False)
    spans: Spans = field(default=(), compare=False, repr=False)

    def span(self, name: str) -> Pos:
        return _span(self.spans, name, self.pos)


@dataclass(frozen=True)
class Query:
    """A predictive query.

    `entity_filter` (WHERE) selects entities at each anchor time from static entity columns and
    backward-looking aggregations (windows end <= 0). `assuming` (ASSUMING) is a condition on the
    future (windows start >= 0): context and training examples are restricted to entities where it
    held, and predictions assume it. `link_target_table` is the table whose rows are ranked for link
    prediction. `task_type` is None until validated.
    """

    target: Target
    entity: EntitySpec
    entity_filter: Condition | None = None
    assuming: Condition | None = None
    rank_top_k: int | None = None
    classify: bool = False
    task_type: TaskType | None = None
    link_target_table: str | None = None
    source: str = field(default="", compare=False, repr=False)
    pos: Pos = field(default=NO_POS, compare=False)
    spans: Spans = field(default=(), compare=False, repr=False)

    @property
    def validated(self) -> bool:
        return self.task_type is not None

    def span(self, name: str) -> Pos:
        return _span(self.spans, name, self.pos)
