"""Hand-made databases: the e-commerce default (tests, benchmarks) and the planted explanation test.

default_config: users (signup, churn) <- orders -> items, and reviews spawned by orders. Users'
latent dim 0 is activity (order rate, churn, loyalty_score, is_premium), dim 1 spend (amount, quantity),
dims 2-3 taste (country, interests, bio, which items). Items' dim 0 is popularity, dim 1 price level,
dims 2-3 kind (category, title, tags); items also excite future orders (excitation_loading), so what a
user bought two hops away says how active they will be.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from graph_engine.synthetic.config import (
    ChildConfig,
    ChoiceLink,
    ChurnConfig,
    ColumnConfig,
    DimensionTable,
    EntityTable,
    EventTable,
    PlantedSignal,
    ProcessConfig,
    SignupConfig,
    SyntheticConfig,
    SyntheticConfigError,
)
from graph_engine.synthetic.names import CATEGORY_VALUES, TAG_VALUES
from graph_engine.synthetic.queries import suggest_queries
from graph_engine.synthetic.randomness import rng_for

SCALES = {"tiny": 2_000, "small": 20_000, "medium": 1_000_000, "large": 10_000_000, "xl": 100_000_000}
_PILOT_USERS = 2_000
ITEM_CATEGORIES = [
    "electronics",
    "fashion",
    "books",
    "home",
    "toys",
    "sports",
    "beauty",
    "grocery",
    "garden",
    "automotive",
    "music",
    "office",
]


def _col(name: str, kind: str, **kw: object) -> ColumnConfig:
    return ColumnConfig.model_validate({"name": name, "kind": kind, **kw})


def _ecommerce(seed: int, n_users: int, n_items: int) -> SyntheticConfig:
    users = EntityTable(
        name="users",
        primary_key="user_id",
        n_rows=n_users,
        latent_dim=4,
        time_column="signup_time",
        signup=SignupConfig(initial_fraction=0.4, growth=1.0),
        churn=ChurnConfig(hazard_per_year=0.35, loading=[-0.8]),
        columns=[
            _col("age", "int", loc=38, scale=12, low=18, high=90, loading={"self": [0.0, 0.4]}),
            _col(
                "country",
                "category",
                values=CATEGORY_VALUES["country"],
                loading={"self": [0, 0, 0.8, 0.3]},
                noise=0.7,
            ),
            _col("is_premium", "bool", p_true=0.2, loading={"self": [0.7, 0.5]}, noise=0.8),
            _col("loyalty_score", "float", loc=50, scale=15, decimals=1, loading={"self": [0.9]}, noise=0.6),
            _col(
                "interests",
                "tags",
                values=TAG_VALUES[:12],
                mean_tags=2.5,
                loading={"self": [0, 0, 0.6, 0.6]},
                noise=0.6,
            ),
            _col("bio", "text", topic="bio", loading={"self": [0, 0, 0.5, 0.5]}, min_words=4, max_words=12),
            _col("device", "category", values=CATEGORY_VALUES["device"]),
        ],
    )
    items = DimensionTable(
        name="items",
        primary_key="item_id",
        n_rows=n_items,
        latent_dim=4,
        popularity=1.0,
        columns=[
            _col(
                "category", "category", values=ITEM_CATEGORIES, loading={"self": [0, 0, 0.8, 0.5]}, noise=0.4
            ),
            _col(
                "price", "float", dist="lognormal", loc=3.2, scale=0.9, loading={"self": [0, 0.9]}, noise=0.5
            ),
            _col(
                "brand",
                "category",
                values=[f"brand_{i:02d}" for i in range(60)],
                loading={"self": [0, 0.3, 0.5]},
            ),
            _col(
                "title", "text", topic="product", loading={"self": [0, 0, 0.7, 0.5]}, noise=0.5, max_words=8
            ),
            _col(
                "tags", "tags", values=TAG_VALUES, mean_tags=2.0, loading={"self": [0.3, 0, 0.5]}, noise=0.8
            ),
            _col("in_stock", "bool", p_true=0.85),
            _col("release_date", "timestamp", base=datetime(2019, 1, 1), scale=400, loading={"self": [0.4]}),
            _col(
                "image_emb",
                "embedding",
                dim=16,
                loading={"self": [1.0, 1.0, 1.0, 1.0]},
                noise=0.3,
                missing_rate=0.0,
            ),
        ],
    )
    orders = EventTable(
        name="orders",
        primary_key="order_id",
        time_column="order_time",
        actor="users",
        actor_column="user_id",
        choices=[ChoiceLink(column="item_id", parent="items", affinity=1.5, segments=12, repeat_prob=0.3)],
        process=ProcessConfig(
            rate_per_year=5.0,
            rate_loading=[1.0, 0.3],
            trend=0.3,
            weekly_amplitude=0.2,
            weekly_peak_day=5.5,
            yearly_amplitude=0.35,
            yearly_peak_day=340,
            daily_amplitude=0.5,
            daily_peak_hour=20,
            bursts=4,
            burst_amplitude=3.0,
            burst_days=1.5,
            excitation=0.35,
            excitation_loading={"actor": [0.5], "item_id": [0.6, 0.4]},
            excitation_delay_days=10,
        ),
        columns=[
            _col(
                "amount",
                "float",
                dist="lognormal",
                loc=3.4,
                scale=0.8,
                loading={"actor": [0, 0.6], "item_id": [0, 0.9], "season": [0.15]},
                noise=0.4,
            ),
            _col("quantity", "int", dist="poisson", loc=0.0, scale=0.4, low=1, loading={"actor": [0, 0.5]}),
            _col(
                "status",
                "category",
                values=["completed", "cancelled", "returned", "pending"],
                probs=[0.85, 0.06, 0.06, 0.03],
                loading={"actor": [-0.5, 0, 0, 0.3], "item_id": [0, -0.3]},
            ),
            _col(
                "channel",
                "category",
                values=["web", "app", "store"],
                loading={"actor": [0, 0, 0.6]},
                noise=0.8,
            ),
        ],
    )
    reviews = EventTable(
        name="reviews",
        primary_key="review_id",
        time_column="review_time",
        child=ChildConfig(
            parent_event="orders",
            inherit=["user_id", "item_id"],
            count="bernoulli",
            mean=0.25,
            loading=[0.5, 0, 0, 0.4],
            delay_days=6.0,
            min_delay_days=1.0,
        ),
        columns=[
            _col(
                "rating",
                "int",
                dist="bucket",
                high=5,
                probs=[0.06, 0.08, 0.16, 0.3, 0.4],
                loading={"actor": [0, 0, 0, 0.6], "item_id": [0.8]},
                noise=0.7,
            ),
            _col(
                "review_text",
                "text",
                topic="review",
                loading={"actor": [0, 0, 0, 0.6], "item_id": [0.8]},
                noise=0.5,
            ),
        ],
    )
    return SyntheticConfig(
        name="ecommerce",
        seed=seed,
        start=datetime(2021, 1, 1),
        end=datetime(2024, 1, 1),
        tables=[users, items, orders, reviews],
    )


def _target_events(scale: str | int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int | str):
        raise SyntheticConfigError(
            f"scale {scale!r}: expected one of {sorted(SCALES)} or a number of event rows"
        )
    if isinstance(scale, str):
        if scale not in SCALES:
            raise SyntheticConfigError(f"scale '{scale}': expected one of {', '.join(SCALES)} or a row count")
        return SCALES[scale]
    if scale < 1:
        raise SyntheticConfigError(f"scale {scale}: the number of event rows must be positive")
    return scale


def default_config(scale: str | int = "small", seed: int = 0) -> SyntheticConfig:
    """The e-commerce database (users, items, orders, reviews) with about `scale` event rows in all."""
    from graph_engine.synthetic.generator import count_events

    target = _target_events(scale)
    pilot = _ecommerce(seed, _PILOT_USERS, 200)
    per_user = max(sum(count_events(pilot).values()) / _PILOT_USERS, 1e-6)
    n_users = max(10, round(target / per_user))
    cfg = _ecommerce(seed, n_users, min(1_000_000, max(20, n_users // 5)))
    cfg.queries = suggest_queries(cfg)
    return cfg


def planted_config(
    seed: int = 0,
    n_users: int = 4_000,
    n_items: int = 500,
    strength: float = 2.0,
    n_attributes: int = 4,
    years: float = 2.0,
) -> SyntheticConfig:
    """Explanation-test database: one item column two hops from users drives their future orders.

    users <- orders -> items. Every item has `n_attributes` float columns attr_0.. with the same
    standard-normal distribution; exactly one (chosen by `seed`, see `config.planted.column`) is the
    item's latent trait. A user's order rate is ``10/year * exp(state)``, the state moving 70% of the way
    to ``strength * value`` at each order (process memory), so users whose last orders were of items
    with a high value keep ordering and the others go quiet. Users share one base rate, pick items
    uniformly and never churn; every other column is noise. So a user's orders in the next 30 days are
    explained by the planted column of the items they bought last, not by the matched noise columns
    (nor much by their order count).
    """
    if n_attributes < 2:
        raise SyntheticConfigError("planted_config: n_attributes must be at least 2 (one planted, one noise)")
    planted = int(rng_for(seed, "planted-column").integers(n_attributes))
    attrs = [
        _col(
            f"attr_{i}",
            "float",
            decimals=4,
            missing_rate=0.0,
            **({"loading": {"self": [1.0]}, "noise": 0.0} if i == planted else {}),
        )
        for i in range(n_attributes)
    ]
    start = datetime(2022, 1, 1)
    end = start + timedelta(days=years * 365.25)
    users = EntityTable(
        name="users",
        primary_key="user_id",
        n_rows=n_users,
        columns=[
            _col("age", "int", loc=40, scale=12, low=18, high=90),
            _col("segment", "category", values=["a", "b", "c", "d"]),
            _col("score", "float", decimals=3),
        ],
    )
    items = DimensionTable(
        name="items",
        primary_key="item_id",
        n_rows=n_items,
        columns=[
            *attrs,
            _col("category", "category", values=ITEM_CATEGORIES),
            _col("title", "text", topic="product"),
        ],
    )
    orders = EventTable(
        name="orders",
        primary_key="order_id",
        time_column="order_time",
        actor="users",
        actor_column="user_id",
        choices=[ChoiceLink(column="item_id", parent="items", affinity=0.0, segments=1)],
        process=ProcessConfig(rate_per_year=10.0, memory_loading={"item_id": [strength]}, memory_decay=0.7),
        columns=[
            _col("amount", "float", dist="lognormal", loc=3.0, scale=0.7),
            _col("quantity", "int", dist="poisson", loc=0.0, scale=0.3, low=1),
        ],
    )
    query = "PREDICT COUNT(orders.*, 0, 30, days) FOR EACH users.user_id"
    signal = PlantedSignal(
        entity_table="users",
        event_table="orders",
        table="items",
        column=f"attr_{planted}",
        noise_columns=[f"attr_{i}" for i in range(n_attributes) if i != planted],
        path=["users", "orders", "items"],
        query=query,
        description=(
            f"Users whose recent orders were of items with high items.attr_{planted} order more in the next "
            "30 days; every other column is noise."
        ),
    )
    cfg = SyntheticConfig(
        name="planted",
        seed=seed,
        start=start,
        end=end,
        tables=[users, items, orders],
        missing_rate=0.0,
        planted=signal,
    )
    cfg.queries = [query, "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"]
    return cfg
