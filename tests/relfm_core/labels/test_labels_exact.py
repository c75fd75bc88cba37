"""The label engine agrees exactly with an independent DuckDB implementation on random queries.

10 random graphs x 20 random queries (200 in all). Per query: the target for every entity at 3 random
anchors, the ASSUMING condition, the entity set at an anchor (FOR / WHERE / entity time), and the
activity count. Floats must agree to 1e-9 relative, null-ness exactly. `test_random_queries_cover`
checks that the 200 queries exercise every aggregation, operator, unit and query shape.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from labels_duckdb import DuckRef
from labels_graphs import make_data, make_graph, random_anchors, write_spec
from labels_querygen import QueryGen

from graph_engine.infer import schema_from_spec
from graph_engine.schema import GraphSchema
from relfm_core.labels import LabelEngine, Labels
from relfm_core.pql import (
    AggFunc,
    Aggregation,
    BoolOp,
    ColumnRef,
    Comparison,
    CompOp,
    EntityMode,
    Not,
    Query,
    TaskType,
    TimeUnit,
    iter_nodes,
    query_aggregations,
    validate,
)

GRAPHS = 10
QUERIES_PER_GRAPH = 20


def queries_for(seed: int) -> list[str]:
    data = make_data(seed)
    gen = QueryGen(np.random.default_rng(1_000 + seed), data)
    return [gen.query() for _ in range(QUERIES_PER_GRAPH)]


def _same_float(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _scalar_matches(engine: LabelEngine, labels: Labels, i: int, y: Any) -> bool:
    tt = engine.task_type
    if tt is TaskType.MULTICLASS:
        assert labels.classes is not None
        got = labels.classes[int(labels.values[i])]
        return bool(got == y) if not isinstance(y, float) else _same_float(float(got), y)
    return _same_float(float(labels.values[i]), float(y))


def _list_values(engine: LabelEngine, labels: Labels, i: int) -> list[Any]:
    assert labels.ptr is not None and labels.items is not None
    items = labels.items[labels.ptr[i] : labels.ptr[i + 1]]
    if engine.query.link_target_table is not None:
        return list(engine.graph.table(engine.query.link_target_table).key_values(items).tolist())
    assert labels.classes is not None
    return [labels.classes[j] for j in items.tolist()]


def check_target(engine: LabelEngine, labels: Labels, expected: list[Any], text: str) -> None:
    for i, y in enumerate(expected):
        where = f"pair {i} of {text!r}"
        if y is None:
            assert not labels.valid[i], f"{where}: DuckDB says NULL, engine {labels.values[i]}"
            continue
        assert labels.valid[i], f"{where}: DuckDB says {y!r}, engine says null"
        if labels.is_list:
            got = _list_values(engine, labels, i)
            assert sorted(map(str, got)) == sorted(map(str, y)), f"{where}: {got} != {y}"
        else:
            assert _scalar_matches(engine, labels, i, y), f"{where}: engine {labels.values[i]} != {y!r}"


def check_query(rg: Any, ref: DuckRef, text: str, rng: np.random.Generator, csr_order: bool) -> None:
    engine = LabelEngine(rg.graph, text)
    for agg in query_aggregations(engine.query):  # both ways of reading rows (see aggregate.Prepared)
        prepared = engine._prepare(agg)
        if csr_order:
            prepared.laid_out = True
        else:
            prepared.touched = -(10**12)
    users = rg.graph.table("users")
    n = users.num_rows
    rows = np.tile(np.arange(n, dtype=np.int64), 3)
    anchors = np.repeat(random_anchors(rng, 3), n)
    keys = list(users.key_values(rows).tolist())
    labels = engine.evaluate(rows, anchors)
    check_target(engine, labels, ref.run(engine.query, keys, anchors, "target"), text)

    if engine.query.assuming is not None:
        got = engine.assuming(rows, anchors)
        want = [y is True for y in ref.run(engine.query, keys, anchors, "assuming")]
        assert got.tolist() == want, f"ASSUMING of {text!r}"

    if engine.window is not None:
        act = engine.activity(rows, anchors)
        want_act = ref.run(engine.query, keys, anchors, "activity")
        assert act.tolist() == want_act, f"activity of {text!r}"

    anchor = random_anchors(rng, 1)[0]
    got_rows = engine.entity_rows(int(anchor.astype(np.int64)))
    visible = ref.visible_entities(anchor)
    spec = engine.query.entity
    if spec.mode is not EntityMode.EACH:
        asked = {v.value for v in spec.values}
        visible = [k for k in visible if k in asked]
    if engine.query.entity_filter is not None and visible:
        keep = ref.run(engine.query, visible, np.full(len(visible), anchor), "filter")
        visible = [k for k, y in zip(visible, keep, strict=True) if y is True]
    got_keys = sorted(map(str, users.key_values(got_rows).tolist()))
    assert got_keys == sorted(map(str, visible)), f"entity rows of {text!r} at {anchor}"


@pytest.mark.parametrize("seed", range(GRAPHS))
def test_engine_matches_duckdb(seed: int, tmp_path: Path) -> None:
    rg = make_graph(seed, tmp_path)
    ref = DuckRef(rg.data.tables, rg.graph.schema)
    rng = np.random.default_rng(seed)
    for i, text in enumerate(queries_for(seed)):
        check_query(rg, ref, text, rng, csr_order=i % 2 == 1)


def _features(query: Query) -> set[str]:
    out: set[str] = {f"task:{query.task_type}", f"entity:{query.entity.mode}"}
    if query.entity_filter is not None:
        out.add("entity_filter")
    if query.assuming is not None:
        out.add("assuming")
    parts = [("target", query.target), ("filter", query.entity_filter), ("assuming", query.assuming)]
    for scope, root in parts:
        if root is None:
            continue
        if isinstance(root, ColumnRef):
            out.add("static_target")
        for node in iter_nodes(root):
            if isinstance(node, Aggregation):
                out |= {f"agg:{node.func}", f"unit:{node.unit}"}
                if node.where is not None:
                    out.add("agg_where")
                    out |= {f"where_op:{n.op}" for n in iter_nodes(node.where) if isinstance(n, Comparison)}
                if node.path:
                    out.add("agg_path")
                if isinstance(node.start, float):
                    out.add(f"{scope}:-INF")
                if node.table == "visits":
                    out.add("named_link")
                if node.table == "users":
                    out.add("self_link")
            elif isinstance(node, Comparison):
                out.add(f"op:{node.op}")
                if isinstance(node.lhs, Aggregation):
                    out.add(f"{scope}:compare_aggregate")
                else:
                    out.add(f"{scope}:compare_static")
            elif isinstance(node, BoolOp):
                out.add(f"{scope}:{node.op}")
            elif isinstance(node, Not):
                out.add(f"{scope}:NOT")
            elif isinstance(node, ColumnRef) and node.path:
                out.add("ref_path")
    return out


def test_random_queries_cover(tmp_path: Path) -> None:
    """The 200 queries of the exactness test cover every feature (all validate, too)."""
    seen: Counter[str] = Counter()
    schemas: dict[tuple[bool, bool], GraphSchema] = {}
    total = 0
    for seed in range(GRAPHS):
        data = make_data(seed)
        shape = (data.users_time, data.string_users)
        seen.update({f"users_time:{data.users_time}", f"string_keys:{data.string_users}"})
        if shape not in schemas:
            schemas[shape] = schema_from_spec(write_spec(data, tmp_path / str(seed)))
        for text in queries_for(seed):
            seen.update(_features(validate(text, schemas[shape])))
            total += 1
    assert total >= 200
    needed = {f"agg:{f}" for f in AggFunc}
    needed |= {"agg_where", "agg_path", "filter:-INF", "named_link", "self_link", "ref_path", "static_target"}
    needed |= {f"unit:{u}" for u in TimeUnit}
    needed |= {f"op:{o}" for o in CompOp} | {f"where_op:{o}" for o in CompOp}
    needed |= {f"{scope}:{b}" for scope in ("target", "filter", "assuming") for b in ("AND", "OR", "NOT")}
    needed |= {"target:compare_aggregate", "target:compare_static", "filter:compare_aggregate"}
    needed |= {"filter:compare_static", "assuming:compare_aggregate"}
    needed |= {f"task:{t}" for t in TaskType} | {f"entity:{m}" for m in EntityMode}
    needed |= {"entity_filter", "assuming", "users_time:True", "users_time:False"}
    needed |= {"string_keys:True", "string_keys:False"}
    missing = sorted(needed - set(seen))
    assert not missing, f"random queries never exercise {missing}"
