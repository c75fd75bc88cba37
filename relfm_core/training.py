"""One training loop for pretraining and fine-tuning, plain torch on CPU or DeepSpeed on GPUs.

The loop owns checkpointing so that every run can resume after a kill: weights as safetensors plus the
optimiser, scheduler, RNG states and step, written atomically (to a temporary folder, then renamed).
With a DeepSpeed config the same loop goes through `deepspeed.initialize` (ZeRO stage and offload come
from the config) and DeepSpeed's own checkpoints; on CPU that is `DS_ACCELERATOR=cpu` with gloo.
Metrics go to a callback, so this layer stays free of MLflow (pipelines log them).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

MetricsCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    deepspeed: dict[str, Any] | None = None  # a DeepSpeed config; None = plain torch
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / max(cfg.warmup, 1)
        p = min(1.0, (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))

    return f


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Trainer:
    """Steps a model on losses the caller computes; checkpoints and resumes itself."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        checkpoint_dir: str | Path | None,
        metrics: MetricsCallback | None = None,
        model_config: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.metrics = metrics or (lambda step, m: None)
        self.model_config = model_config or {}
        self.step_num = 0
        self._t0 = time.time()
        self._acc: dict[str, list[float]] = {}
        decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        self.engine: Any = None
        self.optimizer: Any = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
        if cfg.deepspeed is not None:
            import deepspeed

            ds_cfg = dict(cfg.deepspeed)
            ds_cfg.setdefault("gradient_clipping", cfg.grad_clip)
            ds_cfg.setdefault("train_micro_batch_size_per_gpu", 1)
            # DeepSpeed gets this AdamW (both paths train with the same optimiser, and none of its fused
            # optimisers needs compiling on a CPU machine) unless its config names one; the schedule
            # drives the optimiser inside its ZeRO wrapper (LambdaLR rejects the wrapper itself)
            given = None if "optimizer" in ds_cfg else self.optimizer
            if given is not None:  # ZeRO-Offload would otherwise insist on DeepSpeed's CPU Adam
                ds_cfg.setdefault("zero_force_ds_cpu_optimizer", False)
            self.engine, self.optimizer, _, _ = deepspeed.initialize(
                model=model,
                optimizer=given,
                model_parameters=groups if given is None else None,
                config=ds_cfg,
            )
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(inner, lr_lambda(cfg))

    @property
    def module(self) -> nn.Module:
        return self.engine.module if self.engine is not None else self.model

    @property
    def is_main(self) -> bool:
        return int(os.environ.get("RANK", "0")) == 0

    # ------------------------------------------------------------------ stepping
    def train_step(self, loss: torch.Tensor, logs: dict[str, float] | None = None) -> None:
        if self.engine is not None:
            self.engine.backward(loss)
            self.engine.step()
            self.scheduler.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
        self.step_num += 1
        self._acc.setdefault("loss", []).append(float(loss.detach()))
        for k, v in (logs or {}).items():
            self._acc.setdefault(k, []).append(float(v))
        if self.step_num % self.cfg.log_every == 0:
            m = {k: float(np.mean(v)) for k, v in self._acc.items()}
            m["lr"] = float(self.scheduler.get_last_lr()[0])
            m["steps_per_s"] = self.cfg.log_every / max(time.time() - self._t0, 1e-9)
            self._t0 = time.time()
            self._acc.clear()
            if self.is_main:
                self.metrics(self.step_num, m)
        if self.dir is not None and self.step_num % self.cfg.checkpoint_every == 0:
            self.save()

    def done(self) -> bool:
        return self.step_num >= self.cfg.steps

    # ------------------------------------------------------------------ checkpoints
    def save(self, extra: dict[str, Any] | None = None) -> Path | None:
        if self.dir is None:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        tag = f"step-{self.step_num:08d}"
        if self.engine is not None:
            # every rank takes part in a DeepSpeed checkpoint
            self.engine.save_checkpoint(
                str(self.dir / "deepspeed"), tag=tag, client_state={"step": self.step_num}
            )
            if not self.is_main:
                return None
        final = self.dir / tag
        tmp = self.dir / f".tmp-{tag}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_weights(self.module, tmp / "model.safetensors")
        state = {
            "step": self.step_num,
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
            },
            "extra": extra or {},
        }
        if self.engine is None:
            state["optimizer"] = self.optimizer.state_dict()
        torch.save(state, tmp / "trainer.pt")
        (tmp / "config.json").write_text(
            json.dumps({"model": self.model_config, "train": self.cfg.to_dict()}, indent=1, default=str)
        )
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        for old in sorted(self.dir.glob("step-*"))[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def latest(self) -> Path | None:
        if self.dir is None or not self.dir.is_dir():
            return None
        done = sorted(p for p in self.dir.glob("step-*") if (p / "trainer.pt").is_file())
        return done[-1] if done else None

    def resume(self) -> dict[str, Any]:
        """Loads the latest complete checkpoint, if any; returns its `extra` state."""
        ckpt = self.latest()
        if ckpt is None:
            return {}
        state = torch.load(ckpt / "trainer.pt", weights_only=False)
        if self.engine is not None:
            self.engine.load_checkpoint(str(self.dir / "deepspeed"), tag=ckpt.name)  # type: ignore[operator]
        else:
            load_weights(self.model, ckpt / "model.safetensors")
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        self.step_num = int(state["step"])
        return dict(state.get("extra", {}))


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    model.load_state_dict(load_file(str(path)), strict=strict)


def batches(n: int, size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    idx = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, size):
        yield idx[i : i + size]
