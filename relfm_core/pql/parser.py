"""Text to syntax tree, with no graph schema: grammar, names of functions and units, literal ranges.

lark does the parsing (LALR, grammar in pql.lark); a small tree walk turns lark's tree into `nodes`.
Every failure, lark's included, leaves as a one-line `QueryError` with a line:column and, where it
helps, what was expected or the closest valid word.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternRE, PatternStr

from relfm_core.pql.errors import QueryError, did_you_mean
from relfm_core.pql.nodes import (
    NEGATIONS,
    STRING_OPS,
    AggFunc,
    Aggregation,
    BoolOp,
    BoolOpKind,
    ColumnRef,
    Comparison,
    CompOp,
    EntityMode,
    EntitySpec,
    Hop,
    Literal,
    LiteralKind,
    Not,
    Operand,
    Pos,
    Query,
    Target,
    TimeUnit,
)

# Conditions nested deeper than this are refused, so validation and printing never hit Python's
# recursion limit.
MAX_DEPTH = 200
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

UNIT_NAMES: dict[str, TimeUnit] = {
    **{u.value: u for u in TimeUnit},
    **{u.value[:-1]: u for u in TimeUnit},  # singular forms: day, month, ...
}

# How expected terminals read in error messages.
_TERMINAL_WORDS = {
    "$END": "end of query",
    "NAME": "a name",
    "QUOTED_NAME": "a name",
    "SIGNED_NUMBER": "a number",
    "STRING": "a string",
    "INF": "-INF",
}

_STRING_OP_WORDS = {
    "CONTAINS": CompOp.CONTAINS,
    "STARTS": CompOp.STARTS_WITH,
    "ENDS": CompOp.ENDS_WITH,
    "LIKE": CompOp.LIKE,
}

_INT_RE = re.compile(r"[+-]?\d+")

_Child = Tree[Token] | Token | None


@functools.cache
def _lark() -> Lark:
    grammar = resources.files("relfm_core.pql").joinpath("pql.lark").read_text(encoding="utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def parse(text: str) -> Query:
    """Parses PQL text into an unvalidated `Query` (no schema: links unresolved, no task type)."""
    if not isinstance(text, str):
        raise QueryError(f"a query must be text, got {type(text).__name__}")
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text) from None
    try:
        return _Builder(text).query(tree)
    except RecursionError:
        raise QueryError("query nests too deeply") from None


# ---------------------------------------------------------------------------------------- syntax errors
def _end_pos(text: str) -> Pos:
    body = text.rstrip()
    line = body.count("\n") + 1
    return Pos(line, len(body) - (body.rfind("\n") + 1) + 1)


def _keyword(name: str) -> str | None:
    """The keyword a terminal stands for (`_TOP` -> 'TOP'), or None for names, numbers, symbols."""
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return None
    found = re.fullmatch(r"([A-Z]+)\\b", pattern.value) if isinstance(pattern, PatternRE) else None
    return found.group(1) if found else None


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    keyword = _keyword(name)
    if keyword is not None:
        return keyword
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return name
    return f"'{pattern.value}'" if isinstance(pattern, PatternStr) else name.lstrip("_").lower()


def _expected_hint(expected: Iterable[str], found: str | None) -> str | None:
    names = sorted(set(expected))
    words = sorted({_describe_terminal(n) for n in names})
    if not words or len(words) > 10:
        return None
    hint = "expected " + (words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1])
    if found is not None and re.fullmatch(r"[A-Za-z_]\w*", found):
        keywords = [k for k in (_keyword(n) for n in names) if k is not None]
        mean = did_you_mean(found, keywords)
        if mean is not None:
            hint += f"; {mean}"
    return hint


def _syntax_error(e: UnexpectedInput, text: str) -> QueryError:
    if isinstance(e, UnexpectedToken):
        token = e.token
        try:
            expected: Iterable[str] = e.accepts or e.expected
        except Exception:  # lark recomputes `accepts` by replaying the parser; never let that escape
            expected = e.expected
        if token.type == "$END":
            return QueryError(
                "syntax error: unexpected end of query", _end_pos(text), _expected_hint(expected, None)
            )
        value = str(token.value)
        shown = value if len(value) <= 30 else value[:27] + "..."
        shown = shown if token.type == "STRING" else f"'{shown}'"
        return QueryError(
            f"syntax error: unexpected {shown}",
            Pos(int(token.line or 1), int(token.column or 1)),
            _expected_hint(expected, value),
        )
    if isinstance(e, UnexpectedCharacters):
        pos = Pos(int(e.line), int(e.column))
        char = e.char
        if char in "'\"":
            return QueryError("syntax error: unterminated string", pos, f"close it with {char}")
        if char == "`":
            return QueryError("syntax error: unterminated quoted name", pos, "close it with `")
        return QueryError(
            f"syntax error: unexpected character {char!r}", pos, _expected_hint(e.allowed or (), None)
        )
    if isinstance(e, UnexpectedEOF):
        return QueryError(
            "syntax error: unexpected end of query", _end_pos(text), _expected_hint(e.expected, None)
        )
    return QueryError("syntax error", _end_pos(text))


# ---------------------------------------------------------------------------------------- tree walk
def _pos(node: Tree[Token] | Token) -> Pos:
    if isinstance(node, Token):
        return Pos(int(node.line or 1), int(node.column or 1))
    meta = node.meta
    if getattr(meta, "empty", True):
        return Pos(1, 1)
    return Pos(meta.line, meta.column)


def _tree(node: _Child) -> Tree[Token]:
    assert isinstance(node, Tree), node
    return node


def _trees(children: Sequence[_Child]) -> list[Tree[Token]]:
    return [c for c in children if isinstance(c, Tree)]


def _token(node: _Child) -> Token:
    assert isinstance(node, Token), node
    return node


class _Builder:
    """Walks lark's tree into nodes, checking what needs no schema."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.depth = 0

    # ------------------------------------------------------------------ query
    def query(self, tree: Tree[Token]) -> Query:
        expr, task, entity, where, assuming = tree.children
        target = self.expr(_tree(expr), top=True)
        rank_top_k: int | None = None
        classify = False
        spans: list[tuple[str, Pos]] = []
        if task is not None:
            task = _tree(task)
            spans.append(("task", _pos(task)))
            if task.data == "rank_top":
                k_token = _token(task.children[1])
                if not _INT_RE.fullmatch(str(k_token)) or int(str(k_token)) <= 0:
                    raise QueryError(
                        f"RANK TOP needs a positive whole number, got {k_token}",
                        _pos(k_token),
                        "e.g. RANK TOP 10",
                    )
                rank_top_k = int(str(k_token))
            else:
                classify = True
        entity_spec = self.entity(_tree(entity))
        entity_filter = self.condition(_tree(_tree(where).children[0])) if where is not None else None
        assumed = self.condition(_tree(_tree(assuming).children[0])) if assuming is not None else None
        return Query(
            target=target,
            entity=entity_spec,
            entity_filter=entity_filter,
            assuming=assumed,
            rank_top_k=rank_top_k,
            classify=classify,
            source=self.text,
            pos=_pos(tree),
            spans=tuple(spans),
        )

    def entity(self, tree: Tree[Token]) -> EntitySpec:
        parts = _trees(tree.children)
        key_ref = parts[0]
        table_node, key_node = _trees(key_ref.children)
        spans = (("table", _pos(table_node)), ("key", _pos(key_node)))
        values = tuple(self.literal(t) for t in parts[1:])
        for v in values:
            if v.kind is LiteralKind.NULL:
                raise QueryError("an entity key cannot be NULL", v.pos)
        mode = {"for_each": EntityMode.EACH, "for_eq": EntityMode.EQ, "for_in": EntityMode.IN}[str(tree.data)]
        return EntitySpec(
            table=self.name(table_node),
            key=self.name(key_node),
            mode=mode,
            values=values,
            pos=_pos(tree),
            spans=spans,
        )

    # ------------------------------------------------------------------ expressions
    def condition(self, tree: Tree[Token]) -> Comparison | BoolOp | Not:
        """A condition (filter, ASSUMING, aggregation WHERE): a bare operand reads as `= TRUE`."""
        node = self.expr(tree, top=False)
        assert not isinstance(node, Aggregation | ColumnRef)
        return node

    def expr(self, tree: Tree[Token], top: bool) -> Target:
        """`top`: the whole target, where a bare operand is the value to predict."""
        self.depth += 1
        try:
            return self._expr(tree, top)
        finally:
            self.depth -= 1

    def _expr(self, tree: Tree[Token], top: bool) -> Target:
        if self.depth > MAX_DEPTH:
            raise QueryError(f"query nests too deeply (more than {MAX_DEPTH} levels)", _pos(tree))
        kind = str(tree.data)
        if kind in ("or_expr", "and_expr"):
            op = BoolOpKind.OR if kind == "or_expr" else BoolOpKind.AND
            children: list[Comparison | BoolOp | Not] = []
            # A chain `a AND b AND c` is one node; parentheses the user wrote are kept as nesting.
            for child in _trees(tree.children):
                sub = self.expr(child, top=False)
                assert not isinstance(sub, Aggregation | ColumnRef)
                children.append(sub)
            return BoolOp(op, tuple(children), _pos(tree))
        if kind == "not_":
            sub = self.expr(_trees(tree.children)[0], top=False)
            assert not isinstance(sub, Aggregation | ColumnRef)
            return Not(sub, _pos(tree))
        if kind in ("compare", "in_list", "is_null", "str_match"):
            return self.predicate(tree)
        operand = self.operand(tree)
        if top:
            return operand
        return Comparison(
            operand, CompOp.EQ, (Literal(LiteralKind.BOOL, True, operand.pos),), True, operand.pos
        )

    def predicate(self, tree: Tree[Token]) -> Comparison:
        kind = str(tree.data)
        children = tree.children
        lhs = self.operand(_tree(children[0]))
        negated = any(isinstance(c, Token) and c.type == "NOT" for c in children)
        if kind == "compare":
            op_token = _token(_tree(children[1]).children[0])
            op = CompOp.NE if str(op_token) == "<>" else CompOp(str(op_token))
            value = self.literal(_tree(children[2]))
            if value.kind is LiteralKind.NULL:
                fix = "IS NULL" if op is CompOp.EQ else "IS NOT NULL" if op is CompOp.NE else None
                raise QueryError(
                    f"comparing with NULL using '{op_token}' is never true",
                    value.pos,
                    f"write {fix}" if fix else "use IS NULL or IS NOT NULL",
                )
            return Comparison(lhs, op, (value,), False, lhs.pos)
        if kind == "in_list":
            values = tuple(self.literal(t) for t in _trees(children[2:]))
            for v in values:
                if v.kind is LiteralKind.NULL:
                    raise QueryError("NULL in an IN list never matches", v.pos, "use IS NULL")
            return Comparison(lhs, CompOp.NOT_IN if negated else CompOp.IN, values, False, lhs.pos)
        if kind == "is_null":
            return Comparison(lhs, CompOp.IS_NOT_NULL if negated else CompOp.IS_NULL, (), False, lhs.pos)
        # str_match
        str_op = _tree(children[2])
        word = _token(str_op.children[0]).type
        op = _STRING_OP_WORDS[word]
        word = op.value
        if negated:
            op = NEGATIONS[op]
        value = self.literal(_tree(children[3]))
        if value.kind is not LiteralKind.STRING:
            raise QueryError(f"{word} needs a quoted string, got {self.text_of(value)}", value.pos)
        assert op in STRING_OPS
        return Comparison(lhs, op, (value,), False, lhs.pos)

    # ------------------------------------------------------------------ operands
    def operand(self, tree: Tree[Token]) -> Operand:
        if tree.data == "aggregation":
            return self.aggregation(tree)
        if tree.data == "column_ref":
            return self.column_ref(tree)
        raise QueryError(f"syntax error: unexpected {tree.data}", _pos(tree))  # pragma: no cover

    def column_ref(self, tree: Tree[Token]) -> ColumnRef:
        parts = _trees(tree.children)
        table_ref, hops, column_node = parts[0], parts[1:-1], parts[-1]
        table_node, link_node = table_ref.children
        spans: list[tuple[str, Pos]] = [("table", _pos(_tree(table_node)))]
        link = None
        if link_node is not None:
            link = self.name(_tree(link_node))
            spans.append(("link", _pos(_tree(link_node))))
        path = []
        for i, hop in enumerate(hops):
            fk_node, table_node2 = _trees(hop.children)
            path.append(Hop(self.name(fk_node), self.name(table_node2)))
            spans.append((f"path.{i}", _pos(fk_node)))
            spans.append((f"path.{i}.table", _pos(table_node2)))
        col_child = column_node.children[0]
        spans.append(("column", _pos(_tree(col_child) if isinstance(col_child, Tree) else _token(col_child))))
        column = "*" if isinstance(col_child, Token) else self.name(col_child)
        if column == "*" and path:
            raise QueryError(
                "'*' cannot follow a '->' path",
                _pos(_token(col_child)),
                f"count the rows of '{self.name(_tree(table_node))}' with {self.name(_tree(table_node))}.*",
            )
        return ColumnRef(
            table=self.name(_tree(table_node)),
            path=tuple(path),
            column=column,
            link=link,
            pos=_pos(tree),
            spans=tuple(spans),
        )

    def aggregation(self, tree: Tree[Token]) -> Aggregation:
        func_node, ref_node, where_node, start_node, end_node, unit_node = tree.children
        func_name = self.name(_tree(func_node))
        try:
            func = AggFunc(func_name.upper())
        except ValueError:
            raise QueryError(
                f"unknown aggregation '{func_name}'",
                _pos(_tree(func_node)),
                did_you_mean(func_name, [f.value for f in AggFunc])
                or "use one of " + ", ".join(f.value for f in AggFunc),
            ) from None
        ref = self.column_ref(_tree(ref_node))
        where = self.condition(_tree(where_node)) if where_node is not None else None
        start = self.bound(_tree(start_node))
        end = self.bound(_tree(end_node))
        unit = TimeUnit.DAYS
        spans = [
            ("func", _pos(_tree(func_node))),
            *ref.spans,
            ("start", _pos(_tree(start_node))),
            ("end", _pos(_tree(end_node))),
        ]
        if unit_node is not None:
            unit_name = self.name(_tree(unit_node))
            spans.append(("unit", _pos(_tree(unit_node))))
            if unit_name.lower() not in UNIT_NAMES:
                raise QueryError(
                    f"unknown time unit '{unit_name}'",
                    _pos(_tree(unit_node)),
                    did_you_mean(unit_name, [u.value for u in TimeUnit])
                    or "use one of " + ", ".join(u.value for u in TimeUnit),
                )
            unit = UNIT_NAMES[unit_name.lower()]
        if math.isinf(end):
            raise QueryError(
                "a window end must be a whole number", _pos(_tree(end_node)), "only the start may be -INF"
            )
        if start == math.inf:
            raise QueryError("a window start cannot be +INF", _pos(_tree(start_node)), "did you mean -INF?")
        if start >= end:
            raise QueryError(
                f"window start ({self.bound_text(start)}) must be before its end ({int(end)})",
                _pos(_tree(start_node)),
                "the window is start < time - anchor <= end",
            )
        if func is not AggFunc.COUNT and ref.column == "*":
            raise QueryError(
                f"{func.value} needs a column; '*' only works with COUNT",
                ref.span("column"),
                f"e.g. {func.value}({ref.table}.<column>, ...)",
            )
        return Aggregation(
            func=func,
            table=ref.table,
            link_fk=ref.link,
            path=ref.path,
            column=ref.column,
            where=where,
            start=start,
            end=int(end),
            unit=unit,
            pos=_pos(tree),
            spans=tuple(spans),
        )

    def bound(self, tree: Tree[Token]) -> int | float:
        token = _token(tree.children[0])
        text = str(token)
        if token.type == "INF":
            return -math.inf if text.startswith("-") else math.inf
        if not _INT_RE.fullmatch(text):
            raise QueryError(
                f"window bounds are whole numbers of the unit, got {text}",
                _pos(token),
                "use a smaller unit (e.g. hours instead of days)",
            )
        value = int(text)
        if abs(value) > 10**12:
            raise QueryError(f"window bound {text} is out of range", _pos(token))
        return value

    @staticmethod
    def bound_text(value: int | float) -> str:
        return "-INF" if value == -math.inf else str(int(value))

    # ------------------------------------------------------------------ leaves
    def literal(self, tree: Tree[Token]) -> Literal:
        kind = str(tree.data)
        token = _token(tree.children[0])
        pos = _pos(token)
        text = str(token)
        if kind == "number":
            if _INT_RE.fullmatch(text):
                value = int(text)
                if not INT64_MIN <= value <= INT64_MAX:
                    raise QueryError(f"integer {text} is out of the 64-bit range", pos)
                return Literal(LiteralKind.INT, value, pos)
            number = float(text)
            if not math.isfinite(number):
                raise QueryError(f"number {text} is out of range", pos)
            return Literal(LiteralKind.FLOAT, number, pos)
        if kind == "string":
            quote = text[0]
            return Literal(LiteralKind.STRING, text[1:-1].replace(quote * 2, quote), pos)
        if kind == "true":
            return Literal(LiteralKind.BOOL, True, pos)
        if kind == "false":
            return Literal(LiteralKind.BOOL, False, pos)
        return Literal(LiteralKind.NULL, None, pos)

    @staticmethod
    def name(tree: Tree[Token]) -> str:
        token = _token(tree.children[0])
        text = str(token)
        return text[1:-1] if token.type == "QUOTED_NAME" else text

    @staticmethod
    def text_of(value: Literal) -> str:
        if value.kind is LiteralKind.STRING:
            return repr(value.value)
        if value.kind is LiteralKind.NULL:
            return "NULL"
        if value.kind is LiteralKind.BOOL:
            return "TRUE" if value.value else "FALSE"
        return str(value.value)
