"""Logging for `siyu`: text or JSON lines, with secrets and customer PII taken out of every record.

Redaction happens where records are made (a LogRecord factory), so every handler sees the same
clean record: the console, a log collector, pytest's caplog. The handler `configure` installs
filters once more, for records made without the factory (`logging.makeLogRecord`).

What is taken out:
- every secret value known at start-up (`redact_secrets(secrets_of(settings))`): platform tokens,
  AES keys, corp and AI bot secrets, the web chat secret, the LLM key, the database password;
- secrets learned later, by their shape: Telegram Bot API URLs (`/bot<id>:<token>/`), bare
  Telegram tokens, `access_token=…`, `corpsecret=…`, `secret=…`, `key=…`, `response_code=…`,
  `"token": "…"` fields, `user:password@` in URLs;
- customer PII unless `pii=True` (`siyu serve --log-pii`, for debugging only): mobile numbers,
  e-mail addresses and ID-card numbers are masked.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from bot.config import Settings

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words; no platform issues such secrets
QUIET_LOGGERS = ("httpx", "httpcore")  # they log every request URL, and Bot API URLs carry the token

# secrets by their shape, for values nobody knew at start-up (an access_token fetched later)
_SECRET_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(/bot)\d+:[A-Za-z0-9_-]+"), rf"\1{REDACTED}"),                  # Bot API URL path
    (re.compile(r"(?<![A-Za-z0-9])\d{5,}:[A-Za-z0-9_-]{30,}"), REDACTED),         # a bare Telegram token
    (re.compile(r"((?:token|secret|key|password|response_code)=)[^&\s'\"<>]+", re.IGNORECASE),
     rf"\1{REDACTED}"),                     # query parameters: access_token=, corpsecret=, an AI bot response_url
    (re.compile(r"((?:token|secret|key|password)[\"']?\s*:\s*[\"'])[^\"']+", re.IGNORECASE),
     rf"\1{REDACTED}"),                                     # JSON or dict fields: "access_token": "…"
    (re.compile(r"(://[^:/@\s]+:)[^@/\s]+@"), rf"\1{REDACTED}@"),                 # user:password@host
)
_ID_CARD = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
                      r"(?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?<!\d)((?:\+?86[ -]?)?1[3-9]\d)(\d{4})(\d{4})(?!\d)")
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9])[A-Za-z0-9._%+-]*(@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")


def _mask_id_card(match: re.Match[str]) -> str:
    number = match.group(0)
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


class Redactor:
    """Text in, text without secrets (and, unless `pii`, without customer PII) out."""

    def __init__(self, pii: bool = False) -> None:
        self.pii = pii
        self._secrets: set[str] = set()
        self._known: re.Pattern[str] | None = None

    def add(self, values: Iterable[str]) -> None:
        self._secrets.update(v for v in values if len(v) >= MIN_SECRET_LENGTH)
        if self._secrets:  # longest first, so a secret that contains another goes whole
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._known = re.compile("|".join(re.escape(v) for v in ordered))

    def forget(self) -> None:
        self._secrets.clear()
        self._known = None

    def __call__(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        for shape, replacement in _SECRET_SHAPES:
            text = shape.sub(replacement, text)
        if not self.pii:
            text = _ID_CARD.sub(_mask_id_card, text)  # before mobiles: an ID number holds 11-digit runs
            text = _MOBILE.sub(r"\1****\3", text)
            text = _EMAIL.sub(r"\1***\2", text)
        return text


_redactor = Redactor()  # logging is process-wide, and so is what it must hide
_exceptions = logging.Formatter()
_base_factory: Callable[..., logging.LogRecord] | None = None
_handler: logging.Handler | None = None  # the root handler `configure` installed


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Format the message, traceback and stack, redacted; nothing raw stays on the record.

    Idempotent: a second pass finds the message formatted, the traceback text, nothing left to hide.
    """
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what can be shown, never the raw arguments
        message = f"{record.msg} (log arguments dropped: they did not fit the format)"
    record.msg, record.args = _redactor(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = _exceptions.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = _redactor(record.exc_text)
    record.exc_info = None  # only the redacted text may be rendered, by any handler
    if record.stack_info:
        record.stack_info = _redactor(record.stack_info)
    return record


def _make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _base_factory is not None
    return redact_record(_base_factory(*args, **kwargs))


class RedactingFilter(logging.Filter):
    """For records made without the factory (`logging.makeLogRecord`, records from other processes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (local, with offset), level, logger, message[, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def install_redaction(pii: bool = False) -> None:
    """Redact every record this process makes from now on (idempotent)."""
    global _base_factory
    _redactor.pii = pii
    if _base_factory is None:
        _base_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_make_record)


def redact_secrets(values: Iterable[str]) -> None:
    """Add secret values to what every log record is cleaned of."""
    _redactor.add(values)


def configure(level: int = logging.INFO, log_format: LogFormat = "text", pii: bool = False,
              stream: TextIO | None = None) -> logging.Handler:
    """The root handler in the chosen format, redaction on, and the URL-printing HTTP loggers quiet."""
    global _handler
    install_redaction(pii)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    _handler = handler
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def reset() -> None:
    """Undo `configure` and forget the secrets (for tests and for programs that embed siyu)."""
    global _base_factory, _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    if _base_factory is not None:
        logging.setLogRecordFactory(_base_factory)
        _base_factory = None
    _redactor.forget()
    _redactor.pii = False


def _secret_values(value: object) -> Iterable[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_values(getattr(value, name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _secret_values(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _secret_values(item)


def secrets_of(settings: Settings, env: Mapping[str, str] | None = None) -> set[str]:
    """Every secret the settings hold (SecretStr fields), the LLM key and the database password."""
    env = os.environ if env is None else env
    found = set(_secret_values(settings))
    if env.get(settings.llm.api_key_env):  # read from the environment where the LLM client is built
        found.add(env[settings.llm.api_key_env])
    try:
        password = urlsplit(settings.database_url).password
    except ValueError:  # not a URL we can parse; the database layer will say so
        password = None
    if password:
        found.add(password)
    return {value for value in found if value}
