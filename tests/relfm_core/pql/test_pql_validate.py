"""Valid queries: resolved links and paths, task types, literals, and what the label engine reads."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pql_queries import DRIVER_CIRCUIT_COMPETE, DRIVER_DNF, DRIVER_POSITION, DRIVER_TOP3, VALID
from pql_schemas import SCHEMAS

from relfm_core.pql import (
    AggFunc,
    Aggregation,
    BoolOp,
    BoolOpKind,
    ColumnRef,
    Comparison,
    CompOp,
    EntityMode,
    Hop,
    Literal,
    LiteralKind,
    Not,
    Query,
    TaskType,
    TimeUnit,
    parse,
    query_aggregations,
    validate,
)

pytestmark = pytest.mark.unit

F1 = SCHEMAS["f1"]
FLIGHTS = SCHEMAS["flights"]
SHOP = SCHEMAS["shop"]


def _agg(node: object) -> Aggregation:
    assert isinstance(node, Aggregation), node
    return node


def _cmp(node: object) -> Comparison:
    assert isinstance(node, Comparison), node
    return node


@pytest.mark.parametrize(("schema", "text", "task"), VALID, ids=[f"{s}:{t[:60]}" for s, t, _ in VALID])
def test_valid_queries_get_their_task_type(schema: str, text: str, task: TaskType) -> None:
    query = validate(text, SCHEMAS[schema])
    assert query.validated
    assert query.task_type is task
    for agg in query_aggregations(query):
        assert agg.link_fk is not None
    assert query.source == text


# ---------------------------------------------------------------------------------------- rel-f1
def test_driver_dnf() -> None:
    q = validate(DRIVER_DNF, F1)
    assert q.task_type is TaskType.BINARY
    target = _cmp(q.target)
    assert target.op is CompOp.GT and target.values == (Literal(LiteralKind.INT, 0),)
    agg = _agg(target.lhs)
    assert (agg.func, agg.table, agg.link_fk, agg.path, agg.column) == (
        AggFunc.COUNT,
        "results",
        "driverId",
        (),
        "*",
    )
    assert (agg.start, agg.end, agg.unit) == (0, 30, TimeUnit.DAYS)
    assert agg.where == Comparison(
        ColumnRef("results", (), "statusId"), CompOp.NE, (Literal(LiteralKind.INT, 1),)
    )
    assuming = _cmp(q.assuming)
    assert _agg(assuming.lhs).where is None and _agg(assuming.lhs).link_fk == "driverId"
    assert q.entity.table == "drivers" and q.entity.key == "driverId" and q.entity.mode is EntityMode.EACH


def test_driver_top3_and_position() -> None:
    top3 = validate(DRIVER_TOP3, F1)
    agg = _agg(_cmp(top3.target).lhs)
    assert (agg.func, agg.table, agg.column, agg.link_fk) == (
        AggFunc.MIN,
        "qualifying",
        "position",
        "driverId",
    )
    assert _cmp(top3.target).op is CompOp.LE and top3.task_type is TaskType.BINARY
    position = validate(DRIVER_POSITION, F1)
    agg = _agg(position.target)
    assert (agg.func, agg.column, agg.end) == (AggFunc.AVG, "positionOrder", 60)
    assert position.task_type is TaskType.REGRESSION


def test_driver_circuit_compete_is_link_prediction_to_circuits() -> None:
    q = validate(DRIVER_CIRCUIT_COMPETE, F1)
    agg = _agg(q.target)
    assert agg.func is AggFunc.LIST_DISTINCT
    assert agg.table == "results" and agg.link_fk == "driverId"
    assert agg.path == (Hop("raceId", "races"),) and agg.column == "circuitId"
    assert agg.final_table == "races"
    assert q.rank_top_k == 10 and not q.classify
    assert q.task_type is TaskType.LINK_PREDICTION and q.link_target_table == "circuits"


def test_two_hop_path_to_categorical_is_multilabel() -> None:
    q = validate(
        "PREDICT LIST_DISTINCT(results.raceId->races.circuitId->circuits.country, 0, 365) CLASSIFY "
        "FOR EACH drivers.driverId",
        F1,
    )
    agg = _agg(q.target)
    assert agg.path == (Hop("raceId", "races"), Hop("circuitId", "circuits"))
    assert agg.final_table == "circuits" and agg.column == "country"
    assert q.task_type is TaskType.MULTILABEL and q.link_target_table is None


def test_aggregation_where_may_use_parent_columns() -> None:
    q = validate(
        "PREDICT COUNT(results.* WHERE results.raceId->races.year >= 2000, 0, 30) FOR EACH drivers.driverId",
        F1,
    )
    where = _cmp(_agg(q.target).where)
    assert where.lhs == ColumnRef("results", (Hop("raceId", "races"),), "year")


def test_static_target_through_parent_path() -> None:
    q = validate("PREDICT races.circuitId->circuits.country FOR EACH races.raceId", F1)
    assert q.target == ColumnRef("races", (Hop("circuitId", "circuits"),), "country")
    assert q.task_type is TaskType.MULTICLASS


# ---------------------------------------------------------------------------------------- links
def test_the_only_link_is_found() -> None:
    q = validate("PREDICT COUNT(flights.*, 0, 30, days) = 0 FOR EACH planes.tailnum", FLIGHTS)
    assert _agg(_cmp(q.target).lhs).link_fk == "tailnum"
    q = validate("PREDICT AVG(flights.arr_delay, 0, 7, days) FOR EACH airlines.carrier", FLIGHTS)
    assert _agg(q.target).link_fk == "carrier"


@pytest.mark.parametrize("link", ["origin", "dest"])
def test_a_named_link_is_kept(link: str) -> None:
    q = validate(f"PREDICT COUNT(flights[{link}].*, 0, 7, days) FOR EACH airports.faa", FLIGHTS)
    agg = _agg(q.target)
    assert agg.link_fk == link and agg.table == "flights"
    assert q.task_type is TaskType.REGRESSION


def test_same_link_in_aggregation_where_is_accepted_and_cleared() -> None:
    q = validate(
        "PREDICT COUNT(flights[dest].* WHERE flights[dest].distance > 100, 0, 7) FOR EACH airports.faa",
        FLIGHTS,
    )
    where = _cmp(_agg(q.target).where)
    assert isinstance(where.lhs, ColumnRef) and where.lhs.link is None


def test_self_link() -> None:
    q = validate("PREDICT COUNT(users[referrer_id].*, 0, 30) FOR EACH users.user_id", SHOP)
    agg = _agg(q.target)
    assert (agg.table, agg.link_fk) == ("users", "referrer_id")


def test_link_prediction_destination_table() -> None:
    q = validate(
        "PREDICT LIST_DISTINCT(flights.dest, 0, 30, days) RANK TOP 5 FOR EACH planes.tailnum", FLIGHTS
    )
    assert q.link_target_table == "airports" and q.rank_top_k == 5
    q = validate(
        "PREDICT LIST_DISTINCT(orders.product_id->products.brand_id, 0, 90) RANK TOP 5 FOR EACH users.user_id",
        SHOP,
    )
    assert q.link_target_table == "brands"


# ---------------------------------------------------------------------------------------- entities
def test_entity_modes() -> None:
    q = validate("PREDICT users.age FOR users.user_id = 7", SHOP)
    assert q.entity.mode is EntityMode.EQ and q.entity.values == (Literal(LiteralKind.INT, 7),)
    q = validate("PREDICT users.age FOR users.user_id IN (1, 2, -3)", SHOP)
    assert q.entity.mode is EntityMode.IN and [v.value for v in q.entity.values] == [1, 2, -3]
    q = validate("PREDICT planes.seats FOR planes.tailnum IN ('N1', \"N2\")", FLIGHTS)
    assert [v.value for v in q.entity.values] == ["N1", "N2"]


# ---------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize(
    ("unit_text", "unit"),
    [
        ("", TimeUnit.DAYS),
        (", days", TimeUnit.DAYS),
        (", day", TimeUnit.DAYS),
        (", DAYS", TimeUnit.DAYS),
        (", seconds", TimeUnit.SECONDS),
        (", second", TimeUnit.SECONDS),
        (", minutes", TimeUnit.MINUTES),
        (", hour", TimeUnit.HOURS),
        (", weeks", TimeUnit.WEEKS),
        (", Months", TimeUnit.MONTHS),
        (", month", TimeUnit.MONTHS),
    ],
)
def test_units(unit_text: str, unit: TimeUnit) -> None:
    q = validate(f"PREDICT COUNT(orders.*, 0, 2{unit_text}) FOR EACH users.user_id", SHOP)
    assert _agg(q.target).unit is unit


def test_backward_windows_in_where_and_minus_inf() -> None:
    q = validate(
        "PREDICT COUNT(orders.*, 0, 30) > 0 FOR EACH users.user_id "
        "WHERE COUNT(orders.*, -INF, 0, days) > 0 AND SUM(orders.amount, -90, -30) >= 10",
        SHOP,
    )
    flt = q.entity_filter
    assert isinstance(flt, BoolOp) and flt.op is BoolOpKind.AND
    first, second = (_agg(_cmp(c).lhs) for c in flt.children)
    assert first.start == -math.inf and first.end == 0
    assert (second.start, second.end) == (-90, -30)


def test_assuming_looks_forward() -> None:
    q = validate(
        "PREDICT COUNT(orders.*, 0, 30) > 0 FOR EACH users.user_id ASSUMING COUNT(page_views.*, 7, 30) > 0",
        SHOP,
    )
    agg = _agg(_cmp(q.assuming).lhs)
    assert (agg.table, agg.start, agg.end) == ("page_views", 7, 30)


# ---------------------------------------------------------------------------------------- conditions
def test_bare_boolean_column_in_a_condition_reads_as_equals_true() -> None:
    q = validate("PREDICT users.age FOR EACH users.user_id WHERE users.active", SHOP)
    assert q.entity_filter == Comparison(
        ColumnRef("users", (), "active"), CompOp.EQ, (Literal(LiteralKind.BOOL, True),)
    )


def test_bare_boolean_target_stays_an_operand() -> None:
    q = validate("PREDICT users.active FOR EACH users.user_id", SHOP)
    assert q.target == ColumnRef("users", (), "active") and q.task_type is TaskType.BINARY


def test_precedence_chains_and_parentheses() -> None:
    q = validate(
        "PREDICT users.age > 1 OR users.age < 0 AND NOT users.active OR users.bio IS NULL FOR EACH users.user_id",
        SHOP,
    )
    target = q.target
    assert isinstance(target, BoolOp) and target.op is BoolOpKind.OR and len(target.children) == 3
    middle = target.children[1]
    assert isinstance(middle, BoolOp) and middle.op is BoolOpKind.AND
    assert isinstance(middle.children[1], Not)
    grouped = validate(
        "PREDICT (users.age > 1 OR users.age < 0) AND (users.active OR users.bio IS NULL) FOR EACH users.user_id",
        SHOP,
    ).target
    assert isinstance(grouped, BoolOp) and grouped.op is BoolOpKind.AND
    assert all(isinstance(c, BoolOp) and c.op is BoolOpKind.OR for c in grouped.children)
    nested = validate(
        "PREDICT users.age > 1 AND (users.age < 9 AND users.active) FOR EACH users.user_id", SHOP
    )
    assert isinstance(nested.target, BoolOp) and len(nested.target.children) == 2  # parentheses kept
    chain = validate("PREDICT users.age > 1 AND users.age < 9 AND users.active FOR EACH users.user_id", SHOP)
    assert isinstance(chain.target, BoolOp) and len(chain.target.children) == 3


@pytest.mark.parametrize(
    ("text", "op", "values"),
    [
        ("users.age = 3", CompOp.EQ, [3]),
        ("users.age != 3", CompOp.NE, [3]),
        ("users.age <> 3", CompOp.NE, [3]),
        ("users.age < -3", CompOp.LT, [-3]),
        ("users.age <= 3.5", CompOp.LE, [3.5]),
        ("users.age > 1e3", CompOp.GT, [1000.0]),
        ("users.age >= -2.5E-1", CompOp.GE, [-0.25]),
        ("users.age IN (1, 2)", CompOp.IN, [1, 2]),
        ("users.age NOT IN (1)", CompOp.NOT_IN, [1]),
        ("users.bio IS NULL", CompOp.IS_NULL, []),
        ("users.bio IS NOT NULL", CompOp.IS_NOT_NULL, []),
        ("users.bio CONTAINS 'a'", CompOp.CONTAINS, ["a"]),
        ("users.bio NOT CONTAINS 'a'", CompOp.NOT_CONTAINS, ["a"]),
        ('users.bio STARTS WITH "a"', CompOp.STARTS_WITH, ["a"]),
        ("users.bio NOT STARTS WITH 'a'", CompOp.NOT_STARTS_WITH, ["a"]),
        ("users.bio ENDS WITH 'it''s'", CompOp.ENDS_WITH, ["it's"]),
        ("users.bio NOT ENDS WITH 'a'", CompOp.NOT_ENDS_WITH, ["a"]),
        ("users.bio LIKE 'a%'", CompOp.LIKE, ["a%"]),
        ("users.bio NOT LIKE '_a'", CompOp.NOT_LIKE, ["_a"]),
        ("users.tags CONTAINS 'vip'", CompOp.CONTAINS, ["vip"]),
        ("users.active = FALSE", CompOp.EQ, [False]),
        ("users.active != true", CompOp.NE, [True]),
        ('users.country IN (\'DE\', "say ""hi""")', CompOp.IN, ["DE", 'say "hi"']),
        ("users.score = 2", CompOp.EQ, [2]),
    ],
)
def test_operators_and_literals(text: str, op: CompOp, values: list[object]) -> None:
    q = validate(f"PREDICT {text} FOR EACH users.user_id", SHOP)
    target = _cmp(q.target)
    assert target.op is op
    assert [v.value for v in target.values] == values
    assert q.task_type is TaskType.BINARY


