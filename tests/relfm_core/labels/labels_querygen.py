"""Random valid PQL queries over the schema of `labels_graphs`, written as text.

Every query the generator writes must validate (a failure is a generator bug, reported with the text).
Literals are drawn mostly from the data, so comparisons hit values, and partly at random, so they miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from labels_graphs import BASE, SPAN_DAYS, WORDS, GraphData

# Column kinds: how a column may be compared and aggregated.
PK, FK, NUM, INT, CATS, CATI, BOOLC, BOOLN, TEXT, TS, MULTI = (
    "pk",
    "fk",
    "num",
    "int",
    "cats",
    "cati",
    "boolc",
    "booln",
    "text",
    "ts",
    "multi",
)

SCHEMA: dict[str, dict[str, tuple[str, str | None]]] = {
    "regions": {"region_id": (PK, None), "rname": (CATS, None), "zone": (TEXT, None)},
    "brands": {"brand_id": (PK, None), "bcountry": (CATS, None)},
    "products": {
        "product_id": (PK, None),
        "category": (CATS, None),
        "price": (NUM, None),
        "brand_id": (FK, "brands"),
        "pdesc": (TEXT, None),
    },
    "users": {
        "user_id": (PK, None),
        "age": (NUM, None),
        "score": (INT, None),
        "country": (CATS, None),
        "vip": (BOOLC, None),
        "bio": (TEXT, None),
        "born": (TS, None),
        "tags": (MULTI, None),
        "region_id": (FK, "regions"),
        "referrer": (FK, "users"),
        "signup": (TS, None),
    },
    "orders": {
        "order_id": (PK, None),
        "ts": (TS, None),
        "user_id": (FK, "users"),
        "product_id": (FK, "products"),
        "amount": (NUM, None),
        "qty": (INT, None),
        "status": (CATS, None),
        "paid": (BOOLC, None),
        "gift": (BOOLN, None),
        "note": (TEXT, None),
        "shipped": (TS, None),
        "code": (CATI, None),
        "labels": (MULTI, None),
    },
    "visits": {
        "visit_id": (PK, None),
        "vts": (TS, None),
        "user_id": (FK, "users"),
        "host_id": (FK, "users"),
        "duration": (NUM, None),
        "channel": (CATS, None),
    },
}
STRING_KEYS = {"brands", "products", "visits"}
NUMERIC = {NUM, INT}
SUMMABLE = {NUM, INT, BOOLN, BOOLC}
CATEGORICAL = {CATS, CATI, BOOLC}
UNITS = ["seconds", "minutes", "hours", "days", "weeks", "months"]
UNIT_SCALE = {"seconds": 86_400, "minutes": 1_440, "hours": 24, "days": 1, "weeks": 1 / 7, "months": 1 / 30}


@dataclass(frozen=True)
class Ref:
    text: str  # as written after the table (`status`, `product_id->products.category`)
    kind: str
    table: str  # the final table
    column: str
    parent: str | None  # for FK columns, the table pointed at
    hops: int


def quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class QueryGen:
    def __init__(self, rng: np.random.Generator, g: GraphData) -> None:
        self.rng = rng
        self.g = g

    # ------------------------------------------------------------------ helpers
    def coin(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)

    def pick(self, options: list[Any]) -> Any:
        return options[int(self.rng.integers(0, len(options)))]

    def columns(self, table: str) -> dict[str, tuple[str, str | None]]:
        cols = dict(SCHEMA[table])
        if table == "users" and not self.g.users_time:
            cols.pop("signup")
        return cols

    def key_is_string(self, table: str) -> bool:
        return table in STRING_KEYS or (table == "users" and self.g.string_users)

    def ref(self, table: str, max_hops: int = 2, kinds: set[str] | None = None) -> Ref:
        """A column of `table` or of a parent (through up to `max_hops` `->`), of one of `kinds`."""
        for _ in range(200):
            parts: list[str] = []
            current = table
            hops = 0
            while hops < max_hops and self.coin(0.35):
                fks = [(c, p) for c, (k, p) in self.columns(current).items() if k == FK and p is not None]
                if not fks:
                    break
                c, p = self.pick(fks)
                parts.append(f"{c}->{p}")
                current = p
                hops += 1
            cols = [(c, k, p) for c, (k, p) in self.columns(current).items() if kinds is None or k in kinds]
            if not cols:
                continue
            c, k, p = self.pick(cols)
            text = ".".join([*parts, c])
            return Ref(text, k, current, c, p, hops)
        raise AssertionError(f"no column of kinds {kinds} reachable from {table}")

    def number(self, table: str, column: str, integer: bool) -> str:
        vals = self.g.values.get((table, column), [])
        if vals and self.coin(0.7):
            v = self.pick(vals)
            if isinstance(v, bool):
                v = int(v)
        else:
            v = int(self.rng.integers(-5, 60)) if integer else float(self.rng.integers(-20, 240)) / 4
        return str(int(v)) if integer or (float(v).is_integer() and self.coin()) else repr(float(v))

    def agg_number(self, func: str) -> str:
        if func in ("COUNT", "COUNT_DISTINCT"):
            return str(int(self.rng.integers(0, 5)))
        return (
            repr(float(self.rng.integers(-20, 240)) / 4)
            if self.coin()
            else str(int(self.rng.integers(-5, 60)))
        )

    def string(self, table: str, column: str) -> str:
        vals = [v for v in self.g.values.get((table, column), []) if isinstance(v, str)]
        if vals and self.coin(0.75):
            return str(self.pick(vals))
        return str(self.pick(WORDS))

    def fragment(self, table: str, column: str) -> str:
        s = self.string(table, column)
        if not s:
            return s
        i = int(self.rng.integers(0, len(s)))
        j = int(self.rng.integers(i, len(s) + 1))
        return s[i:j] if self.coin(0.8) else s

    def like_pattern(self, table: str, column: str) -> str:
        s = self.string(table, column)
        out = []
        for ch in s:
            r = self.rng.random()
            if r < 0.15:
                out.append("_")
            elif r < 0.25:
                out.append("%")
            elif ch in "%_\\":
                out.append("\\" + ch)
            else:
                out.append(ch)
        if self.coin(0.3):
            out.insert(0, "%")
        if self.coin(0.3):
            out.append("%")
        return "".join(out)

    def timestamp(self) -> str:
        day = BASE + np.timedelta64(int(self.rng.integers(-40, SPAN_DAYS + 10)), "D")
        if self.coin():
            return quote(str(day.astype("datetime64[D]")))
        hour = int(self.rng.integers(0, 24))
        return quote(str((day + np.timedelta64(hour, "h")).astype("datetime64[s]")).replace("T", " "))

    def key_literal(self, table: str) -> str:
        keys = self.g.values[(table, SCHEMA_PK[table])]
        missing: Any = "zz999" if self.key_is_string(table) else 99_999
        k = self.pick(keys) if self.coin(0.85) else missing
        return quote(k) if isinstance(k, str) else str(k)

    # ------------------------------------------------------------------ comparisons
    def comparison(self, lhs: str, kind: str, table: str, column: str, parent: str | None) -> str:
        """`lhs op value` for a value of `kind` (column `table.column`, or an aggregate of it)."""
        if self.coin(0.1):
            return f"{lhs} {self.pick(['IS NULL', 'IS NOT NULL'])}"
        if kind == MULTI:
            return f"{lhs} {self.pick(['CONTAINS', 'NOT CONTAINS'])} {quote(self.pick(['a', 'b', 'c', 'd', 'zz']))}"
        if kind in (BOOLC, BOOLN):
            op = self.pick(["=", "!=", "IN", "NOT IN"])
            if op in ("IN", "NOT IN"):
                vals = self.pick([["TRUE"], ["FALSE"], ["TRUE", "FALSE"]])
                return f"{lhs} {op} ({', '.join(vals)})"
            return f"{lhs} {op} {self.pick(['TRUE', 'FALSE'])}"
        if kind in (PK, FK):
            target = table if kind == PK else parent
            assert target is not None
            lit_table = target
            string = self.key_is_string(lit_table)
            ops = ["=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN"]
            if string:
                ops += ["CONTAINS", "STARTS WITH", "LIKE", "NOT LIKE"]
            op = self.pick(ops)
            if op in ("IN", "NOT IN"):
                vals = [self.key_literal(lit_table) for _ in range(int(self.rng.integers(1, 4)))]
                return f"{lhs} {op} ({', '.join(vals)})"
            if op in ("CONTAINS", "STARTS WITH"):
                return f"{lhs} {op} {quote(self.pick(['u0', 'p0', 'v', '1', 'b']))}"
            if op in ("LIKE", "NOT LIKE"):
                return f"{lhs} {op} {quote(self.pick(['%1%', 'u__%', 'p_1%', '%']))}"
            return f"{lhs} {op} {self.key_literal(lit_table)}"
        if kind == TS:
            op = self.pick(["=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN"])
            if op in ("IN", "NOT IN"):
                return f"{lhs} {op} ({', '.join(self.timestamp() for _ in range(2))})"
            return f"{lhs} {op} {self.timestamp()}"
        if kind in (NUM, INT, CATI, "count"):
            op = self.pick(["=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN"])
            integer = kind in (INT, CATI, "count")

            def lit() -> str:
                if kind == "count":
                    return str(int(self.rng.integers(0, 5)))
                return self.number(table, column, integer)

            if op in ("IN", "NOT IN"):
                return f"{lhs} {op} ({', '.join(lit() for _ in range(int(self.rng.integers(1, 4))))})"
            return f"{lhs} {op} {lit()}"
        if kind == "real":
            op = self.pick(["=", "!=", "<", "<=", ">", ">="])
            return f"{lhs} {op} {self.agg_number('SUM')}"
        assert kind in (CATS, TEXT), kind
        op = self.pick(
            [
                "=",
                "!=",
                "<",
                ">=",
                "IN",
                "NOT IN",
                "CONTAINS",
                "NOT CONTAINS",
                "STARTS WITH",
                "NOT STARTS WITH",
                "ENDS WITH",
                "NOT ENDS WITH",
                "LIKE",
                "NOT LIKE",
            ]
        )
        if op in ("IN", "NOT IN"):
            vals = [quote(self.string(table, column)) for _ in range(int(self.rng.integers(1, 4)))]
            return f"{lhs} {op} ({', '.join(vals)})"
        if op in ("LIKE", "NOT LIKE"):
            return f"{lhs} {op} {quote(self.like_pattern(table, column))}"
        if op in ("CONTAINS", "NOT CONTAINS", "STARTS WITH", "NOT STARTS WITH", "ENDS WITH", "NOT ENDS WITH"):
            return f"{lhs} {op} {quote(self.fragment(table, column))}"
        return f"{lhs} {op} {quote(self.string(table, column))}"

    def tree(self, leaf: Any, depth: int = 0) -> str:
        r = self.rng.random()
        if depth >= 2 or r < 0.55:
            return str(leaf())
        if r < 0.7:
            return f"NOT ({self.tree(leaf, depth + 1)})"
        op = self.pick(["AND", "OR"])
        parts = [f"({self.tree(leaf, depth + 1)})" for _ in range(int(self.rng.integers(2, 4)))]
        return f" {op} ".join(parts)

    # ------------------------------------------------------------------ aggregations
    def links(self) -> list[tuple[str, str, bool]]:
        """(child table, link column, must name the link) of tables linking to users."""
        out = [("orders", "user_id", False), ("visits", "user_id", True), ("visits", "host_id", True)]
        if self.g.users_time:
            out.append(("users", "referrer", False))
        return out

    def window(self, forward: bool) -> str:
        unit = self.pick(UNITS)
        scale = UNIT_SCALE[unit]
        span = max(1, round(self.pick([3, 10, 30, 60]) * scale))
        if forward:
            start = 0 if self.coin(0.7) else int(self.rng.integers(0, max(2, span // 2)))
            end = start + int(self.rng.integers(1, span + 1))
            return f"{start}, {end}, {unit}"
        end = 0 if self.coin(0.6) else -int(self.rng.integers(0, max(2, span // 2)))
        start = "-INF" if self.coin(0.5) else str(end - int(self.rng.integers(1, span + 1)))
        return f"{start}, {end}, {unit}"

    def aggregation(self, forward: bool, funcs: list[str] | None = None) -> tuple[str, str, Ref | None, str]:
        """(text, result kind, column ref, func) of a random aggregation over a child of users."""
        table, link, named = self.pick(self.links())
        prefix = f"{table}[{link}]" if named or self.coin(0.2) else table
        func = self.pick(
            funcs or ["COUNT", "COUNT", "SUM", "AVG", "MIN", "MAX", "COUNT_DISTINCT", "FIRST", "LAST"]
        )
        ref: Ref | None = None
        if func == "COUNT" and self.coin(0.5):
            col_text = "*"
        else:
            kinds = {
                "COUNT": None,
                "SUM": SUMMABLE,
                "AVG": SUMMABLE,
                "MIN": NUMERIC | {TS},
                "MAX": NUMERIC | {TS},
                "COUNT_DISTINCT": {PK, FK, NUM, INT, CATS, CATI, BOOLC, BOOLN, TEXT, TS},
                "FIRST": {PK, FK, NUM, INT, CATS, CATI, BOOLC, BOOLN, TEXT, TS},
                "LAST": {PK, FK, NUM, INT, CATS, CATI, BOOLC, BOOLN, TEXT, TS},
            }[func]
            ref = self.ref(table, kinds=kinds)
            col_text = ref.text
        where = ""
        if self.coin(0.4):
            where = " WHERE " + self.tree(lambda: self.row_comparison(table))
        text = f"{func}({prefix}.{col_text}{where}, {self.window(forward)})"
        if func in ("COUNT", "COUNT_DISTINCT"):
            kind = "count"
        elif func in ("SUM", "AVG"):
            kind = "real"
        else:
            assert ref is not None
            kind = ref.kind
        return text, kind, ref, func

    def row_comparison(self, table: str) -> str:
        ref = self.ref(table)
        return self.comparison(f"{table}.{ref.text}", ref.kind, ref.table, ref.column, ref.parent)

    def agg_comparison(self, forward: bool) -> str:
        text, kind, ref, _ = self.aggregation(forward)
        if ref is None:
            return self.comparison(text, kind, "orders", "qty", None)
        return self.comparison(text, kind, ref.table, ref.column, ref.parent)

    def static_comparison(self) -> str:
        ref = self.ref("users")
        return self.comparison(f"users.{ref.text}", ref.kind, ref.table, ref.column, ref.parent)

    # ------------------------------------------------------------------ queries
    def target(self) -> str:
        r = self.rng.random()
        if r < 0.3:  # numeric aggregation: regression
            func = self.pick(["COUNT", "SUM", "AVG", "MIN", "MAX", "COUNT_DISTINCT", "FIRST", "LAST"])
            for _ in range(100):
                text, kind, _, _ = self.aggregation(True, [func])
                if kind in ("count", "real", NUM, INT):
                    return text
            return "COUNT(orders.*, 0, 30, days)"
        if r < 0.4:  # FIRST/LAST of a categorical or bool: multiclass / binary; int64 with CLASSIFY
            table = self.pick(["orders", "visits"])
            link = "user_id" if table == "orders" else self.pick(["user_id", "host_id"])
            ref = self.ref(table, kinds={CATS, CATI, BOOLC, BOOLN, INT})
            func = self.pick(["FIRST", "LAST"])
            text = f"{func}({table}[{link}].{ref.text}, {self.window(True)})"
            return text + (" CLASSIFY" if ref.kind == INT else "")
        if r < 0.5:  # LIST_DISTINCT: link prediction or multilabel
            if self.coin():
                choice = self.pick(
                    [
                        ("orders", "product_id", "user_id"),
                        ("orders", "product_id->products.brand_id", "user_id"),
                        ("visits", "user_id", "host_id"),
                        ("visits", "host_id", "user_id"),
                    ]
                )
                table, col, link = choice
                return f"LIST_DISTINCT({table}[{link}].{col}, {self.window(True)}) RANK TOP 5"
            col = self.pick(
                [
                    "status",
                    "code",
                    "paid",
                    "product_id->products.category",
                    "product_id->products.brand_id->brands.bcountry",
                ]
            )
            return f"LIST_DISTINCT(orders.{col}, {self.window(True)}) CLASSIFY"
        if r < 0.58:  # static target
            ref = self.ref("users", kinds={NUM, INT, CATS, BOOLC})
            return f"users.{ref.text}" + (" CLASSIFY" if ref.kind == INT and self.coin() else "")
        # a condition: binary
        return self.tree(lambda: self.agg_comparison(True) if self.coin(0.85) else self.static_comparison())

    def query(self) -> str:
        target = self.target()
        r = self.rng.random()
        if r < 0.8:
            entity = "FOR EACH users.user_id"
        elif r < 0.9:
            entity = f"FOR users.user_id = {self.key_literal_existing('users')}"
        else:
            keys = ", ".join(self.key_literal_existing("users") for _ in range(int(self.rng.integers(1, 5))))
            entity = f"FOR users.user_id IN ({keys})"
        text = f"PREDICT {target} {entity}"
        if self.coin(0.35):
            text += " WHERE " + self.tree(
                lambda: self.agg_comparison(False) if self.coin(0.6) else self.static_comparison()
            )
        if self.coin(0.25):
            text += " ASSUMING " + self.tree(lambda: self.agg_comparison(True))
        return text

    def key_literal_existing(self, table: str) -> str:
        k = self.pick(self.g.values[(table, SCHEMA_PK[table])])
        return quote(k) if isinstance(k, str) else str(k)


SCHEMA_PK = {t: next(c for c, (k, _) in cols.items() if k == PK) for t, cols in SCHEMA.items()}
