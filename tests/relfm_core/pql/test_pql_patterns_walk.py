"""LIKE patterns and the node walkers the label engine uses."""

from __future__ import annotations

import pytest
from pql_queries import DRIVER_DNF
from pql_schemas import SCHEMAS

from relfm_core.pql import (
    AggFunc,
    ColumnRef,
    iter_aggregations,
    iter_column_refs,
    iter_nodes,
    like,
    query_aggregations,
    validate,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "pattern", "matches"),
    [
        ("gift card", "gift%", True),
        ("a gift", "gift%", False),
        ("abc", "a_c", True),
        ("abbc", "a_c", False),
        ("50%", "50\\%", True),
        ("500", "50\\%", False),
        ("a.b", "a.b", True),
        ("axb", "a.b", False),
        ("Gift", "gift%", False),
        ("line\nbreak", "line%", True),
        ("", "%", True),
        ("x_y", "x\\_y", True),
        ("xzy", "x\\_y", False),
    ],
)
def test_like(value: str, pattern: str, matches: bool) -> None:
    assert like(value, pattern) is matches


def test_walkers() -> None:
    q = validate(DRIVER_DNF, SCHEMAS["f1"])
    aggs = list(query_aggregations(q))
    assert [a.func for a in aggs] == [AggFunc.COUNT, AggFunc.COUNT]
    assert [a.where is not None for a in aggs] == [True, False]
    refs = list(iter_column_refs(q.target))
    assert refs == [ColumnRef("results", (), "statusId")]
    assert list(iter_aggregations(None)) == []
    assert len(list(iter_nodes(q.target))) == 4  # comparison, aggregation, where comparison, column


def test_walkers_see_filter_and_assuming() -> None:
    q = validate(
        "PREDICT users.age FOR EACH users.user_id WHERE COUNT(orders.*, -INF, 0) > 0 AND users.active "
        "ASSUMING COUNT(page_views.*, 0, 7) > 0",
        SCHEMAS["shop"],
    )
    assert [a.table for a in query_aggregations(q)] == ["orders", "page_views"]
    assert [r.column for r in iter_column_refs(q.entity_filter)] == ["active"]
