"""Cells to model tensors: every semantic type, nulls, outliers, constant columns, a category seen once,
empty lists; tensors are finite, deterministic, and laid out as the model expects."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from graph_engine.cache import open_or_build
from graph_engine.sampler import NO_TIME, SamplerConfig, TemporalSampler
from graph_engine.shards.reader import Graph
from graph_engine.spec import GraphSpec
from relfm_core.features import (
    DAY_NS,
    NUM_CELL_FEATS,
    NUM_NODE_FEATS,
    STYPE_INDEX,
    ColumnStats,
    FeatureConfig,
    GraphFeatures,
    _time_features,
)
from relfm_core.text_encoder import DIM, TextEncoder, hashed_embedding

pytestmark = pytest.mark.unit

N = 10
SCORE = [1.0, 2.0, 3.0, None, 2.5, 1e15, -1e15, 1.5, 2.2, 2.8]  # a null and two wild outliers
PLAN = ["basic"] * 5 + ["pro"] * 3 + [None, "enterprise"]  # a null and a category seen once
BIO = ["likes tea", "", None, "hello there", "tea and cake", "x", "y", "z", "tea", "cake"]
TAGS = [["a"], [], None, ["a", "b"], ["b"], ["c"], ["a"], ["b"], ["a", "c"], ["c"]]
ANCHOR = int(np.datetime64("2023-01-01T00:00:00", "ns").astype(np.int64))


def _day(i: int) -> dt.datetime:
    return dt.datetime(2022, 1, 1) + dt.timedelta(days=i)


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Graph:
    folder = tmp_path_factory.mktemp("odd")
    customers = pa.table(
        {
            "customer_id": pa.array(range(N), pa.int64()),
            "joined": pa.array([_day(i) for i in range(N)], pa.timestamp("us")),
            "score": pa.array(SCORE, pa.float64()),
            "flat": pa.array([7.0] * N),  # constant: no spread at all
            "plan": pa.array(PLAN, pa.string()),
            "bio": pa.array(BIO, pa.string()),
            "tags": pa.array(TAGS, pa.list_(pa.string())),
            "born": pa.array([_day(-9000 + 400 * i) for i in range(N - 1)] + [None], pa.timestamp("us")),
            "vec": pa.array([[float(i), 1.0, -1.0, 0.5] for i in range(N)], pa.list_(pa.float32(), 4)),
        }
    )
    purchases = pa.table(
        {
            "purchase_id": pa.array(range(3 * N), pa.int64()),
            "customer_id": pa.array([i % N for i in range(3 * N)], pa.int64()),
            "ts": pa.array([_day(20 + 10 * i) for i in range(3 * N)], pa.timestamp("us")),
            "amount": pa.array([float(i) for i in range(3 * N)]),
        }
    )
    pq.write_table(customers, folder / "customers.parquet")
    pq.write_table(purchases, folder / "purchases.parquet")
    spec = GraphSpec.from_dict(
        {
            "name": "odd",
            "tables": {
                "customers": {
                    "source": "customers.parquet",
                    "primary_key": "customer_id",
                    "time_column": "joined",
                    "foreign_keys": {},
                    "semantic_types": {
                        "customer_id": "id",
                        "joined": "timestamp",
                        "score": "numerical",
                        "flat": "numerical",
                        "plan": "categorical",
                        "bio": "text",
                        "tags": "multicategorical",
                        "born": "timestamp",
                        "vec": "embedding",
                    },
                },
                "purchases": {
                    "source": "purchases.parquet",
                    "primary_key": "purchase_id",
                    "time_column": "ts",
                    "foreign_keys": {"customer_id": "customers"},
                    "semantic_types": {
                        "purchase_id": "id",
                        "customer_id": "id",
                        "ts": "timestamp",
                        "amount": "numerical",
                    },
                },
            },
        },
        base_dir=folder,
    )
    return open_or_build(spec, cache_dir=folder / "graphs")


@pytest.fixture(scope="module")
def odd_features(odd: Graph, text: TextEncoder) -> GraphFeatures:
    return GraphFeatures(odd, text)


@pytest.fixture(scope="module")
def seeds(odd: Graph, odd_features: GraphFeatures) -> dict[str, torch.Tensor]:
    """Every customer as a seed (row i → batch position i, seed node first), after all their data."""
    sub = TemporalSampler(odd, SamplerConfig(fanouts=(4,), max_nodes=8)).sample(
        "customers", np.arange(N), np.full(N, ANCHOR, dtype=np.int64)
    )
    return odd_features.tensorize(sub, 8)


def _cells(f: GraphFeatures, t: dict[str, torch.Tensor], column: str) -> tuple[np.ndarray, np.ndarray]:
    """(cell features [N, 8], value index [N]) of one customers column, seed nodes only."""
    cols = f.tables[f.table_index["customers"]].columns
    ci = next(i for i, c in enumerate(cols) if c.name == column)
    assert (t["cell_col"][:, 0, ci] == cols[ci].text_index).all()
    return t["cell_num"][:, 0, ci].numpy(), t["cell_val"][:, 0, ci].numpy()


def _stats(f: GraphFeatures, column: str) -> ColumnStats:
    return next(c for c in f.tables[f.table_index["customers"]].columns if c.name == column)


def test_tensors_are_finite_and_shaped_for_the_model(
    odd_features: GraphFeatures, seeds: dict[str, torch.Tensor]
) -> None:
    b, n = seeds["node_mask"].shape
    c = seeds["cell_col"].shape[2]
    assert (b, n) == (N, 1 + 3)  # the customer and its 3 purchases (all before ANCHOR; fan-out 4)
    assert seeds["cell_num"].shape == (b, n, c, NUM_CELL_FEATS)
    assert seeds["node_feats"].shape == (b, n, NUM_NODE_FEATS)
    assert seeds["name_emb"].shape[1] == seeds["value_emb"].shape[1] == DIM
    for k, v in seeds.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), k
    assert seeds["node_mask"][:, 0].all()  # the seed is always there, first
    assert (seeds["node_hop"][:, 0] == 0).all()
    assert int(seeds["cell_val"].max()) < len(seeds["value_emb"])
    assert int(seeds["cell_col"].max()) < len(seeds["name_emb"])
    # padding carries nothing
    pad = ~seeds["node_mask"]
    assert (seeds["cell_col"][pad] == 0).all() and (seeds["cell_num"][pad] == 0).all()


def test_nulls_are_flagged_and_carry_no_value(
    odd_features: GraphFeatures, seeds: dict[str, torch.Tensor]
) -> None:
    for column, row in (("score", 3), ("plan", 8), ("bio", 2), ("tags", 2), ("born", N - 1)):
        f, v = _cells(odd_features, seeds, column)
        assert f[row, 1] == 1.0, column  # the missing flag
        assert f[row, 0] == 0.0, column
        assert v[row] == 0, column  # index 0 = no value vector
        others = np.delete(np.arange(N), row)
        assert (f[others, 1] == 0.0).all(), column


def test_numbers_use_robust_bounded_features(
    odd_features: GraphFeatures, seeds: dict[str, torch.Tensor]
) -> None:
    st = _stats(odd_features, "score")
    assert np.isfinite(st.median) and 0 < st.scale < 10  # the outliers do not blow up the scale
    f, _ = _cells(odd_features, seeds, "score")
    assert np.isfinite(f).all()
    assert np.abs(f[:, 0]).max() < 50  # asinh of the robust z-score: 1e15 stays a modest number
    assert f[5, 0] > f[2, 0] > f[0, 0] > f[6, 0]  # order is kept
    assert (f[:, 2] >= -0.5).all() and (f[:, 2] <= 0.5).all()  # the quantile feature
    flat = _stats(odd_features, "flat")
    assert flat.scale == 1.0
    ff, _ = _cells(odd_features, seeds, "flat")
    assert (ff[:, 0] == 0.0).all()


def test_a_category_seen_once_gets_its_own_value_vector(
    odd_features: GraphFeatures, seeds: dict[str, torch.Tensor]
) -> None:
    st = _stats(odd_features, "plan")
    f, v = _cells(odd_features, seeds, "plan")
    emb = seeds["value_emb"].numpy()
    basic, pro, once = v[0], v[5], v[9]
    assert len({basic, pro, once}) == 3 and min(basic, pro, once) > 0
    assert np.abs(emb[once]).sum() > 0
    assert not np.allclose(emb[once], emb[basic])
    assert np.allclose(emb[once], hashed_embedding(["plan is enterprise"])[0])  # read through its name
    assert f[9, 0] < f[5, 0] < f[0, 0]  # frequency: once < three times < five times
    assert st.log_freq is not None and len(st.log_freq) == 3


def test_lists_texts_embeddings_and_timestamps(
    odd_features: GraphFeatures, seeds: dict[str, torch.Tensor]
) -> None:
    emb = seeds["value_emb"].numpy()
    f, v = _cells(odd_features, seeds, "tags")
    assert f[1, 0] == 0.0 and f[1, 1] == 0.0  # an empty list is a value (no tags), not a null
    assert f[3, 0] == pytest.approx(np.log1p(2))
    assert np.abs(emb[v[3]]).sum() > 0
    f, v = _cells(odd_features, seeds, "bio")
    assert v[1] > 0 and v[0] != v[1]  # the empty string is a value too
    f, v = _cells(odd_features, seeds, "vec")
    assert (v > 0).all() and len(set(v.tolist())) == N
    assert not np.allclose(emb[v[0]], emb[v[1]])
    f, _ = _cells(odd_features, seeds, "born")
    assert (f[:-1, 0] > 0).all()  # born before the anchor: positive signed log age
    assert np.all(np.diff(f[:-1, 0]) < 0)  # born later = younger


def test_small_tables_embed_texts_once_and_large_ones_hash(odd: Graph, text: TextEncoder) -> None:
    small = GraphFeatures(odd, text)
    assert _stats(small, "bio").text_emb is not None
    large = GraphFeatures(odd, text, FeatureConfig(minilm_text_rows=0))
    assert _stats(large, "bio").text_emb is None
    sub = TemporalSampler(odd, SamplerConfig(fanouts=())).sample(
        "customers", np.arange(N), np.full(N, ANCHOR, dtype=np.int64)
    )
    t = large.tensorize(sub, 1)
    _, v = _cells(large, t, "bio")
    assert np.allclose(t["value_emb"][v[0]].numpy(), hashed_embedding(["likes tea"])[0])


def test_max_cells_bounds_the_columns_read(odd: Graph, text: TextEncoder) -> None:
    few = GraphFeatures(odd, text, FeatureConfig(max_cells=2))
    assert all(len(t.columns) <= 2 for t in few.tables)
    sub = TemporalSampler(odd, SamplerConfig(fanouts=(2,))).sample(
        "customers", np.arange(3), np.full(3, ANCHOR, dtype=np.int64)
    )
    assert few.tensorize(sub, 4)["cell_col"].shape[2] == 2


def test_tensorize_is_deterministic_and_matches_the_shop(
    shop: Graph, features: GraphFeatures, text: TextEncoder, anchor: int
) -> None:
    sampler = TemporalSampler(shop, SamplerConfig(fanouts=(4, 2), max_nodes=12))
    sub = sampler.sample("users", np.arange(20), np.full(20, anchor, dtype=np.int64))
    a = features.tensorize(sub, 12)
    b = GraphFeatures(shop, text).tensorize(sub, 12)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    counts = np.minimum(np.diff(sub.seed_ptr), 12)
    assert (a["node_mask"].sum(1).numpy() == counts).all()
    # every node's table and cells belong to one of the graph's tables and their columns
    names = {t.text_index for t in features.tables}
    cols = {t.text_index: {c.text_index for c in t.columns} for t in features.tables}
    mask = a["node_mask"].numpy()
    for tbl, cc in zip(a["node_table"].numpy()[mask], a["cell_col"].numpy()[mask], strict=True):
        assert tbl in names
        assert set(cc[cc > 0].tolist()) <= cols[tbl]
    stypes = a["cell_stype"].numpy()
    assert set(np.unique(stypes).tolist()) <= {0, *STYPE_INDEX.values()}


def test_time_features_mark_static_rows_and_age() -> None:
    anchors = np.full(4, 1000 * DAY_NS, dtype=np.int64)
    rel = np.array([NO_TIME, 0, 10 * DAY_NS, 400 * DAY_NS], dtype=np.int64)
    f = _time_features(rel, anchors)
    assert f[0, 1] == 1.0 and (f[0, [0, 2, 3, 4, 5, 6, 7]] == 0).all()  # static: only the flag
    assert (f[1:, 1] == 0).all()
    assert f[1, 7] == 1.0 and f[2, 7] == 0.0  # "same day"
    assert 0 == f[1, 0] < f[2, 0] < f[3, 0]
    assert f[3, 6] == pytest.approx(400 / 365)
