"""Rendering what the bot says: Jinja2 in a sandbox, strict about unknown variables, and bounded.

Operator files are untrusted input. Jinja's sandbox stops attribute tricks; on top of it, nothing a
template does may stall or exhaust the process that renders it:

- every render has a work budget: loop rounds (each charged with the loop body's fixed text), calls,
  values measured and characters written;
- operations that make something large — `**`, repeating or adding texts and lists, `~`, padding,
  string formatting, `range` — are refused past small caps before they allocate anything;
- the finished message has a maximum length.

Limits that templates break are `ScriptLimit` errors, reported like any other template problem.
`siyu check` and reload also render every text once in a killable worker (bot/script_sandbox.py), so
what these caps do not foresee still cannot take the bot down there.
"""
from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, nodes, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

MAX_SOURCE = 20_000    # characters in one template's source
MAX_TEXT = 20_000      # characters (or list items) in any text or list a template builds, and in a message
MAX_WORK = 200_000     # per render: loop rounds, calls, values measured and characters written
MAX_RANGE = 10_000     # numbers in one range()
MAX_INT_BITS = 1_024   # about 300 digits: prices and counts, not cryptography
MAX_WIDTH = 1_000      # padding, indentation and format widths

LIMIT_FIX = "keep message texts short and simple: smaller numbers, fewer repetitions and loop rounds"


