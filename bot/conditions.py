"""`when:` conditions: a tiny, safe expression language over the customer. Never `eval`.

Allowed: literals, lists, `and`/`or`/`not`, comparisons (`== != < <= > >= in not in`),
dotted names from the context (`customer.replies`, `customer.tags`) and calls to a few
named functions (`replied_since('day3_followup')`). Anything else is refused at load time.
"""
from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


class ConditionError(ValueError):
    """A condition that cannot be parsed or uses something not allowed."""


@dataclass(frozen=True)
class ConditionSchema:
    """What a condition may refer to: `names` maps a root name to its allowed attributes."""

    names: Mapping[str, frozenset[str]]
    functions: frozenset[str]


class Condition:
    """A parsed, validated condition; `evaluate` takes plain values and functions."""

    def __init__(self, source: str, schema: ConditionSchema) -> None:
        self.source = source
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ConditionError(f"cannot parse condition {source!r}: {exc.msg}") from None
        self._schema = schema
        self._check(tree.body)
        self._tree = tree.body

    def _check(self, node: ast.AST) -> None:
        match node:
            case ast.BoolOp(values=values):
                for value in values:
                    self._check(value)
            case ast.UnaryOp(op=ast.Not() | ast.USub(), operand=operand):
                self._check(operand)
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                for op in ops:
                    if type(op) not in _COMPARE:
                        raise ConditionError(f"operator {type(op).__name__} is not allowed")
                for part in (left, *comparators):
                    self._check(part)
            case ast.Constant(value=value):
                if not isinstance(value, (str, int, float, bool, type(None))):
                    raise ConditionError(f"literal {value!r} is not allowed")
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                for elt in elts:
                    self._check(elt)
            case ast.Name(id=name):
                if name not in self._schema.names:
                    known = ", ".join(sorted(self._schema.names))
                    raise ConditionError(f"unknown name '{name}' (known: {known})")
            case ast.Attribute(value=ast.Name(id=root), attr=attr):
                allowed = self._schema.names.get(root)
                if allowed is None:
                    raise ConditionError(f"unknown name '{root}'")
                if attr not in allowed:
                    raise ConditionError(
                        f"'{root}' has no field '{attr}' (fields: {', '.join(sorted(allowed))})"
                    )
            case ast.Call(func=ast.Name(id=fname), args=args, keywords=[]):
                if fname not in self._schema.functions:
                    known = ", ".join(sorted(self._schema.functions)) or "none"
                    raise ConditionError(f"unknown function '{fname}' (known: {known})")
                for arg in args:
                    if not isinstance(arg, ast.Constant):
                        raise ConditionError(f"arguments of {fname}() must be literals")
            case _:
                raise ConditionError(f"'{ast.unparse(node)}' is not allowed in a condition")

    def evaluate(self, values: Mapping[str, Mapping[str, Any]],
                 functions: Mapping[str, Callable[..., Any]] | None = None) -> bool:
        return bool(self._eval(self._tree, values, functions or {}))

    def _eval(self, node: ast.AST, values: Mapping[str, Mapping[str, Any]],
              functions: Mapping[str, Callable[..., Any]]) -> Any:
        match node:
            case ast.BoolOp(op=ast.And(), values=parts):
                return all(self._eval(p, values, functions) for p in parts)
            case ast.BoolOp(op=ast.Or(), values=parts):
                return any(self._eval(p, values, functions) for p in parts)
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return not self._eval(operand, values, functions)
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return -self._eval(operand, values, functions)
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                current = self._eval(left, values, functions)
                for op, right_node in zip(ops, comparators):
                    right = self._eval(right_node, values, functions)
                    try:
                        ok = _COMPARE[type(op)](current, right)
                    except TypeError:
                        ok = False  # e.g. None < 3: an unknown value never satisfies an order test
                    if not ok:
                        return False
                    current = right
                return True
            case ast.Constant(value=value):
                return value
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                return [self._eval(e, values, functions) for e in elts]
            case ast.Name(id=name):
                return values.get(name)
            case ast.Attribute(value=ast.Name(id=root), attr=attr):
                return (values.get(root) or {}).get(attr)
            case ast.Call(func=ast.Name(id=fname), args=args):
                return functions[fname](*(a.value for a in args))  # type: ignore[attr-defined]
        raise ConditionError(f"cannot evaluate {ast.unparse(node)}")  # unreachable after _check
