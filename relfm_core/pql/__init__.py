"""PQL, the predictive query language: parse, validate against a graph schema, type the task.

    from relfm_core.pql import validate
    query = validate("PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id", schema)
    query.task_type  # TaskType.BINARY

The syntax is documented in docs/pql.md; the nodes the label engine evaluates are in `nodes`.
"""

from relfm_core.pql.errors import QueryError
from relfm_core.pql.format import format_expr, format_query
from relfm_core.pql.nodes import (
    NO_POS,
    AggFunc,
    Aggregation,
    BoolOp,
    BoolOpKind,
    ColumnRef,
    Comparison,
    CompOp,
    Condition,
    EntityMode,
    EntitySpec,
    Hop,
    Literal,
    LiteralKind,
    Not,
    Operand,
    Pos,
    Query,
    Target,
    TaskType,
    TimeUnit,
)
from relfm_core.pql.parser import parse
from relfm_core.pql.patterns import like, like_regex
from relfm_core.pql.validate import validate
from relfm_core.pql.walk import iter_aggregations, iter_column_refs, iter_nodes, query_aggregations
from relfm_core.pql.windows import shift, window_bounds

__all__ = [
    "NO_POS",
    "AggFunc",
    "Aggregation",
    "BoolOp",
    "BoolOpKind",
    "ColumnRef",
    "CompOp",
    "Comparison",
    "Condition",
    "EntityMode",
    "EntitySpec",
    "Hop",
    "Literal",
    "LiteralKind",
    "Not",
    "Operand",
    "Pos",
    "Query",
    "QueryError",
    "Target",
    "TaskType",
    "TimeUnit",
    "format_expr",
    "format_query",
    "iter_aggregations",
    "iter_column_refs",
    "iter_nodes",
    "like",
    "like_regex",
    "parse",
    "query_aggregations",
    "shift",
    "validate",
    "window_bounds",
]