class TemplateProblem(ValueError):
    """A template that does not compile or render; `line` is relative to the template text.

    `fix` is set when the template broke a limit, so the message does not suggest checking variables.
    """

    def __init__(self, message: str, line: int = 1, fix: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.fix = fix


class ScriptLimit(SecurityError):
    """A template tried to make something too large or to work too long."""


# --- the work budget of one render --------------------------------------------------------------

@dataclass
class _Budget:
    left: int

    def spend(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise ScriptLimit(f"rendering takes more than {MAX_WORK:,} steps (loop rounds, calls and characters "
                              "written)")


# a ContextVar, not an attribute: the scheduler renders for many customers from one environment
_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _spend(amount: int) -> None:
    budget = _BUDGET.get()
    if budget is not None:  # constant folding at compile time runs outside any render
        budget.spend(amount)


def measure(value: Any) -> int:
    """How large `value` is written out (characters, items, digits), counted only to just past MAX_TEXT.

    Lists may share their items, so a short template can build a value that is astronomically large
    when written; counting stops early and the visits are charged to the budget.
    """
    total, visits, stack = 0, 0, [value]
    while stack and total <= MAX_TEXT:
        item = stack.pop()
        visits += 1
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, bool) or item is None:
            total += 1
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 1
            stack.extend(list(item)[:MAX_TEXT + 1])
        elif isinstance(item, Mapping):
            total += 1
            for key in list(item)[:MAX_TEXT + 1]:
                stack.extend((key, item[key]))
        else:
            total += 1
    _spend(visits)
    return total


def _check_size(value: Any, what: str) -> None:
    if measure(value) > MAX_TEXT:
        raise ScriptLimit(f"{what} would be longer than {MAX_TEXT:,} characters")


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WIDTH:
        raise ScriptLimit(f"{what} {value:,} is more than {MAX_WIDTH:,}")


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(fmt: str) -> None:
    for match in _PRINTF_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*" or (part and int(part) > MAX_WIDTH):
                raise ScriptLimit(f"format width '{match.group(0)}' is more than {MAX_WIDTH:,}")


def _check_str_format(fmt: str) -> None:
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec and ("{" in spec or any(int(n) > MAX_WIDTH for n in re.findall(r"\d+", spec))):
            raise ScriptLimit(f"format spec '{spec}' is wider than {MAX_WIDTH:,}")


# --- the environment -------------------------------------------------------------------------------

def _capped_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise ScriptLimit(f"range of {len(numbers):,} numbers is more than {MAX_RANGE:,}")
    return numbers


@pass_context  # pass_context keeps Jinja from running it at compile time (its generator would be used up)
def _counted(context: Context, items: Any, weight: int) -> Any:
    """A loop's iterable: every round costs one step plus the loop body's fixed text."""
    for item in items:
        _spend(1 + weight)
        yield item


@pass_context
def _joined(context: Context, parts: list[Any]) -> str:
    """`a ~ b`: the same as Jinja's concatenation without autoescape, but bounded."""
    _check_size(parts, "the joined text")  # before str(): a list part could be huge written out
    return "".join(str(part) for part in parts)


def _written(value: Any) -> str:
    """Every `{{ … }}` output passes here (Jinja's `finalize`): measured before it is turned into text."""
    _check_size(value, "the value written")
    text = str(value)
    _spend(len(text))
    return text


# filters whose arguments are widths or counts that make the result larger: name → their positions
# among the filter's own arguments (the value is position 0), and their keyword names
_PADDING_FILTERS: dict[str, tuple[int, ...]] = {
    "center": (1,), "indent": (1,), "wordwrap": (1, 3), "batch": (1,), "slice": (1,), "tojson": (1,),
    "truncate": (1,), "urlize": (1,),
}
_PADDING_KEYWORDS = frozenset({"width", "linecount", "slices", "indent", "length", "trim_url_limit", "wrapstring"})
# filters that count, pick or rearrange the items of their value without writing it out as text:
# their value need not be measured (`range(5000)|list|length` is fine)
_ITEM_FILTERS = frozenset({"length", "count", "first", "last", "random", "min", "max", "sum", "list", "sort",
                           "unique", "reverse", "select", "reject", "selectattr", "rejectattr", "map", "items",
                           "dictsort", "groupby", "attr", "default", "d", "batch", "slice", "abs", "int", "float",
                           "round", "wordcount"})
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a built-in filter: arguments measured, widths and formats capped, `|sum` adds numbers only."""
    widths = _PADDING_FILTERS.get(name, ())
    passes_first = getattr(function, "jinja_pass_arg", None) is not None  # context or environment comes first
    measured_from = 1 if name in _ITEM_FILTERS else 0

    @functools.wraps(function)  # keeps jinja_pass_arg, so Jinja still passes the context or environment
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _spend(1)
        values = args[1:] if passes_first else args
        for value in (*values[measured_from:], *kwargs.values()):
            _check_size(value, f"the input of |{name}")
        for position in widths:
            if position < len(values):
                _check_width(_as_width(values[position]), f"|{name} width")
        for key, value in kwargs.items():
            if key in _PADDING_KEYWORDS:
                _check_width(_as_width(value), f"|{name} {key}")
        if name == "format" and values and isinstance(values[0], str):
            _check_printf(values[0])
        elif name == "replace" and len(values) >= 3:
            _check_replace(values[0], values[1], values[2])
        elif name == "join" and values and isinstance(values[0], (list, tuple)):
            separator = values[1] if len(values) > 1 else kwargs.get("d", "")
            _check_size([*values[0], *([separator] * len(values[0]))], "the joined text")
        elif name == "sum" and not _is_number(kwargs.get("start", values[2] if len(values) > 2 else 0)):
            raise ScriptLimit("|sum adds numbers only")
        return function(*args, **kwargs)

    return bounded


def _as_width(value: Any) -> Any:
    """An indentation or wrap string counts by its length."""
    return len(value) if isinstance(value, str) else value


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        times = len(text) + 1 if old == "" else text.count(old)
        if len(text) + times * (len(new) - len(old)) > MAX_TEXT:
            raise ScriptLimit(f"replace would make a text longer than {MAX_TEXT:,} characters")


class ScriptEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with arithmetic, repetition, formatting and work capped (see the module docstring)."""

    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True,
                         keep_trailing_newline=False, finalize=_written)
        self.globals["range"] = _capped_range
        self.globals.pop("lipsum", None)  # placeholder text by the paragraph: nothing a message needs
        self.filters = {name: _bounded_filter(name, function) for name, function in self.filters.items()}
        self.filters["_counted"] = _counted
        self.filters["_joined"] = _joined

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_product(left, right)
        elif operator == "+" and not _is_number(left) and not _is_number(right):
            if measure(left) + measure(right) > MAX_TEXT:
                raise ScriptLimit(f"adding these would make something longer than {MAX_TEXT:,} characters")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _spend(1)
        for arg in (*args, *kwargs.values()):
            _check_size(arg, "an argument")
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):  # a method of a text: padding and replacing can make it huge
            name = getattr(obj, "__name__", "")
            if name in _PADDING_METHODS:
                for arg in (*args, *kwargs.values()):
                    _check_width(arg, f".{name}() width")
            elif name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
            elif name == "join" and args:
                _check_size([owner, *args[0]] if isinstance(args[0], (list, tuple)) else args[0], ".join()")
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_str_format(value.__self__)
        return wrapped


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_power(base: Any, exponent: Any) -> None:
    if (isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
            and base.bit_length() * exponent > MAX_INT_BITS):
        raise ScriptLimit(f"{_short(base)} ** {_short(exponent)} makes a number too large for a message")


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise ScriptLimit(f"{_short(left)} * {_short(right)} makes a number too large for a message")
        return
    times, thing = (right, left) if isinstance(right, int) else (left, right)
    if (isinstance(times, int) and isinstance(thing, (str, list, tuple)) and times > 0
            and (times > MAX_TEXT or measure(thing) * times > MAX_TEXT)):
        raise ScriptLimit(f"repeating this {_short(times)} times would make it longer than {MAX_TEXT:,} characters")


