"""Label semantics on a graph small enough to check by hand (see labels_shop)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from labels_shop import build_shop

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from relfm_core.labels import LabelEngine, Window
from relfm_core.labels.aggregate import ListResult
from relfm_core.labels.values import Vec
from relfm_core.pql import Aggregation, QueryError, TaskType, TimeUnit, iter_aggregations

pytestmark = pytest.mark.unit

A, B, C, D = 0, 1, 2, 3  # user rows (keys sorted: a, b, c, d)


def T(s: str) -> np.datetime64:
    return np.datetime64(s, "ns")


def ns(s: str) -> int:
    return int(T(s).astype(np.int64))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Graph:
    return build_shop(tmp_path_factory.mktemp("shop"))


def one(graph: Graph, query: str, row: int, anchor: str) -> tuple[float, bool]:
    labels = LabelEngine(graph, query).evaluate(np.array([row]), np.array([T(anchor)]))
    return float(labels.values[0]), bool(labels.valid[0])


def q(target: str, rest: str = "") -> str:
    return f"PREDICT {target} FOR EACH users.user_id {rest}".strip()


def test_first_last_break_ties_by_row_id_and_skip_nulls(shop: Graph) -> None:
    # (Jan 1, Jan 31]: pk 3 (20) and pk 7 (10) both at Jan 10, pk 9 (null) at Jan 20.
    assert one(shop, q("FIRST(orders.amount, 0, 30, days)"), A, "2021-01-01") == (20.0, True)
    assert one(shop, q("LAST(orders.amount, 0, 30, days)"), A, "2021-01-01") == (10.0, True)


def test_window_excludes_its_start_and_includes_its_end(shop: Graph) -> None:
    count = q("COUNT(orders.*, 0, 30, days)")
    assert one(shop, count, A, "2021-01-10") == (1.0, True)  # the Jan 10 rows sit on the start
    assert one(shop, count, A, "2020-12-11") == (2.0, True)  # ... and on the end here


def test_empty_windows_and_all_null_windows(shop: Graph) -> None:
    assert one(shop, q("COUNT(orders.*, 0, 30, days)"), A, "2021-06-01") == (0.0, True)
    assert one(shop, q("SUM(orders.amount, 0, 30, days)"), A, "2021-06-01") == (0.0, True)
    assert one(shop, q("AVG(orders.amount, 0, 30, days)"), A, "2021-06-01")[1] is False
    assert one(shop, q("MAX(orders.amount, 0, 30, days)"), A, "2021-06-01")[1] is False
    # (Jan 15, Jan 25] holds only pk 9, whose amount is null.
    assert one(shop, q("COUNT(orders.*, 0, 10, days)"), A, "2021-01-15") == (1.0, True)
    assert one(shop, q("COUNT(orders.amount, 0, 10, days)"), A, "2021-01-15") == (0.0, True)
    assert one(shop, q("SUM(orders.amount, 0, 10, days)"), A, "2021-01-15") == (0.0, True)
    assert one(shop, q("AVG(orders.amount, 0, 10, days)"), A, "2021-01-15")[1] is False
    lab = LabelEngine(shop, q("LIST_DISTINCT(orders.status, 0, 30, days) CLASSIFY"))
    assert not lab.evaluate(np.array([A]), np.array([T("2021-06-01")])).valid[0]


def test_calendar_months_clamp_to_the_month_end(shop: Graph) -> None:
    month = q("COUNT(orders.*, 0, 1, months)")
    assert one(shop, month, A, "2021-01-31") == (1.0, True)  # up to Feb 28 00:00: pk 5 is in
    assert one(shop, month, A, "2021-01-30") == (1.0, True)  # Feb 30 clamps to Feb 28
    assert one(shop, month, A, "2021-01-27") == (0.0, True)  # (Jan 27, Feb 27]


def test_text_operators_on_text_and_categorical_columns(shop: Graph) -> None:
    assert one(shop, q("FIRST(orders.note, 0, 30, days) LIKE 'hel%'"), A, "2021-01-01") == (1.0, True)
    assert one(shop, q("FIRST(orders.note, 0, 30, days) CONTAINS 'world'"), A, "2021-01-01") == (0.0, True)
    assert one(shop, q("FIRST(orders.status, 0, 30, days) STARTS WITH 'can'"), A, "2021-01-01") == (1.0, True)
    assert one(shop, q("COUNT(orders.* WHERE orders.note CONTAINS 'hel', 0, 90, days)"), A, "2021-01-01") == (
        2.0,
        True,
    )
    assert one(
        shop, q("COUNT(orders.* WHERE orders.note NOT LIKE 'h_l%', 0, 90, days)"), A, "2021-01-01"
    ) == (
        1.0,
        True,
    )  # 'bye'; the null note is unknown, not counted


def test_three_valued_logic(shop: Graph) -> None:
    avg_null = "AVG(orders.amount, 0, 10, days)"  # null at Jan 15 for a
    assert one(shop, q(f"NOT ({avg_null} > 5)"), A, "2021-01-15")[1] is False
    assert one(shop, q(f"{avg_null} > 5 OR COUNT(orders.*, 0, 10, days) > 0"), A, "2021-01-15") == (1.0, True)
    assert one(shop, q(f"{avg_null} > 5 AND COUNT(orders.*, 0, 10, days) = 0"), A, "2021-01-15") == (
        0.0,
        True,
    )
    assert one(shop, q(f"{avg_null} IS NULL"), A, "2021-01-15") == (1.0, True)


def test_entity_rows(shop: Graph) -> None:
    each = LabelEngine(shop, q("COUNT(orders.*, 0, 30, days)"))
    assert each.entity_rows(ns("2021-01-20")).tolist() == [A, D]  # b signs up later, c's signup unknown
    listed = LabelEngine(shop, "PREDICT COUNT(orders.*, 0, 30, days) FOR users.user_id IN ('d', 'a', 'd')")
    assert listed.entity_rows().tolist() == [D, A]
    active = LabelEngine(shop, q("COUNT(orders.*, 0, 30, days)", "WHERE COUNT(orders.*, -INF, 0, days) > 0"))
    assert active.entity_rows(ns("2021-03-02")).tolist() == [A, B]
    static = LabelEngine(shop, q("COUNT(orders.*, 0, 30, days)", "WHERE users.country = 'DE'"))
    assert static.entity_rows().tolist() == [A, D]


def test_unknown_entity_key_is_a_one_line_error(shop: Graph) -> None:
    engine = LabelEngine(shop, "PREDICT COUNT(orders.*, 0, 30, days) FOR users.user_id = 'q'")
    with pytest.raises(QueryError, match=r"unknown key 'q' in 'users\.user_id'") as e:
        engine.entity_rows()
    assert "\n" not in str(e.value)


def test_lagged_windows_tile_the_past(shop: Graph) -> None:
    engine = LabelEngine(shop, q("COUNT(orders.*, 0, 30, days)"))
    values, valid, activity = engine.lagged(np.array([A]), np.array([T("2021-03-01")]), 3)
    assert values.tolist() == [[1.0, 3.0, 0.0]]  # (Jan 30, Mar 1], (Dec 31, Jan 30], (Dec 1, Dec 31]
    assert valid.all() and activity.tolist() == [[1, 3, 0]]
    shifted = LabelEngine(shop, q("AVG(orders.amount, 10, 30, days)"))
    rows = np.array([A, A, B])
    anchors = np.array([T("2021-03-01"), T("2021-02-10"), T("2021-04-01")])
    values, valid, _ = shifted.lagged(rows, anchors, 2)
    for k, back in enumerate((30, 50)):  # t - end, t - end - (end - start)
        lab = shifted.evaluate(rows, anchors - np.timedelta64(back, "D"))
        assert valid[:, k].tolist() == lab.valid.tolist()
        assert np.allclose(values[:, k][lab.valid], np.asarray(lab.values)[lab.valid])


def test_anchors_and_windows(shop: Graph) -> None:
    engine = LabelEngine(shop, q("COUNT(orders.*, 0, 30, days)"))
    assert engine.window == Window(0, 30, TimeUnit.DAYS)
    assert engine.latest_complete_anchor() == ns("2021-01-31")  # last event Mar 2, minus 30 days
    assert engine.step_back(ns("2021-03-01"), 2) == ns("2020-12-31")
    months = LabelEngine(
        shop, q("COUNT(orders.*, 0, 1, months)", "ASSUMING COUNT(orders.*, 0, 2, months) > 0")
    )
    assert months.horizon == Window(0, 2, TimeUnit.MONTHS)
    assert months.latest_complete_anchor() == ns("2021-01-02")  # ASSUMING's window must be complete too
    assert months.step_back(ns("2021-03-31"), 1) == ns("2021-02-28")


def test_activity_counts_rows_whatever_the_where(shop: Graph) -> None:
    engine = LabelEngine(shop, q("COUNT(orders.* WHERE orders.status = 'done', 0, 30, days)"))
    rows, anchors = np.array([A, B]), np.array([T("2021-01-01"), T("2021-02-15")])
    assert engine.evaluate(rows, anchors).values.tolist() == [2.0, 0.0]  # pk 7 and pk 9 are done
    assert engine.activity(rows, anchors).tolist() == [3, 1]


def test_orphans_and_unknown_times_are_never_counted(shop: Graph) -> None:
    assert one(shop, q("COUNT(orders.*, 0, 1000, days)"), B, "2020-01-01") == (1.0, True)  # not pk 2


def test_static_target(shop: Graph) -> None:
    engine = LabelEngine(shop, q("users.age"))
    assert engine.task_type is TaskType.REGRESSION and engine.window is None
    rows = np.array([A, B, C, D])
    lab = engine.evaluate(rows, np.full(4, T("2021-01-01")))
    assert lab.valid.tolist() == [True, False, True, True]
    assert np.asarray(lab.values)[lab.valid].tolist() == [30.0, 50.0, 41.5]
    values, _, activity = engine.lagged(rows, np.full(4, T("2021-01-01")), 2)
    assert values[:, 1].tolist() == [30.0, 0.0, 50.0, 41.5] and not activity.any()


def test_multiclass_codes_index_sorted_classes(shop: Graph) -> None:
    engine = LabelEngine(shop, q("FIRST(orders.status, 0, 30, days)"))
    lab = engine.evaluate(np.array([A, D]), np.array([T("2021-01-01"), T("2021-01-01")]))
    assert lab.classes is not None and list(lab.classes) == ["cancelled", "done", "returned"]
    assert lab.values.tolist() == [0, -1] and lab.valid.tolist() == [True, False]
    qty = LabelEngine(shop, q("LAST(orders.qty, 0, 30, days) CLASSIFY"))
    lab = qty.evaluate(np.array([A]), np.array([T("2021-01-01")]))
    assert lab.classes is not None and lab.classes.tolist() == [1.0, 2.0, 3.0]
    assert lab.values.tolist() == [2]  # pk 9 (qty 3) is the latest row: LAST does not skip it


def test_list_labels(shop: Graph) -> None:
    engine = LabelEngine(shop, q("LIST_DISTINCT(orders.status, 0, 90, days) CLASSIFY"))
    assert engine.task_type is TaskType.MULTILABEL
    lab = engine.evaluate(np.array([A, B, C]), np.full(3, T("2021-01-01")))
    assert lab.lists() == [[0, 1], [2], []] and lab.valid.tolist() == [True, True, False]
    sub = lab.subset(np.array([1, 0]))
    assert sub.lists() == [[2], [0, 1]] and sub.values.tolist() == [1.0, 2.0]


def test_bad_inputs_are_one_line_errors(shop: Graph) -> None:
    engine = LabelEngine(shop, q("COUNT(orders.*, 0, 30, days)"))
    with pytest.raises(RelfmError, match="one anchor per entity row"):
        engine.evaluate(np.array([0, 1]), np.array([T("2021-01-01")]))
    with pytest.raises(RelfmError, match="out of range"):
        engine.evaluate(np.array([7]), np.array([T("2021-01-01")]))
    with pytest.raises(RelfmError, match="NaT"):
        engine.evaluate(np.array([0]), np.array([np.datetime64("NaT", "ns")]))
    with pytest.raises(RelfmError, match="datetime64 or int64"):
        engine.evaluate(np.array([0]), np.array([1.5]))
    with pytest.raises(QueryError, match="id column"):
        LabelEngine(shop, q("COUNT(orders.*, 0, 30, days)", "WHERE users.ext_id = 'x1'"))
    with pytest.raises(QueryError, match="unknown table"):
        LabelEngine(shop, q("COUNT(ordrs.*, 0, 30, days)"))


def test_one_batched_call_equals_pair_by_pair(shop: Graph) -> None:
    engine = LabelEngine(shop, q("SUM(orders.amount WHERE orders.status != 'cancelled', 0, 45, days)"))
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 4, 50)
    anchors = T("2020-12-01") + rng.integers(0, 120, 50).astype("timedelta64[D]")
    batch = engine.evaluate(rows, anchors).values.tolist()
    single = [engine.evaluate(rows[i : i + 1], anchors[i : i + 1]).values[0] for i in range(50)]
    assert batch == single


@pytest.mark.parametrize(
    "target",
    [
        "COUNT(orders.* WHERE orders.status = 'done', 0, 60, days)",
        "SUM(orders.amount WHERE orders.qty > 1, 0, 60, days)",
        "AVG(orders.amount, 0, 60, days)",
        "MIN(orders.amount, 0, 60, days)",
        "MAX(orders.ts, 0, 60, days) > '2021-01-15'",
        "FIRST(orders.note, 0, 60, days) CONTAINS 'h'",
        "LAST(orders.status WHERE orders.amount > 5, 0, 60, days)",
        "COUNT_DISTINCT(orders.status, 0, 60, days)",
        "LIST_DISTINCT(orders.status WHERE orders.note IS NOT NULL, 0, 60, days) CLASSIFY",
    ],
)
def test_row_order_and_csr_order_reads_agree(shop: Graph, target: str) -> None:
    """Reductions read rows through the CSR's child ids until the table is laid out in CSR order."""
    rows = np.array([A, A, B, C, D, A])
    anchors = np.array(
        [T(d) for d in ("2021-01-01", "2021-01-09", "2021-02-15", "2021-01-01", "2021-01-05", "2021-02-01")]
    )
    engine = LabelEngine(shop, q(target))
    prepared = [engine._prepare(agg) for agg in iter_aggregations(engine.query.target)]
    for p in prepared:
        p.touched = -(10**12)  # never lay out: read rows through the child ids
    first = engine.evaluate(rows, anchors)
    assert not any(p.laid_out for p in prepared)
    for p in prepared:
        p.laid_out = True
    second = engine.evaluate(rows, anchors)
    assert first.valid.tolist() == second.valid.tolist()
    assert np.asarray(first.values).tolist() == np.asarray(second.values).tolist()
    if first.is_list:
        assert first.lists() == second.lists()


