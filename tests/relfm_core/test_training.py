"""The training loop (plain torch): a run killed after a checkpoint and resumed ends with exactly the
weights of an uninterrupted run; only the newest checkpoints are kept; metrics reach the callback."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from relfm_core.training import (
    TrainConfig,
    Trainer,
    batches,
    load_weights,
    lr_lambda,
    save_weights,
    set_seed,
)

pytestmark = pytest.mark.unit

CFG = TrainConfig(steps=7, lr=1e-2, warmup=2, checkpoint_every=2, keep_checkpoints=2, log_every=2)


def _net() -> nn.Module:
    # dropout: the resumed run must also restore torch's RNG to match
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))


def _run(trainer: Trainer, until: int) -> None:
    while trainer.step_num < until and not trainer.done():
        x = torch.randn(16, 4)  # the data stream depends on the RNG state too
        loss = ((trainer.model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        trainer.train_step(loss, {"extra_metric": float(trainer.step_num)})


def _weights(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _steps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_resumed_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    set_seed(0)
    ref_model = _net()
    ref = Trainer(ref_model, CFG, tmp_path / "ref")
    _run(ref, CFG.steps)
    assert ref.done() and ref.step_num == 7

    set_seed(0)
    killed_model = _net()
    killed = Trainer(killed_model, CFG, tmp_path / "run", model_config={"width": 8})
    _run(killed, 5)  # checkpoints at 2 and 4; step 5 is lost with the process
    assert _steps(tmp_path / "run") == ["step-00000002", "step-00000004"]
    at4 = load_state(tmp_path / "run" / "step-00000004")

    set_seed(123)  # a different process: other initial weights, other RNG state
    model = _net()
    trainer = Trainer(model, CFG, tmp_path / "run", model_config={"width": 8})
    assert trainer.resume() == {}
    assert trainer.step_num == 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, at4[k]), k
    assert trainer.scheduler.last_epoch == 4
    _run(trainer, CFG.steps)
    for k, v in _weights(model).items():
        torch.testing.assert_close(v, ref_model.state_dict()[k], rtol=0, atol=1e-7)


def load_state(folder: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path) -> None:
    set_seed(0)
    trainer = Trainer(_net(), CFG, tmp_path, model_config={"d": 8})
    _run(trainer, CFG.steps)
    assert _steps(tmp_path) == ["step-00000004", "step-00000006"]
    final = trainer.save({"producer_restarts": 3})
    assert final == tmp_path / "step-00000007"
    assert _steps(tmp_path) == ["step-00000006", "step-00000007"]  # no temporary folder left behind
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["model"] == {"d": 8} and cfg["train"]["steps"] == 7
    assert torch.load(final / "trainer.pt", weights_only=False)["step"] == 7
    # an incomplete folder (no trainer.pt) is never resumed from
    (tmp_path / "step-00000099").mkdir()
    again = Trainer(_net(), CFG, tmp_path)
    assert again.latest() == final
    assert again.resume() == {"producer_restarts": 3}
    assert again.step_num == 7 and again.done()


def test_metrics_are_averaged_per_logging_interval(tmp_path: Path) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    set_seed(0)
    trainer = Trainer(_net(), CFG, None, metrics=lambda step, m: seen.append((step, m)))
    _run(trainer, CFG.steps)
    assert [s for s, _ in seen] == [2, 4, 6]
    _step, m = seen[1]
    assert {"loss", "extra_metric", "lr", "steps_per_s"} <= set(m)
    assert m["extra_metric"] == 2.5  # the mean of the values logged at steps 3 and 4 (2.0 and 3.0)
    assert trainer.save() is None and trainer.latest() is None and trainer.resume() == {}
    assert not any(tmp_path.iterdir())


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    f = lr_lambda(TrainConfig(steps=100, warmup=10, min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert f(100) == pytest.approx(0.1) and f(1000) == pytest.approx(0.1)


def test_weights_round_trip_with_metadata(tmp_path: Path) -> None:
    set_seed(1)
    a, b = _net(), _net()
    save_weights(a, tmp_path / "w.safetensors", metadata={"kind": "test"})
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert f.metadata() == {"kind": "test"}
    load_weights(b, tmp_path / "w.safetensors")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    with pytest.raises(RuntimeError):
        load_weights(nn.Linear(4, 1), tmp_path / "w.safetensors")
    load_weights(nn.Sequential(nn.Linear(4, 8)), tmp_path / "w.safetensors", strict=False)


def test_batches_cover_every_index_once() -> None:
    got = list(batches(10, 4, np.random.default_rng(0)))
    assert [len(b) for b in got] == [4, 4, 2]
    assert sorted(np.concatenate(got).tolist()) == list(range(10))
    assert np.concatenate(list(batches(5, 2))).tolist() == [0, 1, 2, 3, 4]