def test_literal_kinds_are_explicit() -> None:
    assert Literal(LiteralKind.BOOL, True) != Literal(LiteralKind.INT, 1)
    q = validate("PREDICT users.age > 3.0 FOR EACH users.user_id", SHOP)
    assert _cmp(q.target).value.kind is LiteralKind.FLOAT


def test_timestamp_literals_become_nanoseconds() -> None:
    q = validate("PREDICT users.signup > '2020-01-31 12:30' FOR EACH users.user_id", SHOP)
    lit = _cmp(q.target).value
    assert lit.kind is LiteralKind.TIMESTAMP
    assert lit.value == int(np.datetime64("2020-01-31T12:30", "ns").astype(np.int64))
    q = validate("PREDICT MAX(orders.created_at, 0, 30) > '2024-01' FOR EACH users.user_id", SHOP)
    assert _cmp(q.target).value.value == int(np.datetime64("2024-01-01", "ns").astype(np.int64))


# ---------------------------------------------------------------------------------------- syntax details
def test_keywords_are_case_insensitive_and_names_are_not_keywords() -> None:
    lower = validate(
        "predict count(results.*, 0, 30, days) > 0 for each drivers.driverId "
        "where count(results.*, -inf, 0) > 0 assuming count(results.*, 0, 30) > 0",
        F1,
    )
    upper = validate(
        "PREDICT COUNT(results.*, 0, 30, DAYS) > 0 FOR EACH drivers.driverId "
        "WHERE COUNT(results.*, -INF, 0) > 0 ASSUMING COUNT(results.*, 0, 30) > 0",
        F1,
    )
    assert lower == upper
    # `rank`, `date`, `time`, `position`, `order` are column names here, not keywords
    validate("PREDICT AVG(results.rank, 0, 30) FOR EACH drivers.driverId", F1)
    validate("PREDICT races.time IS NULL FOR EACH races.raceId", F1)
    validate("PREDICT MAX(qualifying.date, 0, 30) > '2000-01-01' FOR EACH drivers.driverId", F1)
    validate("PREDICT users.order FOR EACH users.user_id", SHOP)


