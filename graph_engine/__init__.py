"""Storage, metadata and sampling layer of relfm.

Everything here is NumPy/Arrow/numba only: no torch, no Ray, no Spark (except `shards.spark_builder`),
so that the graph can be built and read anywhere, including inside Spark executors and Ray actors.
"""

from graph_engine.errors import RelfmError
from graph_engine.spec import GraphSpec, SemanticType, TableSpec

__all__ = ["GraphSpec", "RelfmError", "SemanticType", "TableSpec"]