def _short(number: int) -> str:
    """A number as a problem quotes it; a huge one by its size (writing it out could take long)."""
    if number.bit_length() < 64:
        return str(number)
    return f"a number of about {int(number.bit_length() * 0.30103) + 1:,} digits"


# --- compiling: the template tree is checked and instrumented before Jinja generates code ----------

_REFUSED: dict[type[nodes.Node], str] = {  # macros could recurse; the rest need template files
    nodes.Macro: "{% macro %}", nodes.CallBlock: "{% call %}", nodes.Include: "{% include %}",
    nodes.Import: "{% import %}", nodes.FromImport: "{% from … import %}", nodes.Extends: "{% extends %}",
}


def _fixed_text(body: list[nodes.Node]) -> int:
    """Characters a loop body writes without any expression: charged on every round of the loop."""
    size = 0
    for node in body:
        for data in node.find_all((nodes.TemplateData, nodes.Const)):
            size += len(str(data.data if isinstance(data, nodes.TemplateData) else data.value))
        if isinstance(node, (nodes.TemplateData, nodes.Const)):
            size += len(str(node.data if isinstance(node, nodes.TemplateData) else node.value))
    return size


class _Refused(TemplateSyntaxError):
    """Valid Jinja that a message may not use."""


class _Instrument(NodeTransformer):
    """Refuse what a message never needs, count loop rounds, bound `~`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        if node.recursive:
            raise _Refused("recursive loops are not allowed in a message", node.lineno)
        weight = _fixed_text([*node.body, *node.else_])
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_counted", [nodes.Const(weight)], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "_joined", [], [], None, None,
                            lineno=node.lineno)

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        for kind, what in _REFUSED.items():
            if isinstance(node, kind):
                raise _Refused(f"{what} is not allowed in a message", node.lineno)
        return super().generic_visit(node, *args, **kwargs)


_ENV = ScriptEnvironment()


def _template_line(exc: BaseException) -> int:
    """Jinja rewrites tracebacks so frames of the template carry its line numbers."""
    line = 1
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def compile_template(source: str) -> Template:
    if len(source) > MAX_SOURCE:
        raise TemplateProblem(f"text is {len(source):,} characters, more than {MAX_SOURCE:,}", 1,
                              "shorten it; a chat message is read on a phone")
    try:
        tree = _Instrument().visit(_ENV.parse(source))
        tree.set_environment(_ENV)  # the nodes added by _Instrument need it for constant folding
        template = _ENV.from_string(tree)
        # every render copies the globals into its context: from Jinja's ChainMap over the environment's that
        # is a copy key by key in Python, from a plain dict one C call (the environment's are final by now)
        template.globals = dict(template.globals)
        return template
    except _Refused as exc:
        raise TemplateProblem(f"template: {exc.message}", exc.lineno or 1, "write the text out without it") from None
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax: {exc.message}", exc.lineno or 1) from None
    except (RecursionError, MemoryError, SyntaxError, ValueError, OverflowError) as exc:
        # nesting deep enough to exhaust Jinja's parser or Python's compiler; digits past int() limits
        raise TemplateProblem(f"template too complex to compile ({type(exc).__name__})", 1,
                              "nest fewer brackets and blocks, write shorter numbers") from None


def render(template: Template, context: Mapping[str, Any]) -> str:
    """Render and tidy: operators write YAML block text, customers should not see stray blank lines.

    Whatever goes wrong inside the template — a limit, an unknown variable, `-'text'`, a division by
    zero — is a TemplateProblem: the caller drops that one message, never the process.
    """
    token = _BUDGET.set(_Budget(MAX_WORK))
    try:
        pieces, size = [], 0
        for piece in template.generate(**context):
            size += len(piece)
            if size > MAX_TEXT:
                raise TemplateProblem(f"template: the message would be longer than {MAX_TEXT:,} characters", 1,
                                      LIMIT_FIX)
            pieces.append(piece)
    except TemplateProblem:
        raise
    except ScriptLimit as exc:
        raise TemplateProblem(f"template: {exc}", _template_line(exc), LIMIT_FIX) from None
    except TemplateError as exc:
        raise TemplateProblem(f"template: {exc}", _template_line(exc)) from None
    except Exception as exc:  # noqa: BLE001 — `-'text'`, 1/0, …: one message's problem, whatever it raised
        raise TemplateProblem(f"template: {type(exc).__name__}: {exc}", _template_line(exc)) from None
    finally:
        _BUDGET.reset(token)
    lines = [line.rstrip() for line in "".join(pieces).strip().splitlines()]
    return "\n".join(lines)
