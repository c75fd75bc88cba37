"""A parsed query checked against a graph schema, with its links resolved and its task type decided.

What this guarantees to the label engine (it may rely on all of it without re-checking):
- every table, column, link and `->` hop exists; every aggregated table is a direct child of the
  entity table through `Aggregation.link_fk` and has a time column;
- aggregations fit their column (SUM/AVG numerical, MIN/MAX numerical or timestamp, LIST_DISTINCT a
  foreign key or categorical, `*` only with COUNT) and literals fit what they are compared with
  (timestamps become `LiteralKind.TIMESTAMP` nanoseconds);
- windows obey the time rules of where they appear: targets and ASSUMING look forward (start >= 0),
  entity filters look back (end <= 0, start may be -INF);
- conditions contain only Comparison / BoolOp / Not (bare boolean columns became `= TRUE`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from graph_engine.schema import ColumnInfo, GraphSchema, TableInfo
from graph_engine.spec import SemanticType
from relfm_core.pql.errors import QueryError, did_you_mean
from relfm_core.pql.format import format_literal, format_operand, format_operand_short
from relfm_core.pql.nodes import (
    EQUALITY_OPS,
    NULL_OPS,
    STRING_OPS,
    AggFunc,
    Aggregation,
    BoolOp,
    ColumnRef,
    Comparison,
    CompOp,
    Condition,
    EntitySpec,
    Hop,
    Literal,
    LiteralKind,
    Not,
    Operand,
    Pos,
    Query,
    Target,
    TaskType,
)
from relfm_core.pql.parser import parse

NUMERIC_DTYPES = frozenset({"int64", "float64"})
LIST_DTYPES = frozenset({"list_string", "list_float"})
_DATE_RE = re.compile(r"\d{4}-\d{2}(-\d{2}([ T]\d{2}(:\d{2}(:\d{2}(\.\d{1,9})?)?)?)?)?")


def validate(query: str | Query, schema: GraphSchema) -> Query:
    """Parses (if given text) and checks `query` against `schema`; returns the resolved, typed query."""
    parsed = parse(query) if isinstance(query, str) else query
    if not isinstance(parsed, Query):
        raise QueryError(f"expected query text or a Query, got {type(query).__name__}")
    return _Validator(schema, parsed).run()


@dataclass(frozen=True)
class ValueType:
    """What an operand evaluates to. `dtype` is a storage dtype, or 'list' for LIST_DISTINCT."""

    dtype: str
    stype: SemanticType | None
    fk_target: str | None = None  # LIST_DISTINCT over a foreign key: the table whose rows are listed

    @property
    def is_list(self) -> bool:
        return self.dtype == "list"


class _Scope(StrEnum):
    TARGET = "the target"
    FILTER = "WHERE"
    ASSUMING = "ASSUMING"
    AGG_WHERE = "an aggregation's WHERE"


@dataclass(frozen=True)
class _Context:
    scope: _Scope
    agg: Aggregation | None = None  # the enclosing aggregation, inside its WHERE


def parse_timestamp(text: str) -> int | None:
    """'YYYY-MM-DD[ HH[:MM[:SS[.f]]]]' (or 'YYYY-MM') as int64 nanoseconds, None if it is not one."""
    if not _DATE_RE.fullmatch(text) or not 1678 <= int(text[:4]) <= 2261:
        return None
    try:
        return int(np.datetime64(text.replace(" ", "T"), "ns").astype(np.int64))
    except (ValueError, OverflowError):
        return None


def _kind_text(lit: Literal) -> str:
    if lit.kind is LiteralKind.STRING:
        return f"the string {format_literal(lit)}"
    if lit.kind in (LiteralKind.INT, LiteralKind.FLOAT):
        return f"the number {format_literal(lit)}"
    if lit.kind is LiteralKind.BOOL:
        return f"the boolean {format_literal(lit)}"
    return format_literal(lit)


def _type_text(vt: ValueType) -> str:
    if vt.stype is None or vt.stype.value == vt.dtype:
        return vt.dtype
    return f"{vt.stype.value} ({vt.dtype})"


class _Validator:
    def __init__(self, schema: GraphSchema, query: Query) -> None:
        self.schema = schema
        self.query = query
        self.entity_table = query.entity.table

    def run(self) -> Query:
        q = self.query
        entity = self.entity(q.entity)
        target, value_type = self.target(q.target)
        entity_filter = (
            self.condition(q.entity_filter, _Context(_Scope.FILTER)) if q.entity_filter is not None else None
        )
        assuming = self.condition(q.assuming, _Context(_Scope.ASSUMING)) if q.assuming is not None else None
        task_type, link_table = self.task(target, value_type)
        return replace(
            q,
            target=target,
            entity=entity,
            entity_filter=entity_filter,
            assuming=assuming,
            task_type=task_type,
            link_target_table=link_table,
        )

    # ------------------------------------------------------------------ names
    def table(self, name: str, pos: Pos) -> TableInfo:
        info = self.schema.tables.get(name)
        if info is None:
            raise QueryError(f"unknown table '{name}'", pos, did_you_mean(name, self.schema.tables))
        return info

    @staticmethod
    def column(table: TableInfo, name: str, pos: Pos) -> ColumnInfo:
        info = table.columns.get(name)
        if info is None:
            raise QueryError(
                f"unknown column '{table.name}.{name}'",
                pos,
                did_you_mean(name, table.columns, prefix=f"{table.name}."),
            )
        return info

    def walk_path(self, start: TableInfo, path: tuple[Hop, ...], span: Callable[[str], Pos]) -> TableInfo:
        """Follows `fk->parent` hops from `start`; returns the last table."""
        current = start
        for i, hop in enumerate(path):
            pos = span(f"path.{i}")
            self.column(current, hop.fk, pos)
            parent = current.foreign_keys.get(hop.fk)
            if parent is None:
                fks = ", ".join(current.foreign_keys)
                raise QueryError(
                    f"'{current.name}.{hop.fk}' is not a foreign key, so '->' cannot follow it",
                    pos,
                    f"foreign keys of '{current.name}': {fks}" if fks else f"'{current.name}' has none",
                )
            if hop.table != parent:
                raise QueryError(
                    f"foreign key '{current.name}.{hop.fk}' points to '{parent}', not '{hop.table}'",
                    span(f"path.{i}.table"),
                    f"write {current.name}.{hop.fk}->{parent}",
                )
            if parent not in self.schema.tables:
                raise QueryError(
                    f"foreign key '{current.name}.{hop.fk}' points to '{parent}', which is not in the graph",
                    pos,
                )
            current = self.schema.tables[parent]
        return current

    # ------------------------------------------------------------------ entity
    def entity(self, entity: EntitySpec) -> EntitySpec:
        table = self.table(entity.table, entity.span("table"))
        pk = table.primary_key
        if pk is None:
            raise QueryError(
                f"table '{table.name}' has no primary key, so it cannot be the entity table",
                entity.span("table"),
            )
        if entity.key != pk:
            if entity.key not in table.columns:
                raise QueryError(
                    f"unknown column '{table.name}.{entity.key}'",
                    entity.span("key"),
                    f"the primary key is '{table.name}.{pk}'",
                )
            raise QueryError(
                f"'{table.name}.{entity.key}' is not the primary key of '{table.name}'",
                entity.span("key"),
                f"did you mean '{table.name}.{pk}'?",
            )
        key_info = self.column(table, pk, entity.span("key"))
        key_type = ValueType(key_info.dtype, key_info.stype)
        for v in entity.values:
            fits = {
                "int64": v.kind is LiteralKind.INT,
                "float64": v.kind in (LiteralKind.INT, LiteralKind.FLOAT),
                "string": v.kind is LiteralKind.STRING,
            }.get(key_info.dtype, True)
            if not fits:
                raise QueryError(
                    f"the key '{table.name}.{pk}' is {key_info.dtype} but the value is {_kind_text(v)}",
                    v.pos,
                )
        values = tuple(
            self.literal(key_type, CompOp.EQ, v, f"{table.name}.{pk}", entity.span("key"))
            for v in entity.values
        )
        return replace(entity, values=values)

    # ------------------------------------------------------------------ expressions
    def target(self, node: Target) -> tuple[Target, ValueType | None]:
        ctx = _Context(_Scope.TARGET)
        if isinstance(node, Aggregation | ColumnRef):
            return self.operand(node, ctx)
        return self.condition(node, ctx), None

    def condition(self, node: Target, ctx: _Context) -> Condition:
        if isinstance(node, BoolOp):
            return replace(node, children=tuple(self.condition(c, ctx) for c in node.children))
        if isinstance(node, Not):
            return replace(node, child=self.condition(node.child, ctx))
        if isinstance(node, Aggregation | ColumnRef):  # only in hand-built trees; the parser wraps these
            node = Comparison(node, CompOp.EQ, (Literal(LiteralKind.BOOL, True, node.pos),), True, node.pos)
        return self.comparison(node, ctx)

    def comparison(self, node: Comparison, ctx: _Context) -> Comparison:
        lhs, vt = self.operand(node.lhs, ctx)
        text = format_operand_short(node.lhs)  # as the user wrote it (links not filled in)
        if vt.is_list:
            raise QueryError(
                f"'{text}' is a list and cannot be compared",
                lhs.pos,
                "use LIST_DISTINCT as the whole target, with RANK TOP k or CLASSIFY",
            )
        if node.implicit and vt.dtype != "bool":
            example = f"{text} > 0" if vt.dtype in NUMERIC_DTYPES else f"{text} IS NOT NULL"
            raise QueryError(f"'{text}' is not a condition", lhs.pos, f"compare it, e.g. {example}")
        values = tuple(self.literal(vt, node.op, v, text, lhs.pos) for v in node.values)
        return replace(node, lhs=lhs, values=() if node.op in NULL_OPS else values)

    def operand(self, node: Operand, ctx: _Context) -> tuple[Operand, ValueType]:
        if isinstance(node, Aggregation):
            return self.aggregation(node, ctx)
        return self.column_ref(node, ctx)

    def literal(self, vt: ValueType, op: CompOp, lit: Literal, what: str, pos: Pos) -> Literal:
        """`lit` checked against the type of `what` (converted for timestamps)."""
        where = lit.pos if lit.pos.line else pos
        dtype = vt.dtype
        if dtype in NUMERIC_DTYPES:
            if op in STRING_OPS:
                raise QueryError(f"{op.value} needs a string, but '{what}' is {_type_text(vt)}", where)
            if lit.kind not in (LiteralKind.INT, LiteralKind.FLOAT):
                hint = None
                if isinstance(lit.value, str) and re.fullmatch(r"[+-]?\d+(\.\d+)?", lit.value.strip()):
                    hint = f"write the number without quotes: {lit.value.strip()}"
                raise QueryError(
                    f"'{what}' is {_type_text(vt)} but is compared with {_kind_text(lit)}", where, hint
                )
            return lit
        if dtype == "bool":
            if op not in EQUALITY_OPS:
                raise QueryError(f"'{op.value}' does not apply to the boolean '{what}'", where, "use = or !=")
            if lit.kind is not LiteralKind.BOOL:
                raise QueryError(
                    f"'{what}' is boolean but is compared with {_kind_text(lit)}", where, "use TRUE or FALSE"
                )
            return lit
        if dtype == "string":
            if lit.kind is not LiteralKind.STRING:
                raise QueryError(
                    f"'{what}' is {_type_text(vt)} but is compared with {_kind_text(lit)}",
                    where,
                    f"quote it: '{format_literal(lit)}'",
                )
            return lit
        if dtype == "timestamp":
            if op in STRING_OPS:
                raise QueryError(f"{op.value} needs a string, but '{what}' is a timestamp", where)
            if lit.kind is LiteralKind.TIMESTAMP:
                return lit
            if lit.kind is not LiteralKind.STRING:
                raise QueryError(
                    f"'{what}' is a timestamp but is compared with {_kind_text(lit)}",
                    where,
                    "write a quoted date, e.g. '2020-01-31'",
                )
            assert isinstance(lit.value, str)
            ns = parse_timestamp(lit.value)
            if ns is None:
                raise QueryError(
                    f"'{lit.value}' is not a date",
                    where,
                    "write 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS' (years 1678 to 2261)",
                )
            return Literal(LiteralKind.TIMESTAMP, ns, lit.pos)
        if dtype == "list_string":
            if op not in (CompOp.CONTAINS, CompOp.NOT_CONTAINS):
                raise QueryError(
                    f"'{op.value}' does not apply to the list column '{what}'",
                    where,
                    "use CONTAINS, NOT CONTAINS or IS NULL",
                )
            if lit.kind is not LiteralKind.STRING:
                raise QueryError(f"'{what}' holds strings but is compared with {_kind_text(lit)}", where)
            return lit
        raise QueryError(f"'{what}' ({dtype}) cannot be compared", where, "only IS NULL applies")

    # ------------------------------------------------------------------ column references
    def column_ref(self, ref: ColumnRef, ctx: _Context) -> tuple[ColumnRef, ValueType]:
        table = self.table(ref.table, ref.span("table"))
        text = format_operand(replace(ref, link=None))
        if ctx.scope is _Scope.AGG_WHERE:
            agg = ctx.agg
            assert agg is not None
            if ref.table != agg.table:
                raise QueryError(
                    f"a condition inside {agg.func.value}({agg.table}...) can only use columns of "
                    f"'{agg.table}' (or its parents via ->), not '{ref.table}'",
                    ref.span("table"),
                )
            if ref.link is not None and ref.link != agg.link_fk:
                raise QueryError(
                    f"link '{ref.table}[{ref.link}]' differs from the aggregation's link "
                    f"'{agg.table}[{agg.link_fk}]'",
                    ref.span("link"),
                    f"write {text}",
                )
        else:
            if ref.link is not None:
                raise QueryError(
                    f"a link like '{ref.table}[{ref.link}]' only names how an aggregated table reaches "
                    "the entity",
                    ref.span("link"),
                    f"aggregate it, e.g. COUNT({ref.table}[{ref.link}].*, 0, 30, days)",
                )
            if ctx.scope is _Scope.ASSUMING:
                raise QueryError(
                    f"ASSUMING is a condition on the future, but '{text}' is a static column",
                    ref.pos,
                    "move it to WHERE",
                )
            if ref.table != self.entity_table:
                raise QueryError(
                    f"static column '{text}' is not on the entity table '{self.entity_table}'",
                    ref.pos,
                    self.static_hint(ref),
                )
        final = self.walk_path(table, ref.path, ref.span)
        if ref.column == "*":
            raise QueryError("'*' only counts rows, inside COUNT(...)", ref.span("column"))
        info = self.column(final, ref.column, ref.span("column"))
        return replace(ref, link=None), ValueType(info.dtype, info.stype)

    def static_hint(self, ref: ColumnRef) -> str:
        entity = self.schema.tables[self.entity_table]
        for fk, parent in entity.foreign_keys.items():
            if parent == ref.table:
                return f"reach it through a foreign key: {self.entity_table}.{fk}->{format_operand(ref)}"
        if any(c == ref.table for c, _ in self.schema.children_of(self.entity_table)):
            return f"aggregate it over a window, e.g. COUNT({ref.table}.*, 0, 30, days) > 0"
        return f"static columns come from '{self.entity_table}' or its parents (via ->)"

    # ------------------------------------------------------------------ aggregations
    def aggregation(self, agg: Aggregation, ctx: _Context) -> tuple[Aggregation, ValueType]:
        if ctx.scope is _Scope.AGG_WHERE:
            raise QueryError(
                "aggregations cannot be nested inside another aggregation's WHERE",
                agg.pos,
                "filter the aggregated rows on their own columns",
            )
        table = self.table(agg.table, agg.span("table"))
        link = self.link(agg, table)
        if table.time_column is None:
            raise QueryError(
                f"table '{table.name}' has no time column, so it cannot be aggregated over a time window",
                agg.span("table"),
            )
        final = self.walk_path(table, agg.path, agg.span)
        info = None if agg.column == "*" else self.column(final, agg.column, agg.span("column"))
        vt = self.aggregate_type(agg, final, info, link)
        self.window(agg, ctx)
        resolved = replace(agg, link_fk=link, where=None)
        where = (
            self.condition(agg.where, _Context(_Scope.AGG_WHERE, resolved)) if agg.where is not None else None
        )
        return replace(resolved, where=where), vt

    def link(self, agg: Aggregation, table: TableInfo) -> str:
        """The foreign key of `table` that points at the entity table (named, or the only one)."""
        entity = self.entity_table
        links = [c for c, p in table.foreign_keys.items() if p == entity]
        named = agg.link_fk
        if named is not None:
            pos = agg.span("link")
            if named not in table.columns:
                raise QueryError(
                    f"unknown column '{table.name}.{named}'",
                    pos,
                    did_you_mean(named, links or table.foreign_keys or table.columns),
                )
            parent = table.foreign_keys.get(named)
            if parent is None:
                raise QueryError(
                    f"'{table.name}.{named}' is not a foreign key, so it cannot link '{table.name}' to "
                    f"'{entity}'",
                    pos,
                    self.links_hint(table.name, links),
                )
            if parent != entity:
                raise QueryError(
                    f"link '{table.name}[{named}]' points to '{parent}', not to the entity table '{entity}'",
                    pos,
                    self.links_hint(table.name, links),
                )
            return named
        if not links:
            children = sorted({c for c, _ in self.schema.children_of(entity)})
            raise QueryError(
                f"table '{table.name}' has no foreign key to the entity table '{entity}'",
                agg.span("table"),
                f"tables that link to '{entity}': {', '.join(children)}"
                if children
                else f"no table links to '{entity}'",
            )
        if len(links) > 1:
            raise QueryError(
                f"table '{table.name}' links to '{entity}' through several foreign keys ({', '.join(links)})",
                agg.span("table"),
                self.links_hint(table.name, links),
            )
        return links[0]

    @staticmethod
    def links_hint(table: str, links: list[str]) -> str | None:
        if not links:
            return None
        return "name one: " + " or ".join(f"{table}[{link}]" for link in links)

    def aggregate_type(
        self, agg: Aggregation, final: TableInfo, info: ColumnInfo | None, link: str
    ) -> ValueType:
        func = agg.func
        if info is None:  # '*': the parser allows it with COUNT only
            return ValueType("int64", SemanticType.numerical)
        col = f"{final.name}.{info.name}"
        vt = ValueType(info.dtype, info.stype)
        pos = agg.span("column")
        if info.dtype in LIST_DTYPES and func is not AggFunc.COUNT:
            raise QueryError(f"{func.value} does not apply to the list column '{col}' ({info.dtype})", pos)
        numeric = info.dtype in NUMERIC_DTYPES and info.stype is SemanticType.numerical
        if func in (AggFunc.COUNT, AggFunc.COUNT_DISTINCT):
            return ValueType("int64", SemanticType.numerical)
        if func in (AggFunc.SUM, AggFunc.AVG):
            if not (numeric or info.dtype == "bool"):
                raise QueryError(
                    f"{func.value} needs a numerical column, but '{col}' is {_type_text(vt)}",
                    pos,
                    "COUNT, COUNT_DISTINCT, FIRST and LAST work on any column",
                )
            dtype = "int64" if func is AggFunc.SUM and info.dtype != "float64" else "float64"
            return ValueType(dtype, SemanticType.numerical)
        if func in (AggFunc.MIN, AggFunc.MAX):
            if not (numeric or info.dtype == "timestamp"):
                raise QueryError(
                    f"{func.value} needs a numerical or timestamp column, but '{col}' is {_type_text(vt)}",
                    pos,
                    "FIRST and LAST work on any column",
                )
            return vt
        if func in (AggFunc.FIRST, AggFunc.LAST):
            return vt
        # LIST_DISTINCT
        if not agg.path and info.name == link:
            raise QueryError(
                f"LIST_DISTINCT over the link column '{col}' lists the entity itself",
                pos,
                f"follow a foreign key instead, e.g. {agg.table}.<fk>->parent.<column>",
            )
        target = final.foreign_keys.get(info.name)
        if target is not None:
            return ValueType("list", info.stype, fk_target=target)
        if info.stype is SemanticType.categorical:
            return ValueType("list", info.stype)
        raise QueryError(
            f"LIST_DISTINCT needs a foreign key or a categorical column, but '{col}' is {_type_text(vt)}",
            pos,
        )

    def window(self, agg: Aggregation, ctx: _Context) -> None:
        bound = "-INF" if agg.start == float("-inf") else str(int(agg.start))
        if ctx.scope is _Scope.TARGET and agg.start < 0:
            raise QueryError(
                f"a target window looks into the future: its start must be >= 0, got {bound}",
                agg.span("start"),
                "negative and -INF windows belong in WHERE",
            )
        if ctx.scope is _Scope.FILTER and agg.end > 0:
            raise QueryError(
                f"WHERE filters look back: a window end must be <= 0, got {agg.end}",
                agg.span("end"),
                "conditions on the future belong in ASSUMING",
            )
        if ctx.scope is _Scope.ASSUMING and agg.start < 0:
            raise QueryError(
                f"ASSUMING is about the future: a window start must be >= 0, got {bound}",
                agg.span("start"),
                "conditions on the past belong in WHERE",
            )

    # ------------------------------------------------------------------ task type
    def task(self, target: Target, vt: ValueType | None) -> tuple[TaskType, str | None]:
        q = self.query
        task_pos = q.span("task")
        if vt is None or not isinstance(target, Aggregation | ColumnRef):
            if q.rank_top_k is not None:
                raise QueryError(
                    "RANK TOP k needs a LIST_DISTINCT(...) target, but this target is a condition (binary)",
                    task_pos,
                )
            if q.classify:
                raise QueryError(
                    "CLASSIFY is for categorical targets, but this target is a condition (already binary)",
                    task_pos,
                    "drop CLASSIFY",
                )
            return TaskType.BINARY, None
        written = self.query.target
        text = format_operand_short(written if isinstance(written, Aggregation | ColumnRef) else target)
        if vt.is_list:
            if vt.fk_target is not None:
                if q.classify:
                    raise QueryError(
                        f"'{text}' lists rows of '{vt.fk_target}' through a foreign key: rank them with "
                        "RANK TOP k, not CLASSIFY",
                        task_pos,
                        "e.g. RANK TOP 10",
                    )
                if q.rank_top_k is None:
                    raise QueryError(
                        f"'{text}' lists rows of '{vt.fk_target}': link prediction needs RANK TOP k",
                        target.pos,
                        "add e.g. RANK TOP 10 after the target",
                    )
                return TaskType.LINK_PREDICTION, vt.fk_target
            if q.rank_top_k is not None:
                raise QueryError(
                    f"RANK TOP k ranks rows of a table through a foreign key, but '{text}' lists categories",
                    task_pos,
                    "use CLASSIFY for multilabel classification",
                )
            if not q.classify:
                raise QueryError(
                    f"'{text}' lists categories: multilabel classification needs CLASSIFY",
                    target.pos,
                    "add CLASSIFY after the target",
                )
            return TaskType.MULTILABEL, None
        if q.rank_top_k is not None:
            raise QueryError(
                f"RANK TOP k needs a LIST_DISTINCT(...) target, but '{text}' is {_type_text(vt)}",
                task_pos,
                "use LIST_DISTINCT over a foreign key to rank linked rows",
            )
        if q.classify:
            keeps_values = isinstance(target, ColumnRef) or target.func in (AggFunc.FIRST, AggFunc.LAST)
            categorical_looking = vt.stype is SemanticType.categorical or (
                vt.dtype == "int64" and vt.stype is SemanticType.numerical
            )
            if not keeps_values:
                raise QueryError(
                    f"CLASSIFY needs a categorical target, but '{text}' is a number",
                    task_pos,
                    "compare it for a binary task, or drop CLASSIFY for regression",
                )
            if not categorical_looking:
                raise QueryError(
                    f"CLASSIFY needs a categorical target, but '{text}' is {_type_text(vt)}", task_pos
                )
            return TaskType.MULTICLASS, None
        if vt.dtype == "bool":
            return TaskType.BINARY, None
        if vt.stype is SemanticType.categorical:
            return TaskType.MULTICLASS, None
        if vt.stype is SemanticType.numerical and vt.dtype in NUMERIC_DTYPES:
            return TaskType.REGRESSION, None
        if vt.dtype == "timestamp":
            raise QueryError(
                f"'{text}' is a timestamp and cannot be predicted directly",
                target.pos,
                f"predict a condition on it, e.g. {text} > '2020-01-01'",
            )
        if vt.stype is SemanticType.text:
            raise QueryError(
                f"'{text}' is free text and cannot be predicted",
                target.pos,
                "predict a condition on it (=, CONTAINS, LIKE) instead",
            )
        if vt.stype is SemanticType.id:
            raise QueryError(
                f"'{text}' is an id column and cannot be predicted as a value",
                target.pos,
                "to predict links, use LIST_DISTINCT(...) RANK TOP k",
            )
        raise QueryError(f"'{text}' is {_type_text(vt)} and cannot be a target", target.pos)
