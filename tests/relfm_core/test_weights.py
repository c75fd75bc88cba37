"""Released weights: the shipped relfm-base checkpoint loads into the current model code, any checkpoint
folder or file pair loads, and missing pieces give a one-line RelfmError."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from graph_engine.errors import RelfmError
from relfm_core import weights
from relfm_core.model import ModelConfig, RelationalFM
from relfm_core.training import save_weights
from relfm_core.weights import BASE, checkpoint_files, load_pretrained, read_config

pytestmark = pytest.mark.unit

SMALL = ModelConfig(d=16, cell_dim=8, heads=2, graph_layers=1, icl_layers=1)


def _one_line_error(excinfo: pytest.ExceptionInfo[RelfmError]) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def test_the_shipped_checkpoint_is_where_the_package_says() -> None:
    w, c = checkpoint_files(None)
    assert w == BASE and w.name == "relfm-base.safetensors" and w.is_file()
    assert c == BASE.with_suffix(".json") and c.is_file()


def test_the_shipped_config_describes_the_current_model() -> None:
    cfg = read_config()
    assert set(cfg["model"]) == {f.name for f in dataclasses.fields(ModelConfig)}


def test_the_shipped_weights_load_exactly() -> None:
    model = load_pretrained()
    assert isinstance(model, RelationalFM) and not model.training
    assert model.cfg == ModelConfig(**read_config()["model"])
    stored = load_file(str(BASE))
    state = model.state_dict()
    assert set(stored) == set(state)
    for k, v in stored.items():
        assert torch.equal(state[k], v), k
        assert torch.isfinite(v).all(), k


def test_a_checkpoint_folder_and_a_file_pair_both_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = RelationalFM(SMALL)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_weights(model, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model": SMALL.to_dict(), "steps": 3}))
    save_weights(model, tmp_path / "mine.safetensors")
    (tmp_path / "mine.json").write_text(json.dumps({"model": SMALL.to_dict()}))
    assert checkpoint_files(folder) == (folder / "model.safetensors", folder / "config.json")
    assert read_config(str(folder))["steps"] == 3
    for source in (folder, tmp_path / "mine.safetensors"):
        loaded = load_pretrained(source)
        assert loaded.cfg == SMALL
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k


def test_missing_weights_give_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RelfmError) as e:
        load_pretrained(tmp_path)
    msg = _one_line_error(e)
    assert str(tmp_path) in msg and "model.safetensors" in msg and "relfm pretrain" in msg
    # the package without its weights (a broken install, or weights not yet trained)
    monkeypatch.setattr(weights, "BASE", tmp_path / "relfm-base.safetensors")
    with pytest.raises(RelfmError) as e:
        load_pretrained()
    assert "the package" in _one_line_error(e)


def test_missing_config_gives_one_line(tmp_path: Path) -> None:
    save_weights(RelationalFM(SMALL), tmp_path / "model.safetensors")
    with pytest.raises(RelfmError) as e:
        load_pretrained(tmp_path)
    assert "config.json" in _one_line_error(e)
    with pytest.raises(RelfmError):
        read_config(tmp_path / "nothing.safetensors")
