"""The fine-tuned model's linear path: selection on validation rows, refit, median intercept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LinearRegression

from relfm_core.finetune import cap_rows
from relfm_core.subgraph_aggregates import AggregateGroups
from relfm_core.task_probe import ProbeData, ProbeSpec, TaskProbe, fit_task_probe

NO_GROUPS = AggregateGroups((), ())


def _skewed(n: int, seed: int) -> ProbeData:
    """A linear signal plus right-skewed noise: the median of y given x sits below its mean."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = x @ np.array([1.0, -0.5, 0.0, 0.25]) + rng.exponential(2.0, size=n)
    return ProbeData(x, y, np.zeros(n))


def test_regression_probe_moves_its_intercept_to_the_median_residual_when_validation_prefers_it() -> None:
    train, val = _skewed(2000, 0), _skewed(500, 1)
    probe, loss, val_out = fit_task_probe("regression", train, val, {}, NO_GROUPS, 0)
    assert probe is not None
    assert probe.spec.median
    # the reported loss is the mean absolute error of the returned (out-of-sample) validation outputs
    assert np.isclose(loss, np.mean(np.abs(val_out - val.y)))
    # with exponential noise a least-squares (mean) fit leaves absolute error on the table
    mean_fit = LinearRegression().fit(train.x, train.y)
    assert loss < np.mean(np.abs(mean_fit.predict(val.x) - val.y)) - 0.1


def test_chosen_probe_is_solved_again_on_training_and_validation_rows() -> None:
    train, val = _skewed(800, 2), _skewed(300, 3)
    probe, _, _ = fit_task_probe("regression", train, val, {}, NO_GROUPS, 0)
    assert probe is not None
    assert probe.spec.rows == len(train.y) + len(val.y)


def test_head_alone_wins_when_it_is_better_and_its_outputs_are_returned() -> None:
    train, val = _skewed(400, 4), _skewed(200, 5)
    perfect = ProbeData(val.x, val.y, val.y.copy())
    probe, loss, out = fit_task_probe("regression", train, perfect, {}, NO_GROUPS, 0)
    assert probe is None
    assert loss == 0.0
    np.testing.assert_array_equal(out, val.y)


def test_probe_spec_round_trips_the_median_flag() -> None:
    spec = ProbeSpec("all", 0.5, 10.0, 4, 1, 0, AggregateGroups(((1, 0, 2),), ((1, 0),)), 12, True)
    again = ProbeSpec.from_dict(spec.to_dict())
    assert again == spec
    # models saved before the flag existed load as mean fits
    legacy = spec.to_dict()
    del legacy["median"]
    assert not ProbeSpec.from_dict(legacy).median
    assert isinstance(TaskProbe("regression", again).coef, torch.Tensor)


def test_cap_rows_keeps_the_latest_rows_or_a_random_sample() -> None:
    times = pd.date_range("2020-01-01", periods=10, freq="D")
    df = pd.DataFrame({"entity_row": np.arange(10), "anchor_time": times[::-1], "label": np.arange(10.0)})
    df.attrs["task_type"] = "regression"
    latest = cap_rows(df, 3, "latest", 0)
    assert sorted(latest["anchor_time"]) == list(times[-3:])
    assert latest.attrs["task_type"] == "regression"
    assert list(latest.index) == sorted(latest.index)  # table order kept
    sample = cap_rows(df, 3, "random", 1)
    assert len(sample) == 3
    assert cap_rows(df, 20, "latest", 0) is df
