"""The generated data carries the signal real tasks have (and the planted database only its own)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic_checks import spearman

from graph_engine.synthetic import default_config, generate_in_memory, planted_config

pytestmark = pytest.mark.unit

DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def ecommerce() -> dict[str, pd.DataFrame]:
    tables, _ = generate_in_memory(default_config(60_000, seed=1))
    return {k: v.to_pandas() for k, v in tables.items()}


def _window_counts(
    events: pd.DataFrame, key: str, time: str, lo: pd.Timestamp, hi: pd.Timestamp
) -> pd.Series:
    inside = events[(events[time] > lo) & (events[time] <= hi)]
    return inside.groupby(key).size()


@pytest.mark.parametrize("anchor", ["2022-06-01", "2023-06-01", "2023-11-01"])
def test_past_activity_predicts_future_activity(ecommerce: dict[str, pd.DataFrame], anchor: str) -> None:
    t = pd.Timestamp(anchor)
    users = ecommerce["users"]
    users = users[users["signup_time"] <= t].set_index("user_id")
    orders = ecommerce["orders"]
    past = _window_counts(orders, "user_id", "order_time", pd.Timestamp.min, t).reindex(
        users.index, fill_value=0
    )
    future = _window_counts(orders, "user_id", "order_time", t, t + 30 * DAY).reindex(
        users.index, fill_value=0
    )
    assert len(users) > 1000 and 0.05 < (future > 0).mean() < 0.6
    assert spearman(past, future) > 0.3
    # Static columns that are noisy functions of the latent activity trait.
    assert spearman(users["loyalty_score"].fillna(users["loyalty_score"].mean()), future) > 0.15
    assert spearman(users["is_premium"].fillna(False).astype(float), future) > 0.1
    # A pure-noise column says nothing.
    assert abs(spearman(users["device"].fillna("").astype("category").cat.codes, future)) < 0.08
    # Recency: among users active before, a long silence means no orders next month (churn).
    last = orders[orders["order_time"] <= t].groupby("user_id")["order_time"].max()
    silent_days = (t - last).dt.days
    assert spearman(silent_days, (future.reindex(last.index) == 0).astype(float)) > 0.3


def test_event_values_depend_on_user_and_item_traits(ecommerce: dict[str, pd.DataFrame]) -> None:
    orders = ecommerce["orders"].dropna(subset=["amount"])
    items = ecommerce["items"].set_index("item_id")
    price = items["price"].reindex(orders["item_id"]).to_numpy()
    ok = ~np.isnan(price)
    assert spearman(orders["amount"].to_numpy()[ok], price[ok]) > 0.3  # two hops: order -> item -> price
    per_user = orders.groupby("user_id")["amount"]
    first, second = (
        per_user.apply(lambda a: a.iloc[: len(a) // 2].mean()),
        per_user.apply(lambda a: a.iloc[len(a) // 2 :].mean()),
    )
    both = first.notna() & second.notna()
    assert spearman(first[both], second[both]) > 0.2  # a user's spend level persists


def test_users_come_back_to_items_and_categories(ecommerce: dict[str, pd.DataFrame]) -> None:
    orders = ecommerce["orders"]
    t = pd.Timestamp("2023-06-01")
    past, future = orders[orders["order_time"] <= t], orders[orders["order_time"] > t]
    cats = ecommerce["items"].set_index("item_id")["category"]
    past = past.assign(c=cats.reindex(past["item_id"]).to_numpy())
    seen_items = past.groupby("user_id")["item_id"].agg(set)
    seen_cats = past.groupby("user_id")["c"].agg(set)
    future = future[future["user_id"].isin(seen_items.index)]
    future = future.assign(c=cats.reindex(future["item_id"]).to_numpy())
    shuffled = np.random.default_rng(0).permutation(future["user_id"].to_numpy())

    def hit_rate(users: np.ndarray, col: str, seen: pd.Series) -> float:
        return float(np.mean([v in seen[u] for u, v in zip(users, future[col], strict=True)]))

    users = future["user_id"].to_numpy()
    # Against the same events given to random other users: taste (segments) and repeats show.
    assert hit_rate(users, "c", seen_cats) > hit_rate(shuffled, "c", seen_cats) + 0.05
    assert hit_rate(users, "item_id", seen_items) > 1.4 * hit_rate(shuffled, "item_id", seen_items)


def _planted_features(
    anchor_days_before_end: int, seed: int
) -> tuple[pd.DataFrame, pd.Series, list[str], str]:
    cfg = planted_config(seed=seed)
    assert cfg.planted is not None
    tables, _ = generate_in_memory(cfg)
    orders = tables["orders"].to_pandas()
    items = tables["items"].to_pandas().set_index("item_id")
    t = pd.Timestamp(cfg.end) - anchor_days_before_end * DAY
    past = orders[orders["order_time"] <= t].sort_values("order_time")
    last = past.groupby("user_id").tail(3)
    cols = [cfg.planted.column, *cfg.planted.noise_columns]
    feats = pd.DataFrame(
        {c: items[c].reindex(last["item_id"]).to_numpy() for c in cols}, index=last["user_id"]
    )
    feats = feats.groupby(level=0).mean()
    label = _window_counts(orders, "user_id", "order_time", t, t + 30 * DAY).reindex(
        feats.index, fill_value=0
    )
    return feats, label, cfg.planted.noise_columns, cfg.planted.column


@pytest.mark.parametrize(("days_before_end", "seed"), [(60, 0), (250, 1)])
def test_planted_column_explains_the_label_and_noise_twins_do_not(days_before_end: int, seed: int) -> None:
    feats, label, noise, planted = _planted_features(days_before_end, seed)
    assert len(feats) > 2000
    rho = spearman(feats[planted], label)
    assert rho > 0.2
    for col in noise:
        assert abs(spearman(feats[col], label)) < 0.08, col
        # The twins really are matched: same distribution as the planted column.
        assert abs(feats[col].std() - feats[planted].std()) < 0.1
