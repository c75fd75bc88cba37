"""An independent DuckDB implementation of PQL label semantics, for exactness tests.

SQL is generated from the validated query's AST: one correlated subquery per aggregation over a `pairs`
table (pid, ekey, t). User values (literals, window bounds) are bound as `?` parameters, never pasted
into SQL; table and column names are quoted identifiers. The semantics written out here:

- window: `a.time > p.t + start` (omitted for -INF) and `a.time <= p.t + end`, DuckDB interval
  arithmetic (calendar months clamp to the month's end);
- COUNT(*) / COUNT(x) / COUNT(DISTINCT x); SUM is COALESCE(SUM(x), 0); AVG, MIN, MAX as SQL;
- FIRST / LAST: the non-null value of the first / last row by (time, primary key);
- LIST_DISTINCT: list(DISTINCT x) of non-null x, NULL when there is none;
- a foreign-key column's value is its parent's key through a LEFT JOIN (a value with no parent row is
  NULL), parent paths are LEFT JOIN chains;
- conditions are SQL's own three-valued logic.
"""

from __future__ import annotations

import math
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from graph_engine.schema import GraphSchema
from relfm_core.pql import (
    AggFunc,
    Aggregation,
    BoolOp,
    ColumnRef,
    Comparison,
    CompOp,
    Condition,
    Hop,
    Literal,
    LiteralKind,
    Not,
    Query,
    TimeUnit,
)

INTERVAL_FN = {
    TimeUnit.SECONDS: "to_seconds",
    TimeUnit.MINUTES: "to_minutes",
    TimeUnit.HOURS: "to_hours",
    TimeUnit.DAYS: "to_days",
    TimeUnit.WEEKS: "to_weeks",
    TimeUnit.MONTHS: "to_months",
}


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def param_value(lit: Literal) -> Any:
    if lit.kind is LiteralKind.TIMESTAMP:
        assert isinstance(lit.value, int)
        return pd.Timestamp(lit.value, unit="ns").to_pydatetime()
    return lit.value


