"""Plots: valid PNG files, drift numbers right on inputs whose answer is known, logging into a real MLflow
SQLite store."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graph_engine.errors import RelfmError
from pipelines import plots

pytestmark = pytest.mark.unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.is_file() and path.suffix == ".png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 200 and img.height > 200


@pytest.fixture(scope="module")
def binary() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    prob = rng.uniform(0, 1, 2000)
    y = (rng.uniform(0, 1, 2000) < prob).astype(int)  # calibrated by construction
    return y, prob


def test_each_plot_is_a_png(tmp_path: Path, binary: tuple[np.ndarray, np.ndarray]) -> None:
    y, prob = binary
    rng = np.random.default_rng(1)
    actual = rng.normal(10, 3, 500)
    paths = [
        plots.roc_curve_plot(y, prob, tmp_path),
        plots.calibration_plot(y, prob, tmp_path),
        plots.predicted_vs_actual_plot(actual, actual + rng.normal(0, 1, 500), tmp_path),
        plots.score_distribution_plot(prob, tmp_path),
        plots.drift_plot(prob, rng.uniform(0, 1, 1500), tmp_path).path,
    ]
    assert len({p.name for p in paths}) == 5
    for path in paths:
        assert path.parent == tmp_path
        assert_png(path)


def test_default_output_folder_is_a_fresh_temporary_one() -> None:
    a = plots.score_distribution_plot([0.1, 0.5, 0.9])
    b = plots.score_distribution_plot([0.2, 0.4])
    assert a.parent != b.parent
    assert_png(a)


def test_large_regression_scatter_is_sampled(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=plots.MAX_SCATTER_POINTS * 2)
    assert_png(plots.predicted_vs_actual_plot(y, y + 0.1, tmp_path))


def test_rows_without_label_or_score_are_left_out(
    tmp_path: Path, binary: tuple[np.ndarray, np.ndarray]
) -> None:
    y, prob = binary
    y = y.astype(float)
    y[:10] = np.nan
    prob = prob.copy()
    prob[10:20] = np.nan
    assert_png(plots.roc_curve_plot(y, prob, tmp_path))
    assert_png(plots.calibration_plot(y, prob, tmp_path))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: plots.roc_curve_plot([0, 1, 1], [0.1, 0.2]), "differ in length"),
        (lambda: plots.roc_curve_plot([1, 1, 1], [0.1, 0.2, 0.3]), "one class only"),
        (lambda: plots.calibration_plot([0, 2, 1], [0.1, 0.2, 0.3]), "labels must be 0/1"),
        (lambda: plots.score_distribution_plot([np.nan, np.inf]), "no finite values"),
        (lambda: plots.score_distribution_plot(["a", "b"]), "must be numeric"),
        (lambda: plots.drift_plot([], [0.1, 0.2]), "no finite values"),
    ],
)
def test_bad_inputs_are_one_line_errors(call: object, message: str) -> None:
    with pytest.raises(RelfmError) as err:
        call()  # type: ignore[operator]
    assert message in err.value.message and "\n" not in err.value.message


# ------------------------------------------------------------------------------------------------ drift
def test_psi_and_ks_are_zero_for_the_same_distribution() -> None:
    x = np.random.default_rng(3).normal(size=5000)
    assert plots.population_stability_index(x, x) == pytest.approx(0.0, abs=1e-12)
    assert plots.ks_statistic(x, x)[0] == 0.0


def test_psi_matches_a_hand_computed_value() -> None:
    # previous: 1000 evenly spread values, so its deciles are 10 bins of exactly 10%.
    previous = (np.arange(1000) + 0.5) / 1000
    shares = [0.2, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05]
    centres = (np.arange(10) + 0.5) / 10
    current = np.repeat(centres, [round(s * 1000) for s in shares])
    expected = sum((c - 0.1) * math.log(c / 0.1) for c in shares)  # 0.2 ln 2 = 0.1386
    assert plots.population_stability_index(current, previous) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.2 * math.log(2))


def test_psi_grows_with_the_shift_and_flags_a_large_one() -> None:
    rng = np.random.default_rng(4)
    previous = rng.normal(size=20_000)
    psis = [plots.population_stability_index(rng.normal(shift, 1, 20_000), previous) for shift in (0, 0.2, 1)]
    assert psis[0] < 0.01 < psis[1] < psis[2]
    assert psis[2] > 0.25  # the usual "shifted" threshold


def test_ks_statistic_on_known_inputs() -> None:
    assert plots.ks_statistic([1.0, 2.0, 3.0], [10.0, 11.0])[0] == 1.0  # disjoint supports
    rng = np.random.default_rng(5)
    ks, pvalue = plots.ks_statistic(rng.normal(0.5, 1, 20_000), rng.normal(0, 1, 20_000))
    # sup |Phi(x) - Phi(x - 0.5)| = Phi(0.25) - Phi(-0.25)
    expected = math.erf(0.25 / math.sqrt(2))
    assert ks == pytest.approx(expected, abs=0.02)
    assert pvalue < 1e-10


def test_drift_plot_returns_its_numbers(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    cur, prev = rng.beta(2, 5, 3000), rng.beta(2, 3, 3000)
    drift = plots.drift_plot(cur, prev, tmp_path)
    assert_png(drift.path)
    assert drift.psi == pytest.approx(plots.population_stability_index(cur, prev))
    assert (drift.ks, drift.ks_pvalue) == pytest.approx(plots.ks_statistic(cur, prev))
    assert drift.psi > 0.1 and 0 < drift.ks <= 1


# ------------------------------------------------------------------------------------------------ MLflow
@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real SQLite tracking store, one per module (creating its schema is the slow part); MLflow's
    process-wide tracking URI and the environment are put back afterwards."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELFM_HOME", str(root / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", uri)  # recorded, so the caller's value comes back on exit
        yield uri
        if mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def artifacts(uri: str, run_id: str) -> set[str]:
    from mlflow import MlflowClient

    return {f.path for f in MlflowClient(tracking_uri=uri).list_artifacts(run_id, "plots")}


def test_log_plots_for_a_binary_task_with_drift(
    mlflow_store: str, tmp_path: Path, binary: tuple[np.ndarray, np.ndarray]
) -> None:
    from mlflow import MlflowClient

    from pipelines import tracking

    y, prob = binary
    previous = np.random.default_rng(8).uniform(0.2, 1.0, 1800)
    with tracking.run("plots-binary", experiment="plots-test", tracking=mlflow_store) as run:
        paths = plots.log_plots("binary", prob, y=y, previous=previous, out_dir=tmp_path / "png")
    assert set(paths) == {"score_distribution", "roc_curve", "calibration", "drift"}
    assert artifacts(mlflow_store, run.info.run_id) == {f"plots/{p.name}" for p in paths.values()}
    local = MlflowClient(tracking_uri=mlflow_store).download_artifacts(
        run.info.run_id, "plots/roc_curve.png", str(tmp_path / "back")
    )
    assert_png(Path(local))
    metrics = MlflowClient(tracking_uri=mlflow_store).get_run(run.info.run_id).data.metrics
    assert metrics["drift_psi"] == pytest.approx(plots.population_stability_index(prob, previous))
    assert metrics["drift_ks"] == pytest.approx(plots.ks_statistic(prob, previous)[0])
    assert metrics["drift_psi"] > 0.1


def test_log_plots_for_regression_without_labels_or_previous_run(mlflow_store: str, tmp_path: Path) -> None:
    from pipelines import tracking

    rng = np.random.default_rng(9)
    actual = rng.gamma(2.0, 3.0, 800)
    with tracking.run("plots-regression", experiment="plots-test", tracking=mlflow_store) as run:
        with_labels = plots.log_plots("regression", actual * 1.1, y=actual, out_dir=tmp_path / "a")
        scores_only = plots.log_plots("regression", actual, artifact_path="tonight", out_dir=tmp_path / "b")
    assert set(with_labels) == {"score_distribution", "predicted_vs_actual"}
    assert set(scores_only) == {"score_distribution"}
    assert artifacts(mlflow_store, run.info.run_id) == {
        "plots/score_distribution.png",
        "plots/predicted_vs_actual.png",
    }


def test_log_plots_needs_an_active_run(mlflow_store: str) -> None:
    with pytest.raises(RelfmError, match="no active MLflow run"):
        plots.log_plots("binary", [0.2, 0.8])
