"""Operator files checked by pydantic models; every error becomes one `PATH:LINE: what — fix` Problem.

Each file kind (config.yaml, journeys, guard.yaml, faq.yaml) has a raw "file" model. `validate` runs it
and maps every pydantic error to the line it is about, in the file kind's `Voice`, so all operator
files read alike and `siyu check` lists every problem once.
"""
from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import time
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, InitErrorDetails

from bot.durations import parse_clock_time
from bot.problems import Problem
from bot.yamlsource import YamlDocument

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class Mistake(ValueError):
    """An operator-worded problem raised by a validator.

    `at` places it below the value being validated (cross-key rules name the key they are about);
    `text_line` is a 1-based line inside the value's own text (a template's line in a block scalar).
    """

    def __init__(self, message: str, *, at: Loc = (), text_line: int | None = None) -> None:
        super().__init__(message)
        self.at = at
        self.text_line = text_line


def clock_time(value: Any) -> time:
    """A `time:` field's validator (mode="before"): `'10:00'` → 10:00, or a Mistake that says what is wrong."""
    try:
        return parse_clock_time(value)
    except ValueError as exc:
        raise Mistake(f"time: {exc}") from None


def non_blank(mistake: str) -> Callable[[Any], Any]:
    """A validator (mode="before") that strips a text field and refuses an empty one with `mistake`."""
    def check(value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise Mistake(mistake)
        return value.strip() if isinstance(value, str) else value
    return check


def dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)


@dataclass(frozen=True)
class Voice:
    """How one file kind words its problems.

    `subject` names what a key path is about (`policy.quiet_hours`, `step 'greeting'`); when it does not
    name the key itself (`subject_names_key=False`), generated messages add it: `step 'x' reply must …`.
    `colon` puts a colon after the subject, as config.yaml always has.
    """

    subject: Callable[[Loc], str] = dotted
    subject_names_key: bool = True
    colon: bool = True
    noun: str = "key"          # "unknown setting" reads better for config.yaml
    see: str | None = None     # appended to unknown-key problems: where the allowed keys are explained

    def sentence(self, subject: str, text: str, verb: str = "") -> str:
        if not subject:
            return text
        if self.colon:
            return f"{subject}: {text}"
        return f"{subject} {verb} {text}" if verb else f"{subject} {text}"


class FileModel(BaseModel):
    """Base of the raw operator-file models.

    Unknown keys are errors. `cross_checks` (rules between keys, such as "exactly one of at/on") see the
    raw mapping and run even when some keys fail, so one pass reports every problem, not the first few.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    @classmethod
    def cross_checks(cls, raw: Mapping[str, Any], context: Any) -> list[Mistake]:
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _with_cross_checks(cls, data: Any, handler: Callable[[Any], Any], info: ValidationInfo) -> Any:
        mistakes = cls.cross_checks(data, info.context) if isinstance(data, Mapping) else []
        return with_errors(handler, data, [(m.at, m) for m in mistakes], cls.__name__)


def with_errors(handler: Callable[[Any], Any], data: Any, extra: Sequence[tuple[Loc, ValueError]],
                title: str) -> Any:
    """Run pydantic's `handler` and report `extra` errors alongside whatever it finds."""
    details = [InitErrorDetails(type="value_error", loc=loc, input=data, ctx={"error": error}) for loc, error in extra]
    try:
        result = handler(data)
    except ValidationError as exc:
        if not details:
            raise
        raise ValidationError.from_exception_data(exc.title, [*_reraisable(exc.errors()), *details]) from None
    if details:
        raise ValidationError.from_exception_data(title, details)
    return result


def _reraisable(errors: Iterable[ErrorDetails]) -> list[InitErrorDetails]:
    # pydantic's own error types are valid InitErrorDetails types; the TypedDicts just do not say so
    return [InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"],  # type: ignore[typeddict-item]
                             ctx=e.get("ctx", {})) for e in errors]


def validate(model: type[M], data: Any, doc: YamlDocument, voice: Voice = Voice(),
             context: Any = None) -> tuple[M | None, list[Problem]]:
    """Validate `data` (usually `doc.data`) with `model`: the model, or None and every problem."""
    try:
        return model.model_validate(data, context=context), []
    except ValidationError as exc:
        return None, problems_from(exc, model, data, doc, voice)


def problems_from(exc: ValidationError, model: type[BaseModel], data: Any, doc: YamlDocument,
                  voice: Voice = Voice()) -> list[Problem]:
    """The one mapping from pydantic errors to operator problems: deduplicated, in line order."""
    problems = dict.fromkeys(_problem(error, model, data, doc, voice) for error in exc.errors())
    return sorted(problems, key=lambda p: p.line)


def _problem(error: ErrorDetails, model: type[BaseModel], data: Any, doc: YamlDocument, voice: Voice) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    where = _document_loc(data, loc, keep_missing_leaf=kind == "missing")
    field = _field_at(model, loc)
    if kind == "extra_forbidden":
        return Problem(doc.path, doc.key_line(*where), _unknown_key(model, loc, where, voice))
    if kind == "missing" or (error["input"] is None and field is not None and field.is_required()):
        text = f"missing '{loc[-1]}'" + (f" — {field.description}" if field is not None and field.description else "")
        return Problem(doc.path, doc.line(*where), voice.sentence(voice.subject(_parent(where, loc)), text, "is"))
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ValueError):
        text_line = getattr(cause, "text_line", None)
        line = doc.text_line(*where) + text_line - 1 if text_line else doc.line(*where)
        return Problem(doc.path, line, voice.sentence(voice.subject(where), str(cause)))
    subject = voice.subject(where)
    if not subject:
        subject = dotted(where) or "the file"
    elif not voice.subject_names_key and where and isinstance(where[-1], str):
        subject = f"{subject} {where[-1]}"
    return Problem(doc.path, doc.line(*where), voice.sentence(subject, _must_be(error, field, model, loc)))


