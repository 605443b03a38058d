"""`when:` conditions: a tiny, safe expression language over the customer. Never `eval`.

Allowed: literals, lists, `and`/`or`/`not`, comparisons (`== != < <= > >= in not in`),
dotted names from the context (`customer.replies`, `customer.tags`) and calls to a few
named functions (`replied_since('day3_followup')`). Anything else is refused at load time.

Operator files are untrusted input: a condition is short and shallow (so parsing and checking it
cannot exhaust the parser or the stack), and `check_on` evaluates every part of it once against a
sample, so a type error (`-customer.name`) is found by `siyu check`, not at send time. At send time
anything that still goes wrong is a ConditionError, never another exception.
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


MAX_LENGTH = 1_000  # characters: a condition reads like a sentence, not a program
MAX_DEPTH = 32      # nested and/or/not/brackets


class ConditionError(ValueError):
    """A condition that cannot be parsed, uses something not allowed, or cannot be evaluated."""


@dataclass(frozen=True)
class ConditionSchema:
    """What a condition may refer to: `names` maps a root name to its allowed attributes."""

    names: Mapping[str, frozenset[str]]
    functions: frozenset[str]


class Condition:
    """A parsed, validated condition; `evaluate` takes plain values and functions."""

    def __init__(self, source: str, schema: ConditionSchema) -> None:
        self.source = source
        if len(source) > MAX_LENGTH:
            raise ConditionError(f"the condition is {len(source):,} characters long, more than {MAX_LENGTH:,}")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ConditionError(f"cannot parse condition {_shown(source)}: {exc.msg}") from None
        except (MemoryError, RecursionError, ValueError):  # nesting past the parser's own limits
            raise ConditionError(f"cannot parse condition {_shown(source)}: it is nested too deeply") from None
        self._schema = schema
        self._check(tree.body, 0)
        self._tree = tree.body

    def _check(self, node: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ConditionError(f"the condition is nested more than {MAX_DEPTH} levels deep")
        depth += 1
        match node:
            case ast.BoolOp(values=values):
                for value in values:
                    self._check(value, depth)
            case ast.UnaryOp(op=ast.USub(), operand=ast.Constant(value=value)) if not _is_number(value):
                raise ConditionError(f"'{ast.unparse(node)}': minus works on numbers only")
            case ast.UnaryOp(op=ast.Not() | ast.USub(), operand=operand):
                self._check(operand, depth)
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                for op in ops:
                    if type(op) not in _COMPARE:
                        raise ConditionError(f"operator {type(op).__name__} is not allowed")
                for part in (left, *comparators):
                    self._check(part, depth)
            case ast.Constant(value=value):
                if not isinstance(value, (str, int, float, bool, type(None))):
                    raise ConditionError(f"literal {value!r} is not allowed")
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                for elt in elts:
                    self._check(elt, depth)
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
        """True or False for these values; a ConditionError when some part cannot be evaluated."""
        return bool(self._evaluate(values, functions or {}, every_part=False))

    def check_on(self, values: Mapping[str, Mapping[str, Any]], functions: Mapping[str, Callable[..., Any]]) -> None:
        """Evaluate every part once, without short cuts: `siyu check` runs this on the sample customer."""
        self._evaluate(values, functions, every_part=True)

    def _evaluate(self, values: Mapping[str, Mapping[str, Any]], functions: Mapping[str, Callable[..., Any]],
                  every_part: bool) -> Any:
        try:
            return self._eval(self._tree, values, functions, every_part)
        except ConditionError:
            raise
        except Exception as exc:  # noqa: BLE001 — a script error of this condition, whatever the operation raised
            raise ConditionError(f"cannot evaluate {_shown(self.source)}: {type(exc).__name__}: {exc}") from None

    def _eval(self, node: ast.AST, values: Mapping[str, Mapping[str, Any]],
              functions: Mapping[str, Callable[..., Any]], every: bool) -> Any:
        match node:
            case ast.BoolOp(op=ast.And(), values=parts):
                if every:  # a list, not a generator: evaluate every part, no short cut
                    return all([self._eval(p, values, functions, every) for p in parts])  # noqa: C419
                return all(self._eval(p, values, functions, every) for p in parts)
            case ast.BoolOp(op=ast.Or(), values=parts):
                if every:
                    return any([self._eval(p, values, functions, every) for p in parts])  # noqa: C419
                return any(self._eval(p, values, functions, every) for p in parts)
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return not self._eval(operand, values, functions, every)
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                value = self._eval(operand, values, functions, every)
                if not _is_number(value):
                    raise ConditionError(f"'{ast.unparse(node)}': minus works on numbers only, "
                                         f"not on {type(value).__name__}")
                return -value
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                current = self._eval(left, values, functions, every)
                result = True
                for op, right_node in zip(ops, comparators):
                    right = self._eval(right_node, values, functions, every)
                    try:
                        ok = _COMPARE[type(op)](current, right)
                    except TypeError:
                        ok = False  # e.g. None < 3: an unknown value never satisfies an order test
                    if not ok:
                        result = False
                        if not every:
                            return False
                    current = right
                return result
            case ast.Constant(value=value):
                return value
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                return [self._eval(e, values, functions, every) for e in elts]
            case ast.Name(id=name):
                return values.get(name)
            case ast.Attribute(value=ast.Name(id=root), attr=attr):
                return (values.get(root) or {}).get(attr)
            case ast.Call(func=ast.Name(id=fname), args=args):
                return functions[fname](*(a.value for a in args))  # type: ignore[attr-defined]
        raise ConditionError(f"cannot evaluate {ast.unparse(node)}")  # unreachable after _check


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(source: str) -> str:
    """The condition as quoted in a problem: long ones cut, so one line stays readable."""
    return repr(source) if len(source) <= 80 else repr(source[:77] + "…")
