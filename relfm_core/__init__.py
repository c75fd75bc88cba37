"""PQL, task typing, label engine, the relational foundation model, pretraining, ICL, fine-tuning,
explanations and metrics (torch; no Ray, Spark or MLflow here)."""

from typing import Any

__all__ = ["RFM"]


def __getattr__(name: str) -> Any:
    # `from relfm_core import RFM` without importing torch for users of the PQL or label engine alone.
    if name == "RFM":
        from relfm_core.rfm import RFM

        return RFM
    raise AttributeError(name)