def test_backtick_names_comments_and_line_breaks() -> None:
    text = (
        "-- drivers who race next month\n"
        "PREDICT COUNT(`results`.*, 0, 30)  -- any result\n"
        "   > 0\n"
        "FOR EACH drivers.`driverId`\n"
    )
    q = validate(text, F1)
    agg = _agg(_cmp(q.target).lhs)
    assert agg.table == "results"
    assert agg.pos.line == 2 and agg.pos.column == 9
    assert q.entity.pos.line == 4


def test_positions_of_nodes() -> None:
    q = parse("PREDICT COUNT(orders.* WHERE orders.amount > 3, 0, 30) > 0 FOR EACH users.user_id")
    target = _cmp(q.target)
    agg = _agg(target.lhs)
    assert agg.pos == (1, 9)
    assert agg.span("table") == (1, 15)
    assert agg.span("start") == (1, 49) and agg.span("end") == (1, 52)
    where = _cmp(agg.where)
    assert where.lhs.pos == (1, 30) and where.value.pos == (1, 46)
    assert target.value.pos == (1, 58)
    assert q.entity.pos == (1, 60) and q.entity.span("key") == (1, 75)


def test_positions_do_not_take_part_in_equality_and_queries_hash() -> None:
    a = validate(DRIVER_DNF, F1)
    b = validate("  " + DRIVER_DNF.replace(" ", "\n", 3), F1)
    assert a == b and hash(a) == hash(b)
    assert isinstance({a}, set)


def test_validate_accepts_a_query_and_is_idempotent() -> None:
    for schema, text, _ in VALID:
        once = validate(text, SCHEMAS[schema])
        assert validate(once, SCHEMAS[schema]) == once
        assert validate(parse(text), SCHEMAS[schema]) == once


def test_parse_leaves_links_and_task_type_unresolved() -> None:
    q = parse(DRIVER_DNF)
    assert isinstance(q, Query) and not q.validated and q.task_type is None
    assert _agg(_cmp(q.target).lhs).link_fk is None
