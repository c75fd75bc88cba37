"""Iterating over a query's nodes, for evaluators that need every aggregation or column up front
(e.g. to load the right CSR arrays, or to find the longest target window)."""

from __future__ import annotations

from collections.abc import Iterator

from relfm_core.pql.nodes import Aggregation, BoolOp, ColumnRef, Comparison, Not, Query, Target


def iter_nodes(node: Target) -> Iterator[Target]:
    """Every node under `node` (itself included), parents before children, aggregation WHERE included."""
    stack: list[Target] = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, BoolOp):
            stack.extend(reversed(current.children))
        elif isinstance(current, Not):
            stack.append(current.child)
        elif isinstance(current, Comparison):
            stack.append(current.lhs)
        elif isinstance(current, Aggregation) and current.where is not None:
            stack.append(current.where)


def iter_aggregations(node: Target | None) -> Iterator[Aggregation]:
    """Every aggregation in `node` (None gives none)."""
    if node is None:
        return
    for sub in iter_nodes(node):
        if isinstance(sub, Aggregation):
            yield sub


def iter_column_refs(node: Target | None) -> Iterator[ColumnRef]:
    """Every column reference in `node`, inside aggregation WHEREs too."""
    if node is None:
        return
    for sub in iter_nodes(node):
        if isinstance(sub, ColumnRef):
            yield sub


def query_aggregations(query: Query) -> Iterator[Aggregation]:
    """Aggregations of the target, the entity filter and ASSUMING, in that order."""
    yield from iter_aggregations(query.target)
    yield from iter_aggregations(query.entity_filter)
    yield from iter_aggregations(query.assuming)
