"""RelBench rel-f1: the label engine reproduces the published task tables from PQL alone.

Skipped when /work/shared/data/relbench-f1 is absent. The graph is built from the database with an
inferred spec; for every (date, driverId) row of the train and val tables the engine's label must equal
RelBench's (RelBench lists only drivers with an event in the window, so row presence is not compared,
but every listed row must satisfy ASSUMING where the query has one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from graph_engine.infer import infer_spec
from graph_engine.shards.local_builder import build_local
from graph_engine.shards.reader import Graph
from relfm_core.labels import LabelEngine, backtest_table

RELBENCH = Path("/work/shared/data/relbench-f1")
pytestmark = pytest.mark.skipif(not (RELBENCH / "db").is_dir(), reason="RelBench rel-f1 data not available")

DNF = (
    "PREDICT COUNT(results.* WHERE results.statusId != 1, 0, 30, days) > 0 FOR EACH drivers.driverId "
    "ASSUMING COUNT(results.*, 0, 30, days) > 0"
)
TOP3 = "PREDICT MIN(qualifying.position, 0, 30, days) <= 3 FOR EACH drivers.driverId"
POSITION = "PREDICT AVG(results.positionOrder, 0, 60, days) FOR EACH drivers.driverId"
CIRCUITS = "PREDICT LIST_DISTINCT(results.raceId->races.circuitId, 0, 365, days) RANK TOP 10 FOR EACH drivers.driverId"


@pytest.fixture(scope="module")
def f1_graph(tmp_path_factory: pytest.TempPathFactory) -> Graph:
    out = tmp_path_factory.mktemp("rel-f1") / "graph"
    build_local(infer_spec(RELBENCH / "db", name="rel-f1"), out)
    return Graph.open(out)


def _task(name: str, split: str) -> pd.DataFrame:
    return pd.read_parquet(RELBENCH / "tasks" / name / f"{split}.parquet")


def _pairs(graph: Graph, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    rows = graph.table("drivers").lookup(df["driverId"].to_numpy())
    assert (rows >= 0).all()
    anchors = df["date"].to_numpy().astype("datetime64[ns]")
    return rows, anchors


def reproduce(graph: Graph, query: str, task: str, column: str, split: str) -> dict[str, Any]:
    """Match counts of one task split: {'rows', 'matched', 'null', 'assuming_false'}."""
    engine = LabelEngine(graph, query)
    df = _task(task, split)
    rows, anchors = _pairs(graph, df)
    labels = engine.evaluate(rows, anchors)
    expected = df[column].to_numpy()
    if labels.is_list:
        circuits = graph.table("circuits")
        got = [set(circuits.key_values(np.asarray(x, dtype=np.int64)).tolist()) for x in labels.lists()]
        matched = sum(g == set(np.asarray(e).tolist()) for g, e in zip(got, expected, strict=True))
    else:
        values = np.asarray(labels.values, dtype=np.float64)
        matched = int(
            (labels.valid & np.isclose(values, expected.astype(np.float64), rtol=1e-9, atol=0)).sum()
        )
    assuming = engine.assuming(rows, anchors)
    return {
        "rows": len(df),
        "matched": int(matched),
        "null": int((~labels.valid).sum()),
        "assuming_false": int((~assuming).sum()),
    }


CASES = [
    (DNF, "driver-dnf", "did_not_finish"),
    (TOP3, "driver-top3", "qualifying"),
    (POSITION, "driver-position", "position"),
    (CIRCUITS, "driver-circuit-compete", "circuitId"),
]


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize(("query", "task", "column"), CASES, ids=[c[1] for c in CASES])
def test_relbench_labels_reproduced(f1_graph: Graph, query: str, task: str, column: str, split: str) -> None:
    counts = reproduce(f1_graph, query, task, column, split)
    print(f"{task} {split}: {counts}")
    assert counts["rows"] > 0
    assert counts["matched"] == counts["rows"], counts
    assert counts["assuming_false"] == 0, counts


def backtest_rows(graph: Graph, query: str, task: str, column: str, split: str) -> tuple[int, int, int]:
    """(RelBench rows, backtest rows, rows equal in both: same date, driver and label), with the
    backtest table built at each of the split's dates."""
    engine = LabelEngine(graph, query)
    df = _task(task, split)
    want = {}
    for date, driver, label in zip(df["date"], df["driverId"], df[column], strict=True):
        key = (int(np.datetime64(date, "ns").astype(np.int64)), int(driver))
        want[key] = (
            tuple(sorted(np.asarray(label).tolist()))
            if engine.task_type.value == "link_prediction"
            else float(label)
        )
    got = {}
    circuits = graph.table("circuits")
    for date in np.unique(df["date"].to_numpy().astype("datetime64[ns]")):
        table = backtest_table(engine, int(date.astype(np.int64)))
        for t, driver, label in zip(table["anchor_time"], table["entity"], table["label"], strict=True):
            key = (int(np.datetime64(t, "ns").astype(np.int64)), int(driver))
            if isinstance(label, list):
                got[key] = tuple(sorted(circuits.key_values(np.asarray(label, dtype=np.int64)).tolist()))
            else:
                got[key] = float(label)
    same = sum(1 for k, v in want.items() if k in got and got[k] == v)
    return len(want), len(got), same


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize(("query", "task", "column"), CASES, ids=[c[1] for c in CASES])
def test_relbench_population_reproduced(
    f1_graph: Graph, query: str, task: str, column: str, split: str
) -> None:
    """Backtest tables at RelBench's dates hold exactly RelBench's rows: a null label (no event in the
    window) or a false ASSUMING leaves a driver out, which is RelBench's population rule."""
    want, got, same = backtest_rows(f1_graph, query, task, column, split)
    print(f"{task} {split}: relbench {want} backtest {got} equal {same}")
    assert want == got == same
