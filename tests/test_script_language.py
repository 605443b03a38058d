"""The small languages operators write: durations, windows, conditions, templates — and their safety."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, timedelta, timezone
from typing import Any

import pytest
from jinja2 import Template
from pydantic import Field, field_validator

from bot.conditions import Condition, ConditionError
from bot.durations import DailyWindow, parse_duration
from bot.journey import CONDITION_SCHEMA
from bot.policy import next_allowed_time
from bot.templates import TemplateProblem, compile_template, render
from bot.validation import FileModel, Mistake, Voice, validate
from bot.yamlsource import parse_yaml
from tests.conftest import SHANGHAI


@pytest.mark.parametrize("text, expected", [
    ("0m", timedelta(0)), ("36h", timedelta(hours=36)), ("3d", timedelta(days=3)),
    ("1d4h", timedelta(days=1, hours=4)), ("2w", timedelta(weeks=2)), ("90s", timedelta(seconds=90)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["3dayz", "", "d3", "1.5d", "-1d", "3 days"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like '3d'"):
        parse_duration(text)


def test_window_wrapping_midnight() -> None:
    quiet = DailyWindow.parse("21:00-09:00")
    assert quiet.contains(time(23, 0)) and quiet.contains(time(8, 59)) and not quiet.contains(time(9, 0))
    with pytest.raises(ValueError):
        DailyWindow.parse("10-20")


def test_next_allowed_time_respects_quiet_hours_and_step_window() -> None:
    quiet, window = DailyWindow.parse("21:00-09:00"), DailyWindow.parse("10:00-20:00")
    at = lambda h, m=0, d=2: datetime(2026, 3, d, h, m, tzinfo=SHANGHAI)  # noqa: E731
    assert next_allowed_time(at(12), SHANGHAI, quiet, window) == at(12)
    assert next_allowed_time(at(22), SHANGHAI, quiet, None) == at(9, d=3)
    assert next_allowed_time(at(22), SHANGHAI, quiet, window) == at(10, d=3)
    assert next_allowed_time(at(20, 30), SHANGHAI, quiet, window) == at(10, d=3)
    assert next_allowed_time(at(9, 30), SHANGHAI, quiet, window) == at(10)
    assert next_allowed_time(at(12), SHANGHAI, quiet, DailyWindow.parse("22:00-23:00")) is None


def test_conditions_evaluate_over_the_customer() -> None:
    condition = Condition("customer.replies >= 1 or 'high_value' in customer.tags", CONDITION_SCHEMA)
    assert condition.evaluate({"customer": {"replies": 0, "tags": ["high_value"]}})
    assert condition.evaluate({"customer": {"replies": 2, "tags": []}})
    assert not condition.evaluate({"customer": {"replies": 0, "tags": []}})
    assert not Condition("customer.birthday < 3", CONDITION_SCHEMA).evaluate({"customer": {"birthday": None}})
    calls = Condition("not replied_since('day3_followup')", CONDITION_SCHEMA)
    assert calls.evaluate({}, {"replied_since": lambda step: step != "day3_followup"})


@pytest.mark.parametrize("source, message", [
    ("customer.__class__", "has no field '__class__'"),
    ("__import__('os').system('id')", "is not allowed"),
    ("__import__('os')", "unknown function '__import__'"),
    ("customer.tags.__len__()", "is not allowed"),
    ("[x for x in customer.tags]", "is not allowed"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("lambda: 1", "is not allowed"),
    ("customer.replies ** 99999999", "is not allowed"),
    ("replied_since(customer.name)", "must be literals"),
    ("customer.replies >=", "cannot parse"),
])
def test_conditions_refuse_anything_but_the_safe_subset(source: str, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        Condition(source, CONDITION_SCHEMA)


def test_templates_render_in_a_sandbox() -> None:
    template = compile_template("{{ customer.name }}，{{ brand.name }}祝您{% if customer.replies %}开心{% endif %}")
    assert render(template, {"customer": {"name": "林", "replies": 1}, "brand": {"name": "山茶集"}}) == "林，山茶集祝您开心"
    unsafe = compile_template("{{ customer.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateProblem):
        render(unsafe, {"customer": {}})
    mutate = compile_template("{{ customer.tags.append('x') }}")
    with pytest.raises(TemplateProblem):
        render(mutate, {"customer": {"tags": []}})


def test_unknown_variables_fail_loudly() -> None:
    with pytest.raises(TemplateProblem, match="nmae"):
        render(compile_template("{{ customer.nmae }}"), {"customer": {"name": "x"}})


def test_aware_times_only() -> None:
    from bot.clock import VirtualClock

    with pytest.raises(ValueError):
        VirtualClock(datetime(2026, 1, 1))
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(ValueError):
        clock.set(datetime(2025, 1, 1, tzinfo=timezone.utc))


def test_the_customer_fields_have_one_home() -> None:
    from bot.facts import CUSTOMER_FIELDS, SAMPLE_CUSTOMER, customer_view
    from storage.models import Contact

    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    contact = Contact(id=7, channel="webchat", external_id="u7", name="", tags=["vip"], interests=[], replies=2,
                      added_at=now - timedelta(days=3))
    view = customer_view(contact, now)
    assert set(view) == set(SAMPLE_CUSTOMER) == CUSTOMER_FIELDS == CONDITION_SCHEMA.names["customer"]
    assert view["name"] == "亲" and view["days_since_added"] == 3 and view["purchased"] is False
    assert Condition("has_tag('vip') and customer.replies == 2", CONDITION_SCHEMA).evaluate(
        {"customer": view}, {"has_tag": lambda tag: tag in view["tags"]})


class _Greeting(FileModel):
    """A tiny operator file for the mapping's own tests."""

    name: str = Field(description="who is greeted, e.g. name: 林小姐")
    times: int = Field(1, ge=1, strict=True)
    text: Template | None = None

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Template:
        try:
            return compile_template(value)
        except TemplateProblem as exc:
            raise Mistake(f"{exc} — check the braces", text_line=exc.line) from None

    @classmethod
    def cross_checks(cls, raw: Mapping[str, Any], context: Any) -> list[Mistake]:
        return [Mistake("greets nobody — add a text", at=("times",))] if "text" not in raw else []


def test_every_pydantic_error_becomes_a_problem_on_its_line() -> None:
    text = "times: 0\nbogus: 1\ntext: |\n  hello\n  {{ name \n"
    doc, _ = parse_yaml(text, "greeting.yaml")
    assert doc is not None
    greeting, problems = validate(_Greeting, doc.data, doc, Voice(see="see the docs"))
    assert greeting is None
    assert [str(p) for p in problems] == [
        "greeting.yaml:1: missing 'name' — who is greeted, e.g. name: 林小姐",
        "greeting.yaml:1: times: must be a whole number ≥ 1, got 0",
        "greeting.yaml:2: bogus: unknown key — expected one of name, times, text; see the docs",
        "greeting.yaml:5: text: template syntax: unexpected end of template, expected 'end of print statement'. "
        "— check the braces",
    ]
    doc, _ = parse_yaml("name: 林\ntimes: 2\n", "greeting.yaml")
    assert doc is not None
    assert [str(p) for p in validate(_Greeting, doc.data, doc)[1]] == [
        "greeting.yaml:2: times: greets nobody — add a text"]
