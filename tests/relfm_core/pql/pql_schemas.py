"""Hand-built graph schemas for the PQL tests: rel-f1-like, nycflights13-like, and a small shop with
the column kinds the other two lack (booleans, text, lists, a self link, a static child table)."""

from __future__ import annotations

from graph_engine.schema import ColumnInfo, DType, GraphSchema, TableInfo
from graph_engine.spec import SemanticType as S


def _table(
    name: str,
    columns: list[tuple[str, DType, S]],
    pk: str | None = None,
    time: str | None = None,
    fks: dict[str, str] | None = None,
) -> TableInfo:
    return TableInfo(
        name=name,
        columns={c: ColumnInfo(c, d, s) for c, d, s in columns},
        primary_key=pk,
        time_column=time,
        foreign_keys=dict(fks or {}),
    )


def _schema(*tables: TableInfo) -> GraphSchema:
    return GraphSchema({t.name: t for t in tables})


ID = S.id
NUM = S.numerical
CAT = S.categorical
TXT = S.text
TS = S.timestamp


def f1_schema() -> GraphSchema:
    return _schema(
        _table(
            "races",
            [
                ("raceId", "int64", ID),
                ("year", "int64", NUM),
                ("round", "int64", NUM),
                ("circuitId", "int64", ID),
                ("name", "string", CAT),
                ("date", "timestamp", TS),
                ("time", "string", TXT),
            ],
            pk="raceId",
            time="date",
            fks={"circuitId": "circuits"},
        ),
        _table(
            "circuits",
            [
                ("circuitId", "int64", ID),
                ("circuitRef", "string", TXT),
                ("name", "string", TXT),
                ("location", "string", CAT),
                ("country", "string", CAT),
                ("lat", "float64", NUM),
                ("lng", "float64", NUM),
                ("alt", "float64", NUM),
            ],
            pk="circuitId",
        ),
        _table(
            "drivers",
            [
                ("driverId", "int64", ID),
                ("driverRef", "string", TXT),
                ("code", "string", CAT),
                ("forename", "string", TXT),
                ("surname", "string", TXT),
                ("dob", "timestamp", TS),
                ("nationality", "string", CAT),
            ],
            pk="driverId",
        ),
        _table(
            "constructors",
            [
                ("constructorId", "int64", ID),
                ("constructorRef", "string", TXT),
                ("name", "string", TXT),
                ("nationality", "string", CAT),
            ],
            pk="constructorId",
        ),
        _table(
            "results",
            [
                ("resultId", "int64", ID),
                ("raceId", "int64", ID),
                ("driverId", "int64", ID),
                ("constructorId", "int64", ID),
                ("number", "float64", NUM),
                ("grid", "int64", NUM),
                ("position", "float64", NUM),
                ("positionOrder", "int64", NUM),
                ("points", "float64", NUM),
                ("laps", "int64", NUM),
                ("milliseconds", "float64", NUM),
                ("fastestLap", "float64", NUM),
                ("rank", "float64", NUM),
                ("statusId", "int64", CAT),
                ("date", "timestamp", TS),
            ],
            pk="resultId",
            time="date",
            fks={"raceId": "races", "driverId": "drivers", "constructorId": "constructors"},
        ),
        _table(
            "standings",
            [
                ("driverStandingsId", "int64", ID),
                ("raceId", "int64", ID),
                ("driverId", "int64", ID),
                ("points", "float64", NUM),
                ("position", "int64", NUM),
                ("wins", "int64", NUM),
                ("date", "timestamp", TS),
            ],
            pk="driverStandingsId",
            time="date",
            fks={"raceId": "races", "driverId": "drivers"},
        ),
        _table(
            "qualifying",
            [
                ("qualifyId", "int64", ID),
                ("raceId", "int64", ID),
                ("driverId", "int64", ID),
                ("constructorId", "int64", ID),
                ("number", "int64", NUM),
                ("position", "int64", NUM),
                ("date", "timestamp", TS),
            ],
            pk="qualifyId",
            time="date",
            fks={"raceId": "races", "driverId": "drivers", "constructorId": "constructors"},
        ),
        _table(
            "constructor_results",
            [
                ("constructorResultsId", "int64", ID),
                ("raceId", "int64", ID),
                ("constructorId", "int64", ID),
                ("points", "float64", NUM),
                ("date", "timestamp", TS),
            ],
            pk="constructorResultsId",
            time="date",
            fks={"raceId": "races", "constructorId": "constructors"},
        ),
        _table(
            "constructor_standings",
            [
                ("constructorStandingsId", "int64", ID),
                ("raceId", "int64", ID),
                ("constructorId", "int64", ID),
                ("points", "float64", NUM),
                ("position", "int64", NUM),
                ("wins", "int64", NUM),
                ("date", "timestamp", TS),
            ],
            pk="constructorStandingsId",
            time="date",
            fks={"raceId": "races", "constructorId": "constructors"},
        ),
    )


