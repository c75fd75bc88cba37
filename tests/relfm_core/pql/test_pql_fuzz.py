"""Fuzzing: whatever text comes in, `parse` and `validate` raise nothing but QueryError, and every
query that validates round-trips through format_query."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pql_queries import VALID
from pql_schemas import SCHEMAS

from relfm_core.pql import QueryError, format_query, parse, validate

pytestmark = pytest.mark.unit

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# fmt: off
TOKENS = [
    'PREDICT', 'FOR', 'EACH', 'WHERE', 'ASSUMING', 'RANK', 'TOP', 'CLASSIFY', 'AND', 'OR', 'NOT', 'IN',
    'IS', 'NULL', 'TRUE', 'FALSE', 'CONTAINS', 'STARTS', 'ENDS', 'WITH', 'LIKE', 'COUNT', 'SUM', 'AVG',
    'MIN', 'MAX', 'FIRST', 'LAST', 'LIST_DISTINCT', 'COUNT_DISTINCT', 'days', 'months', 'hours', '-INF',
    'INF', '(', ')', ',', '.', '*', '->', '[', ']', '=', '!=', '<>', '<', '<=', '>', '>=', '0', '1', '-7',
    '30', '1.5', '1e400', '99999999999999999999', "'x'", '"y"', '`', '--', 'users', 'orders', 'user_id',
    'age', 'amount', 'status', 'product_id', 'products', 'category', 'drivers', 'driverId', 'results',
    'raceId', 'races', 'circuitId', 'flights', 'dest', 'airports', 'faa', "'", '`a b`', '\n',
]
# fmt: on
PUNCT = "().,*[]-><=!'\"`%_ \n\t"


def _check(text: str) -> None:
    """Raises only QueryError; a query that validates must round-trip."""
    with contextlib.suppress(QueryError):
        parse(text)
    for schema in SCHEMAS.values():
        try:
            query = validate(text, schema)
        except QueryError as e:
            assert "\n" not in str(e)
            continue
        assert query.task_type is not None
        assert validate(format_query(query), schema) == query


@FUZZ
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    _check(text)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list(PUNCT) + list("aPFOREACHWIN019")), max_size=120))
def test_random_punctuation(text: str) -> None:
    _check("PREDICT " + text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40), st.booleans())
def test_token_soup(tokens: list[str], prefix: bool) -> None:
    _check(("PREDICT " if prefix else "") + " ".join(tokens))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    _, text, _ = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate", "case"]))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            piece = draw(st.sampled_from(TOKENS) | st.text(max_size=3))
            text = text[:i] + piece + text[i:]
        elif kind == "replace":
            text = text[:i] + draw(st.sampled_from(list(PUNCT) + TOKENS)) + text[j:]
        elif kind == "truncate":
            text = text[:i]
        elif kind == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + text[i:j].swapcase() + text[j:]
    return text


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_of_valid_queries(text: str) -> None:
    _check(text)


# Generated queries over the shop schema: most are valid, many are not; either way, no surprises.
SHOP = SCHEMAS["shop"]
AGGS = ["COUNT", "COUNT_DISTINCT", "SUM", "AVG", "MIN", "MAX", "FIRST", "LAST", "LIST_DISTINCT"]
ORDER_COLUMNS = [
    "*",
    *SHOP.tables["orders"].columns,
    "product_id->products.category",
    "product_id->products.price",
]
USER_COLUMNS = [*list(SHOP.tables["users"].columns), "referrer_id->users.age"]
OPS = ["=", "!=", "<", ">=", "IN", "NOT IN", "IS NULL", "IS NOT NULL", "CONTAINS", "NOT LIKE", "STARTS WITH"]
LITERALS = ["0", "3", "-2.5", "'DE'", "'2020-01-01'", "TRUE", "NULL", "'x%'"]
UNITS = ["", ", days", ", months", ", hours", ", weeks"]


@st.composite
def comparison(draw: st.DrawFn, operand: str) -> str:
    op = draw(st.sampled_from(OPS))
    if op in ("IS NULL", "IS NOT NULL"):
        return f"{operand} {op}"
    if op in ("IN", "NOT IN"):
        values = draw(st.lists(st.sampled_from(LITERALS), min_size=1, max_size=3))
        return f"{operand} {op} ({', '.join(values)})"
    return f"{operand} {op} {draw(st.sampled_from(LITERALS))}"


@st.composite
def aggregation(draw: st.DrawFn, window: tuple[int, int]) -> str:
    func = draw(st.sampled_from(AGGS))
    column = draw(st.sampled_from(ORDER_COLUMNS))
    table = draw(st.sampled_from(["orders", "page_views", "users[referrer_id]", "addresses"]))
    where = ""
    if draw(st.booleans()):
        where = " WHERE " + draw(comparison("orders." + draw(st.sampled_from(ORDER_COLUMNS[1:]))))
    start, end = window
    start_text = draw(st.sampled_from([str(start), "-INF"])) if start < 0 else str(start)
    return f"{func}({table}.{column}{where}, {start_text}, {end}{draw(st.sampled_from(UNITS))})"


@st.composite
def generated_query(draw: st.DrawFn) -> str:
    future = (draw(st.integers(0, 5)), draw(st.integers(6, 40)))
    past = (draw(st.integers(-40, -1)), draw(st.integers(-1, 1)))
    if draw(st.booleans()):
        target = draw(aggregation(future))
    else:
        target = "users." + draw(st.sampled_from(USER_COLUMNS))
    if draw(st.booleans()):
        target = draw(comparison(target))
    task = draw(st.sampled_from(["", "", " RANK TOP 5", " CLASSIFY"]))
    text = f"PREDICT {target}{task} FOR EACH users.user_id"
    if draw(st.booleans()):
        text += " WHERE " + draw(comparison(draw(aggregation(past))))
    if draw(st.booleans()):
        text += " ASSUMING " + draw(comparison(draw(aggregation(future))))
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated_query())
def test_generated_queries(text: str) -> None:
    try:
        query = validate(text, SHOP)
    except QueryError as e:
        assert "\n" not in str(e)
        return
    assert query.task_type is not None
    printed = format_query(query)
    assert validate(printed, SHOP) == query
    assert format_query(validate(printed, SHOP)) == printed


# Typed generation: operands with operators and literals that fit them, so most queries validate and
# the round trip is exercised over every construct.
NUMERIC_LITERALS = st.sampled_from(["0", "1", "-3", "2.5", "1e3", "-0.5"])
TYPED_ORDER_COLUMNS = {
    "amount": "num",
    "quantity": "num",
    "status": "str",
    "note": "str",
    "created_at": "ts",
    "is_gift": "bool",
    "product_id->products.price": "num",
    "product_id->products.category": "str",
    "product_id->products.brand_id->brands.name": "str",
}
TYPED_USER_COLUMNS = {
    "age": "num",
    "score": "num",
    "country": "str",
    "bio": "str",
    "signup": "ts",
    "active": "bool",
}


@st.composite
def typed_condition(draw: st.DrawFn, operand: str, kind: str) -> str:
    if draw(st.integers(0, 9)) == 0:
        return f"{operand} {draw(st.sampled_from(['IS NULL', 'IS NOT NULL']))}"
    if kind == "num":
        op = draw(st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">=", "IN", "NOT IN"]))
        if op.endswith("IN"):
            return f"{operand} {op} ({', '.join(draw(st.lists(NUMERIC_LITERALS, min_size=1, max_size=3)))})"
        return f"{operand} {op} {draw(NUMERIC_LITERALS)}"
    if kind == "str":
        op = draw(st.sampled_from(["=", "!=", "IN", "CONTAINS", "NOT LIKE", "STARTS WITH", "NOT ENDS WITH"]))
        value = draw(st.sampled_from(["'a'", "'it''s'", '"b%"', "'_c'"]))
        return f"{operand} {op} ({value})" if op == "IN" else f"{operand} {op} {value}"
    if kind == "ts":
        op = draw(st.sampled_from(["<", ">=", "=", "!="]))
        date = draw(st.sampled_from(["'2020-01-01'", "'1999-12-31 23:59:59'", "'2021-06'"]))
        return f"{operand} {op} {date}"
    if draw(st.booleans()):
        return operand
    return f"{operand} {draw(st.sampled_from(['=', '!=']))} {draw(st.sampled_from(['TRUE', 'FALSE']))}"


@st.composite
def typed_where(draw: st.DrawFn, table: str, columns: dict[str, str], depth: int = 0) -> str:
    choice = draw(st.integers(0, 5 if depth < 2 else 2))
    if choice <= 2:
        column = draw(st.sampled_from(sorted(columns)))
        return draw(typed_condition(f"{table}.{column}", columns[column]))
    if choice == 3:
        return "NOT " + draw(typed_where(table, columns, depth + 1))
    op = draw(st.sampled_from(["AND", "OR"]))
    left = draw(typed_where(table, columns, depth + 1))
    right = draw(typed_where(table, columns, depth + 1))
    return f"({left} {op} {right})" if draw(st.booleans()) else f"{left} {op} {right}"


@st.composite
def typed_aggregation(draw: st.DrawFn, start: str, end: int) -> tuple[str, str]:
    """(text, kind of result); kind 'list-fk' / 'list-cat' for LIST_DISTINCT."""
    func, column, kind = draw(
        st.sampled_from(
            [
                ("COUNT", "*", "num"),
                ("COUNT", "note", "num"),
                ("COUNT_DISTINCT", "product_id", "num"),
                ("SUM", "amount", "num"),
                ("SUM", "is_gift", "num"),
                ("AVG", "product_id->products.price", "num"),
                ("MIN", "quantity", "num"),
                ("MAX", "created_at", "ts"),
                ("FIRST", "status", "cat"),
                ("LAST", "is_gift", "bool"),
                ("LAST", "amount", "num"),
                ("LIST_DISTINCT", "product_id", "list-fk"),
                ("LIST_DISTINCT", "product_id->products.brand_id", "list-fk"),
                ("LIST_DISTINCT", "status", "list-cat"),
            ]
        )
    )
    where = f" WHERE {draw(typed_where('orders', TYPED_ORDER_COLUMNS))}" if draw(st.booleans()) else ""
    unit = draw(st.sampled_from(["", ", days", ", day", ", hours", ", weeks", ", months", ", MINUTES"]))
    return f"{func}(orders.{column}{where}, {start}, {end}{unit})", kind


@st.composite
def typed_query(draw: st.DrawFn) -> str:
    start = draw(st.integers(0, 10))
    end = start + draw(st.integers(1, 60))
    if draw(st.integers(0, 3)) == 0:
        column = draw(st.sampled_from(sorted(TYPED_USER_COLUMNS)))
        kind = TYPED_USER_COLUMNS[column]
        target = (
            draw(typed_condition(f"users.{column}", kind)) if kind in ("str", "ts") else f"users.{column}"
        )
        task = ""
    else:
        target, kind = draw(typed_aggregation(str(start), end))
        task = {"list-fk": " RANK TOP 7", "list-cat": " CLASSIFY"}.get(kind, "")
        if kind == "ts" or (kind == "num" and draw(st.booleans())):  # a timestamp is only a target compared
            target = draw(typed_condition(target, kind))
        elif kind == "cat" and draw(st.booleans()):
            task = " CLASSIFY"
    entity = draw(
        st.sampled_from(["FOR EACH users.user_id", "FOR users.user_id = 3", "FOR users.user_id IN (1, 2)"])
    )
    text = f"PREDICT {target}{task} {entity}"
    if draw(st.booleans()):
        past_end = -draw(st.integers(0, 10))
        past_start = draw(st.sampled_from(["-INF", str(past_end - draw(st.integers(1, 90)))]))
        agg, _ = draw(typed_aggregation(past_start, past_end).filter(lambda a: a[1] == "num"))
        text += f" WHERE {agg} > {draw(NUMERIC_LITERALS)}"
        if draw(st.booleans()):
            text += " AND " + draw(typed_where("users", TYPED_USER_COLUMNS))
    if draw(st.booleans()):
        agg, _ = draw(typed_aggregation(str(start), end).filter(lambda a: a[1] == "num"))
        text += f" ASSUMING {agg} >= 1"
    return text


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_query())
def test_typed_generated_queries_validate_and_round_trip(text: str) -> None:
    query = validate(text, SHOP)
    assert query.task_type is not None
    printed = format_query(query)
    assert validate(printed, SHOP) == query
    assert format_query(validate(printed, SHOP)) == printed
    assert parse(format_query(parse(text))) == parse(text)
