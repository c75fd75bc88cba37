"""The label engine: PQL targets evaluated on the graph shards for (entity, anchor) pairs.

    from relfm_core.labels import LabelEngine
    engine = LabelEngine(graph, "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id")
    rows = engine.entity_rows(anchor)
    labels = engine.evaluate(rows, np.full(len(rows), anchor))

`tables` turns it into labelled example tables (context, training, backtest) that never leak.
Semantics and layout are described in `engine`, `aggregate` and `values`.
"""

from relfm_core.labels.engine import LabelEngine, combine_windows
from relfm_core.labels.result import Labels, Window
from relfm_core.labels.tables import (
    TableConfig,
    TrainingTables,
    backtest_table,
    context_table,
    training_table,
)

__all__ = [
    "LabelEngine",
    "Labels",
    "TableConfig",
    "TrainingTables",
    "Window",
    "backtest_table",
    "combine_windows",
    "context_table",
    "training_table",
]