def flights_schema() -> GraphSchema:
    return _schema(
        _table(
            "flights",
            [
                ("flight_id", "int64", ID),
                ("year", "int64", NUM),
                ("month", "int64", NUM),
                ("day", "int64", NUM),
                ("dep_time", "float64", NUM),
                ("sched_dep_time", "int64", NUM),
                ("dep_delay", "float64", NUM),
                ("arr_time", "float64", NUM),
                ("sched_arr_time", "int64", NUM),
                ("arr_delay", "float64", NUM),
                ("carrier", "string", ID),
                ("flight", "int64", CAT),
                ("tailnum", "string", ID),
                ("origin", "string", ID),
                ("dest", "string", ID),
                ("air_time", "float64", NUM),
                ("distance", "float64", NUM),
                ("hour", "int64", NUM),
                ("minute", "int64", NUM),
                ("time_hour", "timestamp", TS),
            ],
            pk="flight_id",
            time="time_hour",
            fks={"carrier": "airlines", "tailnum": "planes", "origin": "airports", "dest": "airports"},
        ),
        _table(
            "planes",
            [
                ("tailnum", "string", ID),
                ("year", "int64", NUM),
                ("type", "string", CAT),
                ("manufacturer", "string", CAT),
                ("model", "string", CAT),
                ("engines", "int64", NUM),
                ("seats", "int64", NUM),
                ("speed", "float64", NUM),
                ("engine", "string", CAT),
            ],
            pk="tailnum",
        ),
        _table("airlines", [("carrier", "string", ID), ("name", "string", TXT)], pk="carrier"),
        _table(
            "airports",
            [
                ("faa", "string", ID),
                ("name", "string", TXT),
                ("lat", "float64", NUM),
                ("lon", "float64", NUM),
                ("alt", "int64", NUM),
                ("tz", "int64", CAT),
                ("dst", "string", CAT),
                ("tzone", "string", CAT),
            ],
            pk="faa",
        ),
        _table(
            "weather",
            [
                ("origin", "string", ID),
                ("temp", "float64", NUM),
                ("dewp", "float64", NUM),
                ("humid", "float64", NUM),
                ("wind_dir", "float64", NUM),
                ("wind_speed", "float64", NUM),
                ("precip", "float64", NUM),
                ("visib", "float64", NUM),
                ("time_hour", "timestamp", TS),
            ],
            time="time_hour",
            fks={"origin": "airports"},
        ),
    )


def shop_schema() -> GraphSchema:
    return _schema(
        _table(
            "users",
            [
                ("user_id", "int64", ID),
                ("age", "int64", NUM),
                ("country", "string", CAT),
                ("signup", "timestamp", TS),
                ("active", "bool", CAT),
                ("bio", "string", TXT),
                ("tags", "list_string", S.multicategorical),
                ("vec", "list_float", S.embedding),
                ("referrer_id", "int64", ID),
                ("score", "float64", NUM),
                ("order", "int64", NUM),
            ],
            pk="user_id",
            time="signup",
            fks={"referrer_id": "users"},
        ),
        _table(
            "orders",
            [
                ("order_id", "int64", ID),
                ("user_id", "int64", ID),
                ("product_id", "int64", ID),
                ("amount", "float64", NUM),
                ("quantity", "int64", NUM),
                ("status", "string", CAT),
                ("created_at", "timestamp", TS),
                ("shipped_at", "timestamp", TS),
                ("is_gift", "bool", CAT),
                ("note", "string", TXT),
            ],
            pk="order_id",
            time="created_at",
            fks={"user_id": "users", "product_id": "products"},
        ),
        _table(
            "products",
            [
                ("product_id", "int64", ID),
                ("category", "string", CAT),
                ("price", "float64", NUM),
                ("brand_id", "int64", ID),
            ],
            pk="product_id",
            fks={"brand_id": "brands"},
        ),
        _table("brands", [("brand_id", "int64", ID), ("name", "string", CAT)], pk="brand_id"),
        _table(
            "addresses",
            [("address_id", "int64", ID), ("user_id", "int64", ID), ("city", "string", CAT)],
            pk="address_id",
            fks={"user_id": "users"},
        ),
        _table(
            "page_views",
            [("user_id", "int64", ID), ("url", "string", TXT), ("ts", "timestamp", TS)],
            time="ts",
            fks={"user_id": "users"},
        ),
    )


SCHEMAS = {"f1": f1_schema(), "flights": flights_schema(), "shop": shop_schema()}
