"""Synthetic relational databases: tiny ones for tests, streamed 100M-row ones for benchmarks, a prior
over schemas for pretraining, and a planted-signal database for explanation tests.

See docs/synthetic.md.
"""

from graph_engine.synthetic.config import (
    ChildConfig,
    ChoiceLink,
    ChurnConfig,
    ColumnConfig,
    DimensionTable,
    EntityTable,
    EventTable,
    KeyConfig,
    OccasionTable,
    PlantedSignal,
    ProcessConfig,
    SignupConfig,
    StaticLink,
    SyntheticConfig,
    SyntheticConfigError,
    load_config,
)
from graph_engine.synthetic.generator import (
    GenerationReport,
    SyntheticDatabase,
    count_events,
    generate,
    generate_database,
    generate_in_memory,
    read_report,
)
from graph_engine.synthetic.presets import SCALES, default_config, planted_config
from graph_engine.synthetic.prior import random_config
from graph_engine.synthetic.queries import suggest_queries

__all__ = [
    "SCALES",
    "ChildConfig",
    "ChoiceLink",
    "ChurnConfig",
    "ColumnConfig",
    "DimensionTable",
    "EntityTable",
    "EventTable",
    "GenerationReport",
    "KeyConfig",
    "OccasionTable",
    "PlantedSignal",
    "ProcessConfig",
    "SignupConfig",
    "StaticLink",
    "SyntheticConfig",
    "SyntheticConfigError",
    "SyntheticDatabase",
    "count_events",
    "default_config",
    "generate",
    "generate_database",
    "generate_in_memory",
    "load_config",
    "planted_config",
    "random_config",
    "read_report",
    "suggest_queries",
]
