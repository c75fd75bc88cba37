"""Malformed and invalid queries: each gives one QueryError line with the expected words and position.

A case names the position by an anchor: the `nth` occurrence of a piece of the query text (or `$END`,
the end of the query), so the expected line:column reads next to the query it belongs to.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
from pql_schemas import SCHEMAS

from graph_engine.errors import RelfmError
from relfm_core.pql import Pos, QueryError, parse, validate

pytestmark = pytest.mark.unit

U = "FOR EACH users.user_id"


class Case(NamedTuple):
    schema: str
    query: str
    message: str
    anchor: str
    nth: int = 1


def position(query: str, anchor: str, nth: int) -> Pos:
    if anchor == "$END":
        body = query.rstrip()
        return Pos(body.count("\n") + 1, len(body) - (body.rfind("\n") + 1) + 1)
    index = -1
    for _ in range(nth):
        index = query.index(anchor, index + 1)
    line = query.count("\n", 0, index) + 1
    return Pos(line, index - (query.rfind("\n", 0, index) + 1) + 1)


CASES: dict[str, Case] = {
    # ------------------------------------------------------------------ syntax
    "empty": Case("shop", "", "syntax error: unexpected end of query", "$END"),
    "blank": Case("shop", "   \n  ", "expected PREDICT", "$END"),
    "predict_typo": Case("shop", f"PREDCT users.age {U}", "did you mean 'PREDICT'?", "PREDCT"),
    "no_for": Case("shop", "PREDICT users.age", "unexpected end of query", "$END"),
    "no_close_paren": Case("shop", f"PREDICT COUNT(orders.*, 0, 30 {U}", "unexpected 'FOR'", "FOR"),
    "no_comma": Case("shop", f"PREDICT COUNT(orders.* 0, 30) {U}", "unexpected '0'", "0, 30"),
    "entity_no_key": Case("shop", "PREDICT users.age FOR EACH users", "expected '.'", "$END"),
    "unterminated_string": Case("shop", f"PREDICT users.country = 'DE {U}", "unterminated string", "'DE"),
    "missing_value": Case("shop", f"PREDICT users.age > {U}", "unexpected 'FOR'", "FOR"),
    "rank_without_top": Case(
        "shop", f"PREDICT LIST_DISTINCT(orders.product_id, 0, 30) RANK 10 {U}", "expected TOP", "10"
    ),
    "empty_in_list": Case("shop", "PREDICT users.age FOR users.user_id IN ()", "unexpected ')'", ")"),
    "bad_character": Case("shop", f"PREDICT users.age # {U}", "unexpected character '#'", "#"),
    "trailing_words": Case("shop", f"PREDICT users.age {U} users", "unexpected 'users'", "users", 3),
    "is_not_without_null": Case("shop", f"PREDICT users.bio IS NOT {U}", "expected NULL", "FOR"),
    "starts_without_with": Case("shop", f"PREDICT users.bio STARTS 'x' {U}", "expected WITH", "'x'"),
    "arrow_without_table": Case(
        "shop", f"PREDICT COUNT(orders.product_id->.category, 0, 7) {U}", "unexpected '.'", ".category"
    ),
    "double_operator": Case("shop", f"PREDICT users.age >> 4 {U}", "unexpected '>'", "> 4"),
    "unbalanced_paren": Case("shop", f"PREDICT (users.age > 4 {U}", "')'", "FOR"),
    "quote_in_string": Case(
        "shop", f"PREDICT users.age {U} WHERE users.bio = 'it's'", "unexpected 's'", "s'"
    ),
    "top_typo": Case("shop", f"PREDICT users.age RANK TOPP 3 {U}", "did you mean 'TOP'?", "TOPP"),
    "assuming_typo": Case(
        "shop",
        f"PREDICT users.age {U} ASSUMNG COUNT(orders.*, 0, 3) > 0",
        "did you mean 'ASSUMING'?",
        "ASSUMNG",
    ),
    "unterminated_name": Case("shop", f"PREDICT `users.age {U}", "unterminated quoted name", "`"),
    "second_line": Case(
        "shop", "PREDICT users.age\nFOR EACH users.user_id\nWHERE users.age >", "unexpected end", "$END"
    ),
    # ------------------------------------------------------------------ checks that need no schema
    "unknown_aggregation": Case(
        "shop",
        f"PREDICT SUMM(orders.amount, 0, 30) {U}",
        "unknown aggregation 'SUMM' at 1:9 — did you mean 'SUM'?",
        "SUMM",
    ),
    "unknown_unit": Case(
        "shop", f"PREDICT COUNT(orders.*, 0, 30, dayz) {U}", "unknown time unit 'dayz'", "dayz"
    ),
    "fractional_bound": Case(
        "shop", f"PREDICT COUNT(orders.*, 0, 1.5, days) {U}", "window bounds are whole numbers", "1.5"
    ),
    "start_after_end": Case(
        "shop", f"PREDICT COUNT(orders.*, 30, 0) {U}", "window start (30) must be before its end (0)", "30"
    ),
    "empty_window": Case("shop", f"PREDICT COUNT(orders.*, 7, 7) {U}", "must be before its end", "7"),
    "infinite_end": Case(
        "shop", f"PREDICT COUNT(orders.*, 0, INF) {U}", "a window end must be a whole number", "INF"
    ),
    "plus_inf_start": Case(
        "shop", f"PREDICT COUNT(orders.*, INF, 0) {U}", "a window start cannot be +INF", "INF"
    ),
    "huge_bound": Case(
        "shop", f"PREDICT COUNT(orders.*, 0, 9999999999999) {U}", "out of range", "9999999999999"
    ),
    "rank_top_zero": Case(
        "shop",
        f"PREDICT LIST_DISTINCT(orders.product_id, 0, 30) RANK TOP 0 {U}",
        "positive whole number",
        "0 FOR",
    ),
    "rank_top_negative": Case(
        "shop",
        f"PREDICT LIST_DISTINCT(orders.product_id, 0, 30) RANK TOP -3 {U}",
        "positive whole number",
        "-3",
    ),
    "rank_top_fraction": Case(
        "shop", f"PREDICT LIST_DISTINCT(orders.product_id, 0, 30) RANK TOP 2.5 {U}", "got 2.5", "2.5"
    ),
    "equals_null": Case("shop", f"PREDICT users.bio = NULL {U}", "write IS NULL", "NULL"),
    "not_equals_null": Case("shop", f"PREDICT users.bio != NULL {U}", "write IS NOT NULL", "NULL"),
    "null_in_list": Case("shop", f"PREDICT users.age IN (1, NULL) {U}", "NULL in an IN list", "NULL"),
    "null_key": Case(
        "shop", "PREDICT users.age FOR users.user_id = NULL", "an entity key cannot be NULL", "NULL"
    ),
    "sum_star": Case(
        "shop", f"PREDICT SUM(orders.*, 0, 30) {U}", "SUM needs a column; '*' only works with COUNT", "*"
    ),
    "count_distinct_star": Case(
        "shop", f"PREDICT COUNT_DISTINCT(orders.*, 0, 30) {U}", "COUNT_DISTINCT needs a column", "*"
    ),
    "star_after_path": Case(
        "shop",
        f"PREDICT COUNT(orders.product_id->products.*, 0, 7) {U}",
        "'*' cannot follow a '->' path",
        "*",
    ),
    "contains_number": Case(
        "shop", f"PREDICT users.bio CONTAINS 3 {U}", "CONTAINS needs a quoted string", "3"
    ),
    "int_overflow": Case(
        "shop",
        "PREDICT users.age FOR users.user_id = 99999999999999999999",
        "out of the 64-bit range",
        "9999",
    ),
    # ------------------------------------------------------------------ names
    "unknown_table": Case(
        "shop",
        f"PREDICT COUNT(ordrs.*, 0, 30) {U}",
        "unknown table 'ordrs' at 1:15 — did you mean 'orders'?",
        "ordrs",
    ),
    "unknown_entity_table": Case(
        "shop", "PREDICT users.age FOR EACH user.user_id", "did you mean 'users'?", "user.user_id"
    ),
    "unknown_column": Case(
        "shop", f"PREDICT AVG(orders.amont, 0, 30) {U}", "did you mean 'orders.amount'?", "amont"
    ),
    "unknown_column_case": Case(
        "f1",
        "PREDICT AVG(results.positionorder, 0, 60) FOR EACH drivers.driverId",
        "did you mean 'results.positionOrder'?",
        "positionorder",
    ),
    "key_not_pk": Case(
        "shop", "PREDICT users.age FOR EACH users.country", "is not the primary key of 'users'", "country"
    ),
    "key_unknown": Case(
        "shop", "PREDICT users.age FOR EACH users.uid", "the primary key is 'users.user_id'", "uid"
    ),
    "entity_without_pk": Case(
        "flights",
        "PREDICT weather.temp FOR EACH weather.origin",
        "table 'weather' has no primary key",
        "weather",
        2,
    ),
    # ------------------------------------------------------------------ links and paths
    "not_linked": Case(
        "flights",
        "PREDICT COUNT(weather.*, 0, 7) FOR EACH planes.tailnum",
        "has no foreign key to the entity table 'planes' at 1:15 — tables that link to 'planes': flights",
        "weather",
    ),
    "several_links": Case(
        "flights",
        "PREDICT COUNT(flights.*, 0, 7, days) FOR EACH airports.faa",
        "several foreign keys (origin, dest) at 1:15 — name one: flights[origin] or flights[dest]",
        "flights",
    ),
    "link_not_fk": Case(
        "flights",
        "PREDICT COUNT(flights[year].*, 0, 7) FOR EACH airports.faa",
        "'flights.year' is not a foreign key",
        "year",
    ),
    "link_to_other_table": Case(
        "flights",
        "PREDICT COUNT(flights[carrier].*, 0, 7) FOR EACH airports.faa",
        "points to 'airlines', not to the entity table 'airports'",
        "carrier",
    ),
    "link_unknown": Case(
        "flights", "PREDICT COUNT(flights[dst].*, 0, 7) FOR EACH airports.faa", "did you mean 'dest'?", "dst"
    ),
    "link_in_where_differs": Case(
        "flights",
        "PREDICT COUNT(flights[dest].* WHERE flights[origin].distance > 100, 0, 7) FOR EACH airports.faa",
        "differs from the aggregation's link 'flights[dest]'",
        "origin",
    ),
    "link_on_static": Case(
        "shop", f"PREDICT users[referrer_id].age {U}", "only names how an aggregated table", "referrer_id"
    ),
    "hop_not_fk": Case(
        "shop",
        f"PREDICT LIST_DISTINCT(orders.status->products.category, 0, 30) CLASSIFY {U}",
        "'orders.status' is not a foreign key, so '->' cannot follow it at 1:30 — foreign keys of 'orders': user_id, product_id",
        "status",
    ),
    "hop_wrong_table": Case(
        "f1",
        "PREDICT LIST_DISTINCT(results.raceId->circuits.circuitId, 0, 365) RANK TOP 3 FOR EACH drivers.driverId",
        "points to 'races', not 'circuits' at 1:39 — write results.raceId->races",
        "circuits",
    ),
    "hop_unknown_table": Case(
        "shop", f"PREDICT COUNT_DISTINCT(orders.product_id->prods.category, 0, 7) {U}", "not 'prods'", "prods"
    ),
    "hop_unknown_column": Case(
        "f1",
        "PREDICT LIST_DISTINCT(results.racId->races.circuitId, 0, 365) RANK TOP 3 FOR EACH drivers.driverId",
        "did you mean 'results.raceId'?",
        "racId",
    ),
    "static_table_aggregated": Case(
        "shop", f"PREDICT COUNT(addresses.*, 0, 30) {U}", "table 'addresses' has no time column", "addresses"
    ),
    "static_target_other_table": Case(
        "shop", f"PREDICT orders.amount > 3 {U}", "aggregate it over a window", "orders"
    ),
    "static_target_parent_hint": Case(
        "shop",
        "PREDICT products.price FOR EACH orders.order_id",
        "reach it through a foreign key: orders.product_id->products.price",
        "products",
    ),
    "static_star": Case("shop", f"PREDICT users.* {U}", "'*' only counts rows", "*"),
    # ------------------------------------------------------------------ aggregation / column fit
    "sum_categorical": Case(
        "f1",
        "PREDICT SUM(results.statusId, 0, 30) FOR EACH drivers.driverId",
        "SUM needs a numerical column, but 'results.statusId' is categorical (int64)",
        "statusId",
    ),
    "avg_string": Case(
        "shop", f"PREDICT AVG(orders.status, 0, 30) {U}", "AVG needs a numerical column", "status"
    ),
    "sum_timestamp": Case("shop", f"PREDICT SUM(orders.created_at, 0, 30) {U}", "is timestamp", "created_at"),
    "min_text": Case(
        "shop", f"PREDICT MIN(orders.note, 0, 30) {U}", "MIN needs a numerical or timestamp column", "note"
    ),
    "list_distinct_numeric": Case(
        "shop",
        f"PREDICT LIST_DISTINCT(orders.amount, 0, 30) RANK TOP 5 {U}",
        "LIST_DISTINCT needs a foreign key or a categorical column",
        "amount",
    ),
    "list_distinct_link_column": Case(
        "shop",
        f"PREDICT LIST_DISTINCT(orders.user_id, 0, 30) RANK TOP 3 {U}",
        "lists the entity itself",
        "user_id",
    ),
    "list_distinct_compared": Case(
        "shop",
        f"PREDICT LIST_DISTINCT(orders.status, 0, 30) = 'a' {U}",
        "is a list and cannot be compared",
        "LIST_DISTINCT",
    ),
    # ------------------------------------------------------------------ task typing
    "link_without_rank": Case(
        "shop", f"PREDICT LIST_DISTINCT(orders.product_id, 0, 30) {U}", "needs RANK TOP k", "LIST_DISTINCT"
    ),
    "categories_without_classify": Case(
        "shop", f"PREDICT LIST_DISTINCT(orders.status, 0, 30) {U}", "needs CLASSIFY", "LIST_DISTINCT"
    ),
    "link_with_classify": Case(
        "shop", f"PREDICT LIST_DISTINCT(orders.product_id, 0, 30) CLASSIFY {U}", "not CLASSIFY", "CLASSIFY"
    ),
    "categories_with_rank": Case(
        "shop", f"PREDICT LIST_DISTINCT(orders.status, 0, 30) RANK TOP 3 {U}", "use CLASSIFY", "RANK"
    ),
    "rank_on_count": Case(
        "shop",
        f"PREDICT COUNT(orders.*, 0, 30) RANK TOP 5 {U}",
        "RANK TOP k needs a LIST_DISTINCT(...) target",
        "RANK",
    ),
    "rank_on_condition": Case(
        "shop", f"PREDICT COUNT(orders.*, 0, 30) > 0 RANK TOP 5 {U}", "this target is a condition", "RANK"
    ),
    "classify_on_avg": Case(
        "shop",
        f"PREDICT AVG(orders.amount, 0, 30) CLASSIFY {U}",
        "CLASSIFY needs a categorical target",
        "CLASSIFY",
    ),
    "classify_on_condition": Case(
        "shop", f"PREDICT users.age > 3 CLASSIFY {U}", "already binary", "CLASSIFY"
    ),
    "classify_on_float": Case(
        "shop", f"PREDICT users.score CLASSIFY {U}", "'users.score' is numerical (float64)", "CLASSIFY"
    ),
    "timestamp_target": Case(
        "shop", f"PREDICT users.signup {U}", "is a timestamp and cannot be predicted", "users.signup"
    ),
    "text_target": Case("shop", f"PREDICT users.bio {U}", "is free text", "users.bio"),
    "id_target": Case("shop", f"PREDICT users.referrer_id {U}", "is an id column", "users.referrer_id"),
    "max_timestamp_target": Case(
        "shop", f"PREDICT MAX(orders.created_at, 0, 30) {U}", "is a timestamp and cannot be predicted", "MAX"
    ),
    "list_column_target": Case("shop", f"PREDICT users.tags {U}", "cannot be a target", "users.tags"),
    # ------------------------------------------------------------------ literals against columns
    "string_for_number": Case(
        "shop", f"PREDICT users.age > '40' {U}", "write the number without quotes: 40", "'40'"
    ),
    "number_for_string": Case(
        "shop",
        f"PREDICT users.country = 3 {U}",
        "is categorical (string) but is compared with the number 3",
        "3",
    ),
    "number_for_bool": Case("shop", f"PREDICT users.active = 1 {U}", "use TRUE or FALSE", "1 FOR"),
    "ordering_bool": Case(
        "shop", f"PREDICT users.active > TRUE {U}", "'>' does not apply to the boolean", "TRUE"
    ),
    "number_for_timestamp": Case(
        "shop",
        f"PREDICT users.signup > 2020 {U}",
        "is a timestamp but is compared with the number 2020",
        "2020",
    ),
    "bad_date": Case(
        "shop", f"PREDICT users.signup > 'yesterday' {U}", "'yesterday' is not a date", "'yesterday'"
    ),
    "bad_month": Case("shop", f"PREDICT users.signup > '2020-13-01' {U}", "is not a date", "'2020"),
    "contains_on_number": Case(
        "shop", f"PREDICT users.age CONTAINS '4' {U}", "CONTAINS needs a string", "'4'"
    ),
    "like_on_timestamp": Case(
        "shop", f"PREDICT users.signup LIKE '2020%' {U}", "LIKE needs a string", "'2020%'"
    ),
    "equals_on_list": Case(
        "shop", f"PREDICT users.tags = 'a' {U}", "does not apply to the list column", "'a'"
    ),
    "compare_embedding": Case("shop", f"PREDICT users.vec = 1 {U}", "cannot be compared", "1 FOR"),
    "in_list_mixed": Case(
        "shop", f"PREDICT users.age IN (1, 'a') {U}", "compared with the string 'a'", "'a'"
    ),
    "count_against_string": Case(
        "shop", f"PREDICT COUNT(orders.*, 0, 30) > 'many' {U}", "is numerical (int64)", "'many'"
    ),
    "key_string_for_int": Case(
        "shop", "PREDICT users.age FOR users.user_id = 'x'", "the key 'users.user_id' is int64", "'x'"
    ),
    "key_float_for_int": Case("shop", "PREDICT users.age FOR users.user_id = 1.5", "the number 1.5", "1.5"),
    "key_mixed_in": Case("shop", "PREDICT users.age FOR users.user_id IN (1, 'a')", "the string 'a'", "'a'"),
    "key_number_for_string": Case(
        "flights",
        "PREDICT planes.seats FOR planes.tailnum = 5",
        "is string but the value is the number 5",
        "5",
    ),
    # ------------------------------------------------------------------ where things may appear
    "target_past_window": Case(
        "shop", f"PREDICT COUNT(orders.*, -7, 0) {U}", "its start must be >= 0, got -7", "-7"
    ),
    "target_minus_inf": Case(
        "shop",
        f"PREDICT COUNT(orders.*, -INF, 0) > 0 {U}",
        "got -INF at 1:25 — negative and -INF windows belong in WHERE",
        "-INF",
    ),
    "filter_future_window": Case(
        "shop",
        f"PREDICT users.age {U} WHERE COUNT(orders.*, 0, 30) > 0",
        "WHERE filters look back: a window end must be <= 0, got 30",
        "30",
    ),
    "filter_window_straddles_anchor": Case(
        "shop", f"PREDICT users.age {U} WHERE COUNT(orders.*, -30, 1) > 0", "got 1", "1)"
    ),
    "assuming_past_window": Case(
        "shop",
        f"PREDICT COUNT(orders.*, 0, 30) > 0 {U} ASSUMING COUNT(orders.*, -30, 0) > 0",
        "ASSUMING is about the future: a window start must be >= 0, got -30",
        "-30",
    ),
    "assuming_static": Case(
        "shop",
        f"PREDICT COUNT(orders.*, 0, 30) > 0 {U} ASSUMING users.age > 3",
        "'users.age' is a static column at 1:68 — move it to WHERE",
        "users.age",
    ),
    "agg_where_other_table": Case(
        "shop",
        f"PREDICT COUNT(orders.* WHERE users.age > 3, 0, 30) {U}",
        "can only use columns of 'orders'",
        "users.age",
    ),
    "nested_aggregation": Case(
        "shop",
        f"PREDICT COUNT(orders.* WHERE COUNT(orders.*, 0, 1) > 0, 0, 30) {U}",
        "aggregations cannot be nested",
        "COUNT",
        2,
    ),
    "bare_number_condition": Case(
        "shop", f"PREDICT users.country {U} WHERE users.age", "'users.age' is not a condition", "users.age"
    ),
    "not_of_count": Case("shop", f"PREDICT NOT COUNT(orders.*, 0, 30) {U}", "is not a condition", "COUNT"),
    "bare_count_in_and": Case(
        "shop", f"PREDICT COUNT(orders.*, 0, 30) AND users.active {U}", "compare it, e.g. COUNT(", "COUNT"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_error_message_and_position(case: Case) -> None:
    with pytest.raises(QueryError) as info:
        validate(case.query, SCHEMAS[case.schema])
    err = info.value
    message = str(err)
    expected_pos = position(case.query, case.anchor, case.nth)
    assert case.message in message
    assert err.pos == expected_pos, message
    assert f" at {expected_pos.line}:{expected_pos.column}" in message
    assert "\n" not in message
    assert isinstance(err, RelfmError) and err.exit_code == 2


def test_there_are_enough_error_cases() -> None:
    assert len(CASES) >= 50


def test_syntax_errors_come_from_parse_too() -> None:
    with pytest.raises(QueryError, match="syntax error"):
        parse("PREDICT")


def test_non_text_query_is_a_query_error() -> None:
    with pytest.raises(QueryError, match="must be text"):
        parse(42)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="expected query text"):
        validate(42, SCHEMAS["shop"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "query",
    [
        f"PREDICT {'NOT ' * 300}users.active {U}",
        f"PREDICT {'(users.active AND ' * 300}users.active{')' * 300} {U}",
    ],
    ids=["not", "and"],
)
def test_deep_nesting_is_a_query_error(query: str) -> None:
    with pytest.raises(QueryError, match="nests too deeply"):
        validate(query, SCHEMAS["shop"])


def test_moderate_nesting_and_redundant_parentheses_are_fine() -> None:
    validate(f"PREDICT {'(users.active AND ' * 150}users.active{')' * 150} {U}", SCHEMAS["shop"])
    validate(f"PREDICT {'(' * 5000}users.age > 3{')' * 5000} {U}", SCHEMAS["shop"])
