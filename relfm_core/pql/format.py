"""Nodes back to canonical PQL text.

Used to echo a query in logs and run records, and to name operands in error messages. The output
parses back to an equal query (`validate(format_query(q), schema) == q`): keywords upper-case, units
spelled out, links written explicitly, parentheses only where precedence needs them.
"""

from __future__ import annotations

import math
import re

import numpy as np

from relfm_core.pql.nodes import (
    NULL_OPS,
    Aggregation,
    BoolOp,
    BoolOpKind,
    ColumnRef,
    Comparison,
    CompOp,
    EntityMode,
    EntitySpec,
    Hop,
    Literal,
    LiteralKind,
    Not,
    Query,
    Target,
)

# Words the grammar may read as keywords; names spelled like them are written in backticks.
RESERVED = frozenset(
    {
        "PREDICT",
        "RANK",
        "TOP",
        "CLASSIFY",
        "FOR",
        "EACH",
        "WHERE",
        "ASSUMING",
        "AND",
        "OR",
        "NOT",
        "IN",
        "IS",
        "NULL",
        "TRUE",
        "FALSE",
        "CONTAINS",
        "STARTS",
        "ENDS",
        "WITH",
        "LIKE",
        "INF",
        "INFINITY",
    }
)
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_name(name: str) -> str:
    if _PLAIN_NAME.fullmatch(name) and name.upper() not in RESERVED:
        return name
    return f"`{name}`"


def format_literal(lit: Literal) -> str:
    if lit.kind is LiteralKind.NULL:
        return "NULL"
    if lit.kind is LiteralKind.BOOL:
        return "TRUE" if lit.value else "FALSE"
    if lit.kind is LiteralKind.TIMESTAMP:
        assert isinstance(lit.value, int)
        text = str(np.datetime_as_string(np.datetime64(lit.value, "ns")))
        return f"'{_trim_timestamp(text)}'"
    if lit.kind is LiteralKind.STRING:
        assert isinstance(lit.value, str)
        return "'" + lit.value.replace("'", "''") + "'"
    if lit.kind is LiteralKind.FLOAT:
        assert isinstance(lit.value, float)
        return repr(lit.value)
    return str(lit.value)


def _trim_timestamp(text: str) -> str:
    """'2020-01-01T00:00:00.000000000' -> '2020-01-01'; keeps any non-zero time part."""
    text = re.sub(r"\.0+$", "", text)
    text = re.sub(r"(\.\d*?)0+$", r"\1", text)
    return re.sub(r"T00:00:00$", "", text)


def _path(table: str, link: str | None, path: tuple[Hop, ...], column: str) -> str:
    out = format_name(table)
    if link is not None:
        out += f"[{format_name(link)}]"
    for hop in path:
        out += f".{format_name(hop.fk)}->{format_name(hop.table)}"
    return out + "." + ("*" if column == "*" else format_name(column))


def format_bound(value: int | float) -> str:
    return "-INF" if value == -math.inf else str(int(value))


def format_operand(node: Aggregation | ColumnRef) -> str:
    if isinstance(node, ColumnRef):
        return _path(node.table, node.link, node.path, node.column)
    inner = _path(node.table, node.link_fk, node.path, node.column)
    if node.where is not None:
        inner += " WHERE " + format_expr(node.where)
    return (
        f"{node.func.value}({inner}, {format_bound(node.start)}, {format_bound(node.end)}, {node.unit.value})"
    )


def format_operand_short(node: Aggregation | ColumnRef) -> str:
    """A compact name for messages: `COUNT(orders.*, ...)` without the window and WHERE."""
    if isinstance(node, ColumnRef):
        return format_operand(node)
    return f"{node.func.value}({_path(node.table, node.link_fk, node.path, node.column)}, ...)"


def _comparison(node: Comparison) -> str:
    lhs = format_operand(node.lhs)
    if node.op in NULL_OPS:
        return f"{lhs} {node.op.value}"
    if node.op in (CompOp.IN, CompOp.NOT_IN):
        return f"{lhs} {node.op.value} (" + ", ".join(format_literal(v) for v in node.values) + ")"
    return f"{lhs} {node.op.value} {format_literal(node.value)}"


def format_expr(node: Target) -> str:
    if isinstance(node, Comparison):
        return _comparison(node)
    if isinstance(node, Aggregation | ColumnRef):
        return format_operand(node)
    if isinstance(node, Not):
        inner = format_expr(node.child)
        return f"NOT ({inner})" if isinstance(node.child, BoolOp) else f"NOT {inner}"
    parts = []
    for child in node.children:
        text = format_expr(child)
        # AND binds tighter than OR, so an AND inside an OR needs no parentheses; an OR inside an AND
        # does, and so does a same-kind child (or it would read back as one longer chain).
        if isinstance(child, BoolOp) and (child.op is BoolOpKind.OR or child.op is node.op):
            text = f"({text})"
        parts.append(text)
    return f" {node.op.value} ".join(parts)


def format_entity(entity: EntitySpec) -> str:
    ref = f"{format_name(entity.table)}.{format_name(entity.key)}"
    if entity.mode is EntityMode.EACH:
        return f"FOR EACH {ref}"
    if entity.mode is EntityMode.EQ:
        return f"FOR {ref} = {format_literal(entity.values[0])}"
    return f"FOR {ref} IN (" + ", ".join(format_literal(v) for v in entity.values) + ")"


def format_query(query: Query) -> str:
    """Canonical one-line PQL for `query`."""
    parts = ["PREDICT", format_expr(query.target)]
    if query.rank_top_k is not None:
        parts.append(f"RANK TOP {query.rank_top_k}")
    if query.classify:
        parts.append("CLASSIFY")
    parts.append(format_entity(query.entity))
    if query.entity_filter is not None:
        parts.append("WHERE " + format_expr(query.entity_filter))
    if query.assuming is not None:
        parts.append("ASSUMING " + format_expr(query.assuming))
    return " ".join(parts)
