"""Shared by the model tests (model, features, inputs, rfm, fine-tuning, pretraining): the tiny synthetic
shop (88 users, ~1.2k orders), its features and input builder, a small random model, and a copy of the
shop in which one user's *future* orders were handed to another user (their labels change, nothing
before the anchor does), for the no-leakage tests.

Everything runs with the hashed text encoder (MiniLM is tested on its own in test_text_encoder.py) and
a RELFM_HOME in a temporary folder; session fixtures set that environment only while they build, so
the label and PQL tests that share this folder see the environment they expect.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from graph_engine.shards.reader import Graph

if TYPE_CHECKING:  # torch is imported by the fixtures that need it, not by the label and PQL tests
    from relfm_core.features import GraphFeatures
    from relfm_core.inputs import InputBuilder
    from relfm_core.model import RelationalFM
    from relfm_core.text_encoder import TextEncoder

# a mid-2023 anchor: two and a half years of history before it, six months of events after it
ANCHOR = int(np.datetime64("2023-06-01T00:00:00", "ns").astype(np.int64))


@contextmanager
def core_vars(home: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELFM_HOME", str(home / "home"))
        mp.setenv("RELFM_TEXT_ENCODER", "hashed")
        yield


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One thread per test process for torch and for BLAS/OpenMP (numpy, scipy, scikit-learn): under
    `pytest -n 2` on two cores, next to a background job, their default of one thread per core
    oversubscribes, and small forward passes or L-BFGS fits take seconds instead of milliseconds.
    Restored after each module, so other test folders keep their settings."""
    torch = sys.modules.get("torch")  # not loaded (label and PQL tests alone): nothing to limit
    if torch is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def anchor() -> int:
    return ANCHOR


@pytest.fixture(scope="session")
def core_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("relfm-core")


@pytest.fixture(scope="module")
def core_env(core_home: Path) -> Iterator[Path]:
    """The hashed text encoder and a private RELFM_HOME for one test module (what `RFM` reads)."""
    with core_vars(core_home):
        yield core_home


@pytest.fixture(scope="session")
def shop_dir(core_home: Path) -> Path:
    """The tiny synthetic shop as Parquet files + graph.yaml."""
    from graph_engine.synthetic import default_config, generate

    out = core_home / "shop"
    generate(default_config("tiny", seed=0), out)
    return out


def build(folder: Path, home: Path) -> Graph:
    from graph_engine.cache import open_or_build
    from graph_engine.spec import GraphSpec

    with core_vars(home):
        return open_or_build(GraphSpec.from_yaml(folder / "graph.yaml"), cache_dir=home / "graphs")


@pytest.fixture(scope="session")
def shop(shop_dir: Path, core_home: Path) -> Graph:
    return build(shop_dir, core_home)


@pytest.fixture(scope="session")
def text() -> TextEncoder:
    from relfm_core.text_encoder import TextEncoder

    return TextEncoder(backend="hashed")


@pytest.fixture(scope="session")
def features(shop: Graph, text: TextEncoder) -> GraphFeatures:
    from relfm_core.features import GraphFeatures

    return GraphFeatures(shop, text)


@pytest.fixture(scope="session")
def builder(shop: Graph, features: GraphFeatures) -> InputBuilder:
    from relfm_core.inputs import InputBuilder

    return InputBuilder(shop, features, lags=8, max_nodes=16)


@pytest.fixture(scope="session")
def tiny_model() -> RelationalFM:
    """A small randomly initialised model (fast; the tests that need trained weights load the shipped
    ones). Tests must not train it: fine-tuning works on a copy."""
    import torch

    from relfm_core.model import ModelConfig, RelationalFM

    torch.manual_seed(0)
    model = RelationalFM(ModelConfig(d=32, cell_dim=16, heads=2, graph_layers=1, icl_layers=1))
    return model.eval()


@dataclass(frozen=True)
class Swapped:
    """The shop with every order (and review) of user `a` after ANCHOR moved to user `b`."""

    graph: Graph
    a: int  # user_id whose future orders were taken away
    b: int  # user_id who got them (had none in the 30 days after ANCHOR)
    moved: int  # how many orders moved


@pytest.fixture(scope="session")
def swapped(shop_dir: Path, core_home: Path) -> Swapped:
    orders = pq.read_table(shop_dir / "orders.parquet")
    t = pa.scalar(np.datetime64(ANCHOR, "ns").astype("datetime64[us]"), pa.timestamp("us"))
    t30 = pa.scalar((np.datetime64(ANCHOR, "ns") + np.timedelta64(30, "D")).astype("datetime64[us]"))
    future = pc.greater(orders["order_time"], t)
    soon = pc.and_(future, pc.less_equal(orders["order_time"], t30))
    buyers = set(orders.filter(soon)["user_id"].to_pylist())
    users = pq.read_table(shop_dir / "users.parquet")
    signed = pc.less_equal(users["signup_time"], t)
    existing = users.filter(signed)["user_id"].to_pylist()
    a = sorted(buyers)[0]
    b = next(u for u in existing if u not in buyers)
    folder = core_home / "shop-swapped"
    shutil.copytree(shop_dir, folder)
    for name, tcol in (("orders", "order_time"), ("reviews", "review_time")):
        tab = pq.read_table(shop_dir / f"{name}.parquet")
        move = pc.and_(pc.greater(tab[tcol], t), pc.equal(tab["user_id"], a))
        uid = pc.if_else(move, pa.scalar(b, pa.int64()), tab["user_id"])
        tab = tab.set_column(tab.schema.get_field_index("user_id"), "user_id", uid)
        pq.write_table(tab, folder / f"{name}.parquet")
    moved = int(pc.sum(pc.and_(future, pc.equal(orders["user_id"], a))).as_py())
    return Swapped(build(folder, core_home), int(a), int(b), moved)