def _parent(where: Loc, loc: Loc) -> Loc:
    # a missing key is the last part of `where` only when the mapping holding it exists in the data
    return where[:-1] if where and where[-1] == loc[-1] else where


def _unknown_key(model: type[BaseModel], loc: Loc, where: Loc, voice: Voice) -> str:
    owner = _model_at(model, loc[:-1])
    allowed = f" — expected one of {', '.join(_keys(owner))}" if owner is not None else ""
    see = f"; {voice.see}" if voice.see else ""
    if voice.subject_names_key:
        return f"{voice.subject(where)}: unknown {voice.noun}{allowed}{see}"
    text = f"unknown {voice.noun} '{loc[-1]}'{allowed}{see}"
    return voice.sentence(voice.subject(where[:-1]), text, "has")


def _must_be(error: ErrorDetails, field: FieldInfo | None, model: type[BaseModel], loc: Loc) -> str:
    """pydantic's messages ("Input should be a valid integer") in operator words, with the value given."""
    kind, ctx = error["type"], error.get("ctx") or {}
    got = f", got {_shown(error['input'])}"
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind.startswith(("int_", "float_", "greater_than", "less_than", "multiple_of")):
        whole = kind.startswith("int_") or (field is not None and _is_int(field.annotation))
        return f"must be {'a whole number' if whole else 'a number'}{_bounds(field, ctx)}{got}"
    if kind.startswith("bool_"):
        return f"must be true or false{got}"
    if kind in ("string_type", "string_unicode"):
        return f"must be text{got}"
    if kind in ("list_type", "tuple_type", "set_type", "frozen_set_type", "iterable_type"):
        return f"must be a list{got}"
    if kind in ("dict_type", "model_type", "model_attributes_type", "dataclass_type"):
        owner = _model_at(model, loc)
        keys = f" of {', '.join(_keys(owner))}" if owner is not None else ""
        return f"must be a mapping{keys}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}{got}"
    message = error["msg"]
    return message[:1].lower() + message[1:] + got


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


def _bounds(field: FieldInfo | None, ctx: Mapping[str, Any]) -> str:
    limits = dict(ctx)
    for item in field.metadata if field is not None else ():
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, name.capitalize())):
                limits[name] = getattr(item, name)
    n = {name: f"{value:g}" for name, value in limits.items() if name in ("ge", "gt", "le", "lt")}
    if "ge" in n and "le" in n:
        return f" from {n['ge']} to {n['le']}"
    low = f" ≥ {n['ge']}" if "ge" in n else f" > {n['gt']}" if "gt" in n else ""
    high = f" ≤ {n['le']}" if "le" in n else f" < {n['lt']}" if "lt" in n else ""
    return low + (" and" if low and high else "") + high


def _is_int(annotation: Any) -> bool:
    members = _members(annotation)
    return int in members and float not in members


# --- from pydantic's error locations to the document and to the model ---

def _document_loc(data: Any, loc: Loc, keep_missing_leaf: bool) -> Loc:
    """The key path as the YAML document has it: pydantic's union tags and `[key]` markers dropped."""
    found: list[str | int] = []
    current = data
    for index, part in enumerate(loc):
        if isinstance(current, Mapping):
            key = next((k for k in current if k == part or str(k) == str(part)), _NOT_FOUND)
            if key is not _NOT_FOUND:
                found.append(str(key))  # YamlDocument keys every mapping member by its text
                current = current[key]
                continue
        elif isinstance(current, (list, tuple)) and isinstance(part, int) and 0 <= part < len(current):
            found.append(part)
            current = current[part]
            continue
        if keep_missing_leaf and index == len(loc) - 1 and isinstance(current, Mapping):
            found.append(str(part))
    return tuple(found)


_NOT_FOUND = object()


def _field_at(model: type[BaseModel], loc: Loc) -> FieldInfo | None:
    if not loc or not isinstance(loc[-1], str):
        return None
    owner = _model_at(model, loc[:-1])
    return owner.model_fields.get(loc[-1]) if owner is not None else None


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model that validates the value at `loc`, following fields, list items and mapping values."""
    current: Any = model
    for part in loc:
        current = _child(current, part)
        if current is None:
            return None
    return next((m for m in _members(current) if isinstance(m, type) and issubclass(m, BaseModel)), None)


def _child(annotation: Any, part: str | int) -> Any:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            if isinstance(part, str) and part in member.model_fields:
                return member.model_fields[part].annotation
            continue
        origin, args = get_origin(member), get_args(member)
        if origin in (list, tuple, set, frozenset, Sequence) and isinstance(part, int) and args:
            return args[0]
        if origin in (dict, Mapping) and len(args) == 2 and part != "[key]":
            return args[1]
    # not a step into the data: a pydantic union tag, which names a member of the annotation
    return next((m for m in _members(annotation) if getattr(m, "__name__", None) == part), None)


def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of an annotation: `Caps | None` → (Caps,); Annotated wrappers removed."""
    if get_origin(annotation) is Annotated:
        return _members(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(m for arg in get_args(annotation) for m in _members(arg) if m is not type(None))
    return (annotation,)


def _keys(model: type[BaseModel]) -> list[str]:
    # fields never written out are secrets, which come from the environment: not offered as keys
    return [field.alias or name for name, field in model.model_fields.items() if field.exclude is not True]
