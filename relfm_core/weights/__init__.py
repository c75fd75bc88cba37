"""Released weights: the pretrained checkpoint shipped in the package, and loading of any checkpoint.

A checkpoint is `model.safetensors` (weights) beside `config.json` (`{"model": ModelConfig fields, ...}`),
either as a folder or as `<name>.safetensors` + `<name>.json`. The shipped one is `relfm-base`; its model
card is MODEL_CARD.md in this folder. `relfm pretrain CONFIG` reproduces it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from graph_engine.errors import RelfmError
from relfm_core.model import ModelConfig, RelationalFM
from relfm_core.training import load_weights

PACKAGE_DIR = Path(__file__).resolve().parent
BASE = PACKAGE_DIR / "relfm-base.safetensors"


def checkpoint_files(path: str | Path | None) -> tuple[Path, Path]:
    """(weights, config) of a checkpoint folder, a .safetensors file, or the shipped model (None)."""
    p = Path(path) if path is not None else BASE
    if p.is_dir():
        return p / "model.safetensors", p / "config.json"
    return p, p.with_suffix(".json")


def read_config(path: str | Path | None = None) -> dict[str, Any]:
    _, cfg = checkpoint_files(path)
    if not cfg.is_file():
        raise RelfmError(f"model config {cfg} not found")
    return dict(json.loads(cfg.read_text()))


def load_pretrained(path: str | Path | None = None) -> RelationalFM:
    weights, _ = checkpoint_files(path)
    if not weights.is_file():
        where = "the package" if path is None else str(path)
        raise RelfmError(f"no model weights in {where} ({weights.name}); train them with `relfm pretrain`")
    cfg = read_config(path)
    model = RelationalFM(ModelConfig(**cfg["model"]))
    load_weights(model, weights)
    model.eval()
    return model
