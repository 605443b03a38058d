"""Rendering what the bot says: Jinja2 in a sandbox, strict about unknown variables."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                     trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)


class TemplateProblem(ValueError):
    """A template that does not compile or render; `line` is relative to the template text."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.line = line


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
    try:
        return _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax: {exc.message}", exc.lineno or 1) from None


def render(template: Template, context: Mapping[str, Any]) -> str:
    """Render and tidy: operators write YAML block text, customers should not see stray blank lines."""
    try:
        text = template.render(**context)
    except TemplateError as exc:
        raise TemplateProblem(f"template: {exc}", _template_line(exc)) from None
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return "\n".join(lines)
