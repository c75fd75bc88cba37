"""Why a prediction was made: local gradient saliency per input cell, global cohorts per column.

    pred = RFM(graph).predict(query, explain=True)
    pred.frame["explanation"]              # each entity's strongest contributors, in words
    pred.explanation.local.columns         # saliency per entity and column (also .tables, .rows, .cells)
    pred.explanation.global_.columns       # importance of every column over the context (cohorts)

See docs/explanations.md.
"""

from relfm_core.explain.cohorts import (
    CohortConfig,
    ColumnValues,
    GlobalExplanation,
    cohorts_of,
    global_explanation,
    subgraph_values,
)
from relfm_core.explain.explainer import (
    EXPLAINABLE,
    ExplainConfig,
    Explanation,
    cell_frame_empty,
    check_task,
    explain_entities,
    explain_globally,
    explain_local,
    reported,
    to_units,
    value_and_label,
)
from relfm_core.explain.finetuned import explain_finetuned
from relfm_core.explain.incontext import InContextExplainer, blend_torch, in_context_forward
from relfm_core.explain.local import (
    HISTORY,
    ColumnIndex,
    LocalExplanation,
    cell_frame,
    describe,
    format_amount,
    local_explanation,
)
from relfm_core.explain.saliency import Attribution, Forward, Reference, integrated_gradients

__all__ = [
    "EXPLAINABLE",
    "HISTORY",
    "Attribution",
    "CohortConfig",
    "ColumnIndex",
    "ColumnValues",
    "ExplainConfig",
    "Explanation",
    "Forward",
    "GlobalExplanation",
    "InContextExplainer",
    "LocalExplanation",
    "Reference",
    "blend_torch",
    "cell_frame",
    "cell_frame_empty",
    "check_task",
    "cohorts_of",
    "describe",
    "explain_entities",
    "explain_finetuned",
    "explain_globally",
    "explain_local",
    "format_amount",
    "global_explanation",
    "in_context_forward",
    "integrated_gradients",
    "local_explanation",
    "reported",
    "subgraph_values",
    "to_units",
    "value_and_label",
]
