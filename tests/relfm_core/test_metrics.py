"""Evaluation metrics agree with scikit-learn on the same arrays (ties, imbalance, edge bins included)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve as sk_calibration_curve

from relfm_core import metrics

pytestmark = pytest.mark.unit
SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def binary_case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 60))
    y = draw(arrays(np.int64, n, elements=st.integers(0, 1)))
    # a coarse grid makes ties and exact bin edges (0.1, 0.3, ...) common
    p = draw(arrays(np.float64, n, elements=st.integers(0, 20).map(lambda v: v / 20)))
    return y, p


@given(binary_case())
@SETTINGS
def test_binary_metrics_match_sklearn(case: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = case
    m = metrics.binary_metrics(y, p)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p >= 0.5))
    assert m["f1"] == pytest.approx(skm.f1_score(y, p >= 0.5, zero_division=0.0))
    if 0 < y.sum() < len(y):
        assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p))
    if y.sum() > 0:
        assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
    prob_true, prob_pred = sk_calibration_curve(y, p, n_bins=10) if len(set(y)) > 1 else (None, None)
    if prob_true is not None:
        counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], p), minlength=10)
        weights = counts[counts > 0] / len(p)
        assert m["calibration_error"] == pytest.approx(float(np.sum(weights * np.abs(prob_true - prob_pred))))
        mp, obs = metrics.calibration_curve(y, p)
        np.testing.assert_allclose(mp, prob_pred)
        np.testing.assert_allclose(obs, prob_true)


@given(
    st.integers(2, 60).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=st.floats(-1e3, 1e3, allow_nan=False)),
            arrays(np.float64, n, elements=st.floats(-1e3, 1e3, allow_nan=False)),
        )
    )
)
@SETTINGS
def test_regression_metrics_match_sklearn(case: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = case
    m = metrics.regression_metrics(y, p)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["rmse"] == pytest.approx(skm.root_mean_squared_error(y, p))
    nz = y != 0
    if nz.any():
        assert m["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y[nz], p[nz]), rel=1e-9)
    assert m["mape_zero_targets"] == float((~nz).sum())
    if np.var(y) > 0:
        assert m["r2"] == pytest.approx(skm.r2_score(y, p), abs=1e-9)


def test_mape_leaves_out_zero_targets_instead_of_dividing_by_epsilon() -> None:
    m = metrics.regression_metrics(np.array([0.0, 0.0, 2.0, 4.0]), np.array([1.0, 0.0, 3.0, 2.0]))
    assert m["mape"] == pytest.approx((0.5 + 0.5) / 2)
    assert m["mape_zero_targets"] == 2.0
    assert np.isnan(metrics.regression_metrics(np.zeros(3), np.ones(3))["mape"])


@given(
    st.integers(1, 50).flatmap(
        lambda n: st.tuples(
            st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=n, max_size=n),
            st.lists(st.sampled_from(["a", "b", "c", "e"]), min_size=n, max_size=n),
        )
    )
)
@SETTINGS
def test_multiclass_metrics_match_sklearn(case: tuple[list[str], list[str]]) -> None:
    y, p = case
    m = metrics.multiclass_metrics(y, p)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0.0))


def _ranking_case(seed: int, n: int, items: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.random((n, items)) < 0.25
    truth[np.arange(n), rng.integers(0, items, n)] = True  # every entity has something to find
    scores = rng.random((n, items))  # distinct scores: no ties to break differently
    return truth, scores


@pytest.mark.parametrize(("seed", "k"), [(0, 1), (1, 3), (2, 5), (3, 12)])
def test_ranking_metrics_match_sklearn(seed: int, k: int) -> None:
    n, items = 25, 12
    truth, scores = _ranking_case(seed, n, items)
    order = np.argsort(-scores, axis=1)
    ranked = [list(r[:k]) for r in order]
    true_sets = [list(np.flatnonzero(t)) for t in truth]
    m = metrics.ranking_metrics(true_sets, ranked, k)
    assert m[f"ndcg@{k}"] == pytest.approx(skm.ndcg_score(truth, scores, k=k))
    top = np.zeros_like(truth)
    for i, r in enumerate(order):
        top[i, r[:k]] = True
    recall = np.mean([skm.recall_score(truth[i], top[i]) for i in range(n)])
    assert m[f"recall@{k}"] == pytest.approx(recall)
    # AP@k: precision at each hit within the top k (sklearn's precision on the top-i indicator)
    aps = []
    for i, r in enumerate(order):
        hits = [
            skm.precision_score(truth[i][r[: j + 1]], np.ones(j + 1, dtype=bool))
            for j in range(k)
            if truth[i][r[j]]
        ]
        aps.append(sum(hits) / min(truth[i].sum(), k))
    assert m[f"map@{k}"] == pytest.approx(np.mean(aps))
    if k == items:  # over the whole ranking, AP@k is sklearn's average precision
        ap = np.mean([skm.average_precision_score(truth[i], scores[i]) for i in range(n)])
        assert m[f"map@{k}"] == pytest.approx(ap)


def test_coverage_and_popularity_bias() -> None:
    truth = [["a"], ["b"], ["c"]]
    ranked = [["a", "b"], ["a", "c"], ["a", "b"]]
    popularity = {"a": 10.0, "b": 5.0, "c": 5.0, "d": 1.0}
    m = metrics.ranking_metrics(truth, ranked, 2, catalogue=list(popularity), popularity=popularity)
    assert m["coverage"] == pytest.approx(3 / 4)  # a, b and c recommended; d never
    # popularity percentiles with ties averaged: d 1/4, b and c 2.5/4, a 4/4
    assert m["popularity_bias"] == pytest.approx(np.mean([1, 2.5 / 4, 1, 2.5 / 4, 1, 2.5 / 4]))
    assert m["recall@2"] == pytest.approx(1 / 3)  # only the first entity finds its item


def test_compute_metrics_skips_rows_without_a_label_or_prediction() -> None:
    y = np.array([1.0, 0.0, np.nan, 1.0, 0.0])
    frame = pd.DataFrame({"prediction": [0.9, 0.2, 0.5, np.nan, 0.7]})
    m = metrics.compute_metrics("binary", y, frame)
    assert m["count"] == 3
    assert m["auroc"] == pytest.approx(skm.roc_auc_score([1, 0, 0], [0.9, 0.2, 0.7]))
    links = metrics.compute_metrics(
        "link_prediction", [[1, 2], [], [3]], pd.DataFrame({"prediction": [[2, 5], [1], [4, 3]]}), k=2
    )
    assert links["count"] == 2 and links["recall@2"] == pytest.approx(0.75)
    assert metrics.compute_metrics("multiclass", ["a", None], pd.DataFrame({"prediction": ["a", "b"]}))[
        "accuracy"
    ] == pytest.approx(1.0)