class SqlCompiler:
    def __init__(self, schema: GraphSchema, entity: str) -> None:
        self.schema = schema
        self.entity = entity
        self.params: list[Any] = []
        self.n = 0

    def alias(self) -> str:
        self.n += 1
        return f"a{self.n}"

    def param(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    # ------------------------------------------------------------------ columns
    def column(self, base: str, table: str, path: tuple[Hop, ...], column: str, joins: list[str]) -> str:
        """SQL for `column` reached from row `base` of `table` through `path` (joins appended)."""
        info = self.schema.tables
        hops = list(path)
        final = hops[-1].table if hops else table
        parent = info[final].foreign_keys.get(column)
        if parent is not None:  # a foreign key's value is its parent's key (NULL without a parent row)
            hops.append(Hop(column, parent))
            pk = info[parent].primary_key
            assert pk is not None
            column = pk
        current_alias = base
        for hop in hops:
            nxt = self.alias()
            pk = info[hop.table].primary_key
            assert pk is not None
            joins.append(
                f"LEFT JOIN {ident(hop.table)} AS {nxt} ON {nxt}.{ident(pk)} = {current_alias}.{ident(hop.fk)}"
            )
            current_alias = nxt
        return f"{current_alias}.{ident(column)}"

    # ------------------------------------------------------------------ conditions
    def comparison(self, lhs: str, node: Comparison) -> str:
        op = node.op
        if op is CompOp.IS_NULL:
            return f"({lhs} IS NULL)"
        if op is CompOp.IS_NOT_NULL:
            return f"({lhs} IS NOT NULL)"
        if op in (CompOp.IN, CompOp.NOT_IN):
            marks = ", ".join(self.param(param_value(v)) for v in node.values)
            return f"({lhs} {'NOT IN' if op is CompOp.NOT_IN else 'IN'} ({marks}))"
        value = param_value(node.value)
        negate = op.value.startswith("NOT ")
        base = op.value[4:] if negate else op.value
        if base == "CONTAINS":
            if self._is_list(node):
                sql = f"list_contains({lhs}, {self.param(value)})"
            else:
                sql = f"contains({lhs}, {self.param(value)})"
        elif base == "STARTS WITH":
            sql = f"starts_with({lhs}, {self.param(value)})"
        elif base == "ENDS WITH":
            sql = f"ends_with({lhs}, {self.param(value)})"
        elif base == "LIKE":
            sql = f"({lhs} LIKE {self.param(value)} ESCAPE '\\')"
        else:
            return f"({lhs} {op.value} {self.param(value)})"
        return f"(NOT {sql})" if negate else f"({sql})"

    def _is_list(self, node: Comparison) -> bool:
        lhs = node.lhs
        if isinstance(lhs, Aggregation):
            return False
        final = lhs.final_table
        return self.schema.tables[final].columns[lhs.column].dtype == "list_string"

    def row_condition(self, node: Condition, base: str, table: str, joins: list[str]) -> str:
        if isinstance(node, Comparison):
            assert isinstance(node.lhs, ColumnRef)
            lhs = self.column(base, table, node.lhs.path, node.lhs.column, joins)
            return self.comparison(lhs, node)
        if isinstance(node, BoolOp):
            return (
                "("
                + f" {node.op.value} ".join(self.row_condition(c, base, table, joins) for c in node.children)
                + ")"
            )
        assert isinstance(node, Not)
        return f"(NOT {self.row_condition(node.child, base, table, joins)})"

    def condition(self, node: Condition) -> str:
        """A condition per pair (target, entity filter, ASSUMING)."""
        if isinstance(node, Comparison):
            return self.comparison(self.operand(node.lhs), node)
        if isinstance(node, BoolOp):
            return "(" + f" {node.op.value} ".join(self.condition(c) for c in node.children) + ")"
        assert isinstance(node, Not)
        return f"(NOT {self.condition(node.child)})"

    # ------------------------------------------------------------------ operands
    def operand(self, node: Aggregation | ColumnRef) -> str:
        if isinstance(node, ColumnRef):
            e = self.alias()
            joins: list[str] = []
            value = self.column(e, self.entity, node.path, node.column, joins)
            pk = self.schema.tables[self.entity].primary_key
            assert pk is not None
            return (
                f"(SELECT {value} FROM {ident(self.entity)} AS {e} {' '.join(joins)} "
                f"WHERE {e}.{ident(pk)} = p.ekey)"
            )
        return self.aggregation(node)

    def bound(self, n: int, unit: TimeUnit) -> str:
        return f"(p.t + {INTERVAL_FN[unit]}(CAST({self.param(int(n))} AS BIGINT)))"

    def aggregation(self, agg: Aggregation, count_all: bool = False) -> str:
        a = self.alias()
        table = self.schema.tables[agg.table]
        time = table.time_column
        assert time is not None and agg.link_fk is not None
        joins: list[str] = []
        value = None if agg.is_star or count_all else self.column(a, agg.table, agg.path, agg.column, joins)
        where = [f"{a}.{ident(agg.link_fk)} = p.ekey"]
        if not (isinstance(agg.start, float) and math.isinf(agg.start)):
            where.append(f"{a}.{ident(time)} > {self.bound(int(agg.start), agg.unit)}")
        where.append(f"{a}.{ident(time)} <= {self.bound(agg.end, agg.unit)}")
        if agg.where is not None and not count_all:
            where.append(self.row_condition(agg.where, a, agg.table, joins))
        source = f"FROM {ident(agg.table)} AS {a} {' '.join(joins)} WHERE {' AND '.join(where)}"
        func = agg.func
        if value is None:
            return f"(SELECT count(*) {source})"
        if func is AggFunc.COUNT:
            return f"(SELECT count({value}) {source})"
        if func is AggFunc.SUM:
            return f"(SELECT coalesce(sum(CAST({value} AS DOUBLE)), 0) {source})"
        if func is AggFunc.AVG:
            return f"(SELECT avg(CAST({value} AS DOUBLE)) {source})"
        if func is AggFunc.MIN:
            return f"(SELECT min({value}) {source})"
        if func is AggFunc.MAX:
            return f"(SELECT max({value}) {source})"
        if func is AggFunc.COUNT_DISTINCT:
            return f"(SELECT count(DISTINCT {value}) {source})"
        pk = table.primary_key
        assert pk is not None
        if func in (AggFunc.FIRST, AggFunc.LAST):
            order = "ASC" if func is AggFunc.FIRST else "DESC"
            return (
                f"(SELECT {value} {source} AND {value} IS NOT NULL "
                f"ORDER BY {a}.{ident(time)} {order}, {a}.{ident(pk)} {order} LIMIT 1)"
            )
        return f"(SELECT list(DISTINCT {value} ORDER BY {value}) {source} AND {value} IS NOT NULL)"

    def target(self, query: Query) -> str:
        t = query.target
        if isinstance(t, Aggregation | ColumnRef):
            return self.operand(t)
        return self.condition(t)


class DuckRef:
    """A DuckDB database holding the same tables as a test graph."""

    def __init__(self, tables: dict[str, pa.Table], schema: GraphSchema) -> None:
        self.con = duckdb.connect()
        self.schema = schema
        for name, table in tables.items():
            self.con.register("_src", table)
            self.con.execute(f"CREATE TABLE {ident(name)} AS SELECT * FROM _src")
            self.con.unregister("_src")

    def run(self, query: Query, keys: list[Any], anchors: np.ndarray, what: str) -> list[Any]:
        """`what` (target | assuming | filter | activity) for each (key, anchor) pair, in order."""
        pairs = pd.DataFrame(
            {
                "pid": np.arange(len(keys), dtype=np.int64),
                "ekey": pd.Series(keys, dtype=object),
                "t": pd.Series(np.asarray(anchors, dtype="datetime64[ns]").astype("datetime64[us]")),
            }
        )
        key_type = "VARCHAR" if any(isinstance(k, str) for k in keys) else "BIGINT"
        self.con.register("_pairs", pairs)
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE pairs AS SELECT pid, CAST(ekey AS {key_type}) AS ekey, "
            "CAST(t AS TIMESTAMP) AS t FROM _pairs"
        )
        self.con.unregister("_pairs")
        comp = SqlCompiler(self.schema, query.entity.table)
        if what == "target":
            expr = comp.target(query)
        elif what == "assuming":
            assert query.assuming is not None
            expr = comp.condition(query.assuming)
        elif what == "filter":
            assert query.entity_filter is not None
            expr = comp.condition(query.entity_filter)
        else:
            aggs = [n for n in _aggregations(query.target)]
            expr = comp.aggregation(aggs[0], count_all=True)
        sql = f"SELECT p.pid, {expr} AS y FROM pairs AS p ORDER BY p.pid"
        return [r[1] for r in self.con.execute(sql, comp.params).fetchall()]

    def visible_entities(self, anchor: np.datetime64) -> list[Any]:
        """Keys of entities that exist at `anchor` (own time <= anchor; static tables: all)."""
        info = self.schema.tables["users"]
        pk = info.primary_key
        assert pk is not None
        if info.time_column is None:
            rows = self.con.execute(f"SELECT {ident(pk)} FROM users").fetchall()
        else:
            t = pd.Timestamp(anchor).to_pydatetime()
            rows = self.con.execute(
                f"SELECT {ident(pk)} FROM users WHERE {ident(info.time_column)} <= ?", [t]
            ).fetchall()
        return [r[0] for r in rows]


def _aggregations(node: Any) -> list[Aggregation]:
    from relfm_core.pql import iter_aggregations

    return list(iter_aggregations(node))
