"""format_query round-trips: the printed text parses and validates back to an equal query."""

from __future__ import annotations

import pytest
from pql_queries import VALID
from pql_schemas import SCHEMAS

from relfm_core.pql import (
    BoolOp,
    BoolOpKind,
    ColumnRef,
    Comparison,
    CompOp,
    EntityMode,
    EntitySpec,
    Literal,
    LiteralKind,
    Not,
    Query,
    format_query,
    parse,
    validate,
)
from relfm_core.pql.format import format_name

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("schema", "text"), [(s, t) for s, t, _ in VALID], ids=[t[:60] for _, t, _ in VALID])
def test_validated_queries_round_trip(schema: str, text: str) -> None:
    query = validate(text, SCHEMAS[schema])
    printed = format_query(query)
    assert validate(printed, SCHEMAS[schema]) == query
    assert format_query(validate(printed, SCHEMAS[schema])) == printed  # canonical: a fixed point


@pytest.mark.parametrize(("schema", "text"), [(s, t) for s, t, _ in VALID], ids=[t[:60] for _, t, _ in VALID])
def test_parsed_queries_round_trip(schema: str, text: str) -> None:
    parsed = parse(text)
    assert parse(format_query(parsed)) == parsed


def test_canonical_text() -> None:
    q = validate(
        "predict count(flights[dest].* where flights.arr_delay > 60, 0, 24, hour) "
        "for airports.faa in ('JFK', \"it's\") where airports.tz = -5",
        SCHEMAS["flights"],
    )
    assert format_query(q) == (
        "PREDICT COUNT(flights[dest].* WHERE flights.arr_delay > 60, 0, 24, hours) "
        "FOR airports.faa IN ('JFK', 'it''s') WHERE airports.tz = -5"
    )
    q = validate("PREDICT users.signup >= '2020-01-31 12:30:00.5' FOR EACH users.user_id", SCHEMAS["shop"])
    assert format_query(q) == "PREDICT users.signup >= '2020-01-31T12:30:00.5' FOR EACH users.user_id"


def test_parentheses_only_where_needed() -> None:
    q = parse("PREDICT (a.x OR a.y) AND NOT (a.z OR a.w) AND (a.v AND a.u) FOR EACH a.id")
    assert format_query(q) == (
        "PREDICT (a.x = TRUE OR a.y = TRUE) AND NOT (a.z = TRUE OR a.w = TRUE) AND (a.v = TRUE AND a.u = TRUE) "
        "FOR EACH a.id"
    )
    q = parse("PREDICT a.x OR a.y AND a.z FOR EACH a.id")
    assert format_query(q) == "PREDICT a.x = TRUE OR a.y = TRUE AND a.z = TRUE FOR EACH a.id"


def test_hand_built_query_with_awkward_names_round_trips() -> None:
    true = Literal(LiteralKind.BOOL, True)
    inner = BoolOp(
        BoolOpKind.AND,
        (
            Comparison(ColumnRef("my table", (), "order"), CompOp.GT, (Literal(LiteralKind.FLOAT, 1e-7),)),
            Comparison(ColumnRef("my table", (), "not"), CompOp.EQ, (true,)),
        ),
    )
    query = Query(
        target=BoolOp(BoolOpKind.AND, (inner, Not(Not(inner)))),
        entity=EntitySpec("my table", "id", EntityMode.EQ, (Literal(LiteralKind.STRING, "x'y"),)),
    )
    text = format_query(query)
    assert "`my table`" in text and "`not`" in text
    assert parse(text) == query


@pytest.mark.parametrize(
    ("name", "written"),
    [("users", "users"), ("Rank", "`Rank`"), ("in", "`in`"), ("two words", "`two words`"), ("1st", "`1st`")],
)
def test_format_name(name: str, written: str) -> None:
    assert format_name(name) == written