def test_aggregate_over_past_windows_shares_the_per_row_work(shop: Graph) -> None:
    engine = LabelEngine(shop, q("COUNT(orders.* WHERE orders.status = 'done', 0, 30, days)"))
    target = engine.query.target
    assert isinstance(target, Aggregation)
    rows = np.array([B, A, D, A])
    anchors = np.array([T(d) for d in ("2021-03-10", "2021-02-01", "2021-02-01", "2021-03-30")])
    past = engine.aggregate(dataclasses.replace(target, start=-30, end=0), rows, anchors)
    assert isinstance(past, Vec)
    shifted = engine.evaluate(rows, anchors - np.timedelta64(30, "D"))
    assert past.value.tolist() == shifted.values.tolist() == [0.0, 2.0, 0.0, 0.0]  # Feb 28 is on lo
    engine.lagged(rows, anchors, 2)
    assert len(engine._prepared) == 1  # one set of per-row arrays for every window
    lists = LabelEngine(shop, q("LIST_DISTINCT(orders.status, 0, 30, days) CLASSIFY"))
    agg = lists.query.target
    assert isinstance(agg, Aggregation)
    out = lists.aggregate(dataclasses.replace(agg, start=-60, end=0), rows, anchors)
    assert isinstance(out, ListResult)
    got = [out.items[out.ptr[i] : out.ptr[i + 1]].tolist() for i in range(len(rows))]
    assert got == [[2], [0, 1], [], [1]]  # returned / cancelled, done / - / done
