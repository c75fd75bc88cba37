"""The pretraining prior: many seeds, all valid, clearly varied, small and quick to generate."""

from __future__ import annotations

from collections import Counter

import pytest
from synthetic_checks import check_links, check_times

from graph_engine.synthetic import (
    DimensionTable,
    EntityTable,
    EventTable,
    OccasionTable,
    SyntheticDatabase,
    generate_database,
    random_config,
)
from graph_engine.synthetic.layout import foreign_keys

pytestmark = pytest.mark.unit

SEEDS = range(50)
MAX_EVENTS = 5_000


@pytest.fixture(scope="module")
def databases() -> list[SyntheticDatabase]:
    return [generate_database(random_config(seed, max_events=MAX_EVENTS)) for seed in SEEDS]


def test_every_sampled_database_is_valid(databases: list[SyntheticDatabase]) -> None:
    for db in databases:
        cfg = db.config
        assert 3 <= len(cfg.tables) <= 8, cfg.name
        check_links(db)
        check_times(db, cfg.start, cfg.end)
        events = sum(n for name, n in db.report.row_counts.items() if isinstance(cfg.table(name), EventTable))
        assert 0 < events <= 2 * MAX_EVENTS, (cfg.name, events)
        assert db.report.queries, cfg.name
        for name, t in db.spec.tables.items():
            assert list(t.semantic_types) == db.tables[name].column_names


def test_schemas_vary(databases: list[SyntheticDatabase]) -> None:
    sizes = Counter(len(db.config.tables) for db in databases)
    assert len(sizes) >= 5, sizes
    shapes = Counter()
    for db in databases:
        cfg = db.config
        tables = {t.name: t for t in cfg.tables}
        for t in cfg.tables:
            fks = foreign_keys(cfg, t)
            if isinstance(t, EventTable) and len(set(fks.values())) >= 2:
                shapes["many_to_many"] += 1
            if isinstance(t, EventTable) and t.child is not None:
                shapes["child_event"] += 1
            if isinstance(t, OccasionTable):
                shapes["occasion"] += 1
            if isinstance(t, DimensionTable) and t.parents:
                shapes["dimension_chain"] += 1
            if isinstance(t, EntityTable) and t.parents:
                shapes["entity_parent"] += 1
            if (
                isinstance(t, EventTable)
                and t.actor is not None
                and isinstance(tables[t.actor], DimensionTable)
            ):
                shapes["dimension_actor"] += 1
            if isinstance(t, EventTable) and t.process.memory_loading:
                shapes["memory"] += 1
        shapes["themes"] += 0
    for shape in ("many_to_many", "child_event", "occasion", "dimension_chain", "entity_parent"):
        assert shapes[shape] >= 3, shapes
    kinds = Counter(c.kind for db in databases for t in db.config.tables for c in t.columns)
    assert set(kinds) == {"float", "int", "category", "bool", "tags", "text", "timestamp", "embedding"}
    themes = Counter(db.config.name.rsplit("_", 1)[-1] for db in databases)
    assert len(themes) >= 5, themes
    names = {t.name for db in databases for t in db.config.tables}
    assert len(names) > 40


def test_prior_is_deterministic() -> None:
    assert random_config(11, max_events=2_000) == random_config(11, max_events=2_000)
    assert random_config(11, max_events=2_000) != random_config(12, max_events=2_000)


def test_sizes_follow_max_events() -> None:
    big = generate_database(random_config(4, max_events=40_000))
    small = generate_database(random_config(4, max_events=4_000))

    def events(db: SyntheticDatabase) -> int:
        return sum(n for k, n in db.report.row_counts.items() if isinstance(db.config.table(k), EventTable))

    assert events(big) > 3 * events(small)
