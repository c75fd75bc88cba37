"""The closed-form in-context head: fitted on the context only, blended by cross-validation."""

from __future__ import annotations

import numpy as np
import pytest

from relfm_core.icl_head import ProbeConfig, fit_probe

pytestmark = pytest.mark.unit


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    return x, x[:, 0] * 2.0 - x[:, 1]


def test_binary_probe_learns_the_context_signal_when_the_head_is_noise() -> None:
    x, s = _data(400)
    y = (s + np.random.default_rng(1).normal(scale=0.5, size=len(s)) > 0).astype(float)
    noise = np.random.default_rng(2).normal(size=len(y))
    probe = fit_probe("binary", x, y, noise)
    assert probe.weight >= 0.75
    xq, sq = _data(200, seed=3)
    out = probe.blend(xq, np.zeros(len(xq)))
    assert np.corrcoef(out, sq)[0, 1] > 0.9


def test_a_perfect_attention_head_is_kept_alone() -> None:
    x, s = _data(300)
    y = (s > 0).astype(float)
    head = np.where(y > 0, 20.0, -20.0)  # already certain and right
    probe = fit_probe("binary", x, y, head)
    assert probe.weight == 0.0
    np.testing.assert_array_equal(probe.blend(x, head), head)


def test_regression_probe_predicts_in_the_normalised_space() -> None:
    x, s = _data(300)
    probe = fit_probe("regression", x, s, np.zeros(len(s)))
    assert probe.weight > 0.5
    xq, sq = _data(100, seed=5)
    assert np.abs(probe.blend(xq, np.zeros(len(xq))) - sq).mean() < 0.5


def test_multiclass_probe_fills_classes_it_never_saw() -> None:
    x, s = _data(300)
    y = np.digitize(s, [-1.0, 1.0]).astype(float)  # slots 0, 1, 2 of 4 classes: slot 3 never appears
    probe = fit_probe("multiclass", x, y, np.zeros((len(y), 4)), n_classes=4)
    assert probe.weight > 0
    out = probe.blend(x, np.zeros((len(y), 4)))
    assert out.shape == (len(y), 4)
    assert (out.argmax(1) == y).mean() > 0.8
    assert (out[:, 3] < out.max(1)).all()


@pytest.mark.parametrize("labels", [np.zeros(100), np.array([0.0, 1.0] * 5)])
def test_degenerate_contexts_leave_the_head_alone(labels: np.ndarray) -> None:
    x = np.random.default_rng(0).normal(size=(len(labels), 3))
    probe = fit_probe("binary", x, labels, np.zeros(len(labels)), ProbeConfig(min_rows=24))
    assert probe.weight == 0.0 and probe.model is None


def test_the_fit_is_deterministic_for_a_seed() -> None:
    x, s = _data(200)
    y = (s > 0).astype(float)
    a, b = (fit_probe("binary", x, y, np.zeros(len(y)), ProbeConfig(seed=7)) for _ in range(2))
    assert a.weight == b.weight and a.param == b.param
    np.testing.assert_array_equal(a.raw(x), b.raw(x))


def test_a_narrow_view_is_chosen_when_the_other_columns_are_noise() -> None:
    """With few context rows, 128 noisy encoder dimensions hurt; the history view alone wins by CV."""
    rng = np.random.default_rng(11)
    n, wide = 120, 128
    history = rng.normal(size=(n, 3))
    x = np.hstack([rng.normal(size=(n, wide)), history])
    y = (history[:, 0] + rng.normal(scale=0.7, size=n) > 0).astype(float)
    view = np.arange(wide, wide + 3)
    probe = fit_probe("binary", x, y, None, views={"history": view})
    assert probe.view == "history"
    np.testing.assert_array_equal(probe.columns, view)
    xq = np.hstack([rng.normal(size=(50, wide)), rng.normal(size=(50, 3))])
    np.testing.assert_allclose(
        probe.raw(xq), probe.model.decision_function(probe.scaler.transform(xq[:, view]))
    )
