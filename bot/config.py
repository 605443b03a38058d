"""`config.yaml`: settings for storage, adapters, policy and brand. Secrets come from env vars."""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from bot.durations import DailyWindow, parse_duration
from bot.problems import Problem, ScriptError
from bot.validation import Voice, problems_from
from bot.yamlsource import YamlDocument, load_yaml

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/siyu.db"
AdapterModel = TypeVar("AdapterModel", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r} — use an IANA name like Asia/Shanghai") from None
    return value


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


def _check_window(value: str | None) -> str | None:
    if value is not None:
        DailyWindow.parse(value)
    return value


def _check_weekdays(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if value is not None:
        unknown = [d for d in value if d not in WEEKDAYS]
        if unknown or not value:
            raise ValueError(f"weekdays must be a non-empty list from {', '.join(WEEKDAYS)}")
    return value


class Caps(_Strict):
    """How many proactive touches one customer may get, across all journeys; null means no cap."""

    day: int | None = Field(1, ge=0)
    week: int | None = Field(4, ge=0)   # rolling 7 days
    month: int | None = Field(6, ge=0)  # calendar month, customer's timezone


class PolicyOverride(_Strict):
    """Per-journey changes to the rules; anything left out keeps the global value."""

    quiet_hours: str | None = None
    weekdays: tuple[str, ...] | None = None
    caps: Caps | None = None
    min_gap: str | None = None
    live_conversation: str | None = None

    _w = field_validator("quiet_hours")(_check_window)
    _d = field_validator("min_gap", "live_conversation")(_check_duration)
    _k = field_validator("weekdays")(_check_weekdays)


class PolicySettings(_Strict):
    """Restraint rules for proactive messages."""

    timezone: str = "Asia/Shanghai"
    quiet_hours: str = "21:00-09:00"
    weekdays: tuple[str, ...] = WEEKDAYS
    caps: Caps = Caps()
    min_gap: str = "20h"
    live_conversation: str = "30m"
    guides_may_bypass_caps: bool = False
    opt_out_words: tuple[str, ...] = ("退订", "td", "unsubscribe", "stop")
    journeys: dict[str, PolicyOverride] = Field(default_factory=dict)
    dormant_after: str = "30d"  # silent this long: in the `dormant` segment (trigger: dormant)

    _tz = field_validator("timezone")(_check_timezone)
    _w = field_validator("quiet_hours")(_check_window)
    _d = field_validator("min_gap", "live_conversation", "dormant_after")(_check_duration)
    _k = field_validator("weekdays")(_check_weekdays)


class DeliveryRate(_Strict):
    """Outbound messages per second to one platform, with a burst allowance."""

    per_second: float = Field(20.0, gt=0)
    burst: int = Field(20, ge=1)


class StaffMember(_Strict):
    """A staff member: one person, with an id on each channel they use.

    `role` decides what the console shows: a guide sees their own customers, an operator everything.
    """

    id: str
    name: str
    role: Literal["guide", "operator"] = "guide"
    identities: dict[str, str] = Field(default_factory=dict)


class FaqSettings(_Strict):
    """The understanding cascade; thresholds are 0–1 scores (choose them with `siyu eval --tune-on`)."""

    semantic: Literal["auto", "calibrated", "embeddings", "tfidf", "none"] = "auto"  # auto: calibrated
    embed_chars: int = Field(128, ge=8, le=2000)  # the model reads this much of a message (cost ~ length²)
    embedding_cache: str = "var/cache/embeddings"  # catalog embeddings by text hash; "" keeps none
    fuzzy_answer: float = Field(0.9, ge=0, le=1.01)
    semantic_answer: float = Field(0.9, ge=0, le=1.01)
    llm_floor: float = Field(0.8, ge=0, le=1)
    llm_accept: float = Field(0.7, ge=0, le=1)
    group_answer: float = Field(0.95, ge=0, le=1.01)  # unprompted answers in groups need this much
    staff_quiet_seconds: int = Field(120, ge=0)       # a staff member answered recently: the bot stays out
    handoff_timeout: str = "2h"  # after a hand-off the bot stays quiet in that chat until /release or this

    _h = field_validator("handoff_timeout")(_check_duration)


class LlmSettings(_Strict):
    """Any OpenAI-compatible endpoint; off while base_url is empty. The key comes from an env var."""

    base_url: str | None = None
    model: str = "gpt-4o-mini"
    api_key_env: str = "SIYU_LLM_API_KEY"
    timeout_seconds: float = Field(3.0, gt=0)


class SchedulerSettings(_Strict):
    poll_seconds: float = Field(1.0, gt=0)
    batch: int = Field(50, ge=1)
    lease_seconds: int = Field(120, ge=5)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = "http://127.0.0.1:8080"  # where guides open conversations (links in hand-off notes)


class FloodSettings(_Strict):
    """More than `messages` from one customer within `window` in a 1v1 chat is a flood: every message is
    stored, the guide is told once, and the bot stays quiet for that customer until it stops."""

    messages: int = Field(20, ge=1)
    window: str = "1m"

    @field_validator("window")
    @classmethod
    def _positive(cls, value: str) -> str:
        if not parse_duration(value):
            raise ValueError("window must be longer than 0 — e.g. 1m")
        return value


class InboundSettings(_Strict):
    """What every channel's inbound messages go through (bot/inbound.py, bot/flood.py)."""

    max_chars: int = Field(2000, ge=1)  # longer messages are cut here, and the cut is noted
    flood: FloodSettings = FloodSettings()


class NoAdapters(_Strict):
    """Stands in for `adapters:` until the composition root supplies each platform's settings model."""


class Settings(_Strict):
    """Everything in config.yaml, validated."""

    brand: dict[str, Any] = Field(default_factory=lambda: {"name": "siyu"})
    database_url: str = Field(DEFAULT_DATABASE_URL, repr=False)  # may carry a password
    server: ServerSettings = ServerSettings()
    policy: PolicySettings = PolicySettings()
    staff: tuple[StaffMember, ...] = ()
    default_guide: str | None = None
    faq: FaqSettings = FaqSettings()
    llm: LlmSettings = LlmSettings()
    adapters: NoAdapters = NoAdapters()  # each adapter brings its own section model; see settings_model()
    scheduler: SchedulerSettings = SchedulerSettings()
    inbound: InboundSettings = InboundSettings()
    delivery: dict[str, DeliveryRate] = Field(default_factory=dict)  # per channel; default 20/s

    def delivery_rate(self, channel: str) -> DeliveryRate:
        return self.delivery.get(channel, DeliveryRate())

    @field_validator("brand")
    @classmethod
    def _brand_name(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("name"), str):
            raise ValueError("brand needs a 'name' — the brand customers know, e.g. name: 山茶集")
        return value

    def adapter_settings(self, name: str, model: type[AdapterModel]) -> AdapterModel:
        """One adapter's own settings (its defaults when config.yaml has no section for it)."""
        value = getattr(self.adapters, name, None)
        return value if isinstance(value, model) else model()

    def staff_ids(self, channel: str) -> frozenset[str]:
        """The platform ids of configured staff on one channel."""
        return frozenset(m.identities[channel] for m in self.staff if channel in m.identities)

    def guide(self, key: str | None) -> StaffMember | None:
        wanted = key or self.default_guide
        return next((s for s in self.staff if s.id == wanted), None)

    def unknown_guide(self, keys: Iterable[str]) -> str | None:
        """The operator's error for the first of `keys` that names no guide under `staff:`; None when all do."""
        ids = [s.id for s in self.staff]
        for key in keys:
            if key not in ids:
                return f"没有工号为「{key}」的导购：config.yaml 的 staff: 里有 {'、'.join(ids) or '（还没有配置导购）'}"
        return None


class AdapterSection(Protocol):
    """What config loading needs to know about one adapter (bot.plugin.AdapterSpec provides it)."""

    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> type[BaseModel]: ...

    @property
    def env(self) -> tuple[str, ...]: ...

    @property
    def secrets(self) -> tuple[str, ...]: ...


def settings_model(sections: Sequence[AdapterSection]) -> type[Settings]:
    """Settings whose `adapters:` holds exactly these adapters' own settings models."""
    if not sections:
        return Settings
    fields: dict[str, Any] = {s.name: (s.settings, s.settings()) for s in sections}
    adapters = create_model("AdapterSettings", __base__=_Strict, **fields)
    return create_model("Settings", __base__=Settings, adapters=(adapters, adapters()))


def _adapter_env(data: dict[str, Any], sections: Sequence[AdapterSection], env: dict[str, str], path: Path,
                 doc: YamlDocument | None) -> None:
    """SIYU_<ADAPTER>_<KEY> sets adapters.<adapter>.<key>; secrets may only come from there."""
    for section in sections:
        prefix = f"SIYU_{section.name.upper()}_"
        written = (data.get("adapters") or {}).get(section.name)
        for secret in section.secrets:
            if isinstance(written, dict) and secret in written:
                raise ScriptError([Problem(str(path), doc.line("adapters", section.name, secret) if doc else 1,
                                           f"adapters.{section.name}.{secret}: secrets never go in config.yaml — "
                                           f"set {prefix}{secret.upper()} instead")])
        overrides = {key: env[prefix + key.upper()] for key in section.env if env.get(prefix + key.upper())}
        if overrides:
            adapters = dict(data.get("adapters") or {})
            adapters[section.name] = {**(adapters.get(section.name) or {}), **overrides}
            data["adapters"] = adapters


def load_settings(path: Path, env: dict[str, str] | None = None,
                  sections: Sequence[AdapterSection] = ()) -> Settings:
    """Read and validate config.yaml (a missing file means all defaults); env vars override.

    `sections` are the adapters whose settings `adapters:` may hold (the composition root passes them).
    """
    env = dict(os.environ if env is None else env)
    data: dict[str, Any] = {}
    doc = None
    if path.exists():
        doc, problems = load_yaml(path)
        if problems:
            raise ScriptError(problems)
        assert doc is not None
        if doc.data is not None and not isinstance(doc.data, dict):
            raise ScriptError([Problem(str(path), 1, "config must be a mapping of settings")])
        data = dict(doc.data or {})
    if env.get("SIYU_DATABASE_URL"):
        data["database_url"] = env["SIYU_DATABASE_URL"]
    for variable, key in (("SIYU_LLM_BASE_URL", "base_url"), ("SIYU_LLM_MODEL", "model")):
        if env.get(variable):
            data["llm"] = {**(data.get("llm") or {}), key: env[variable]}
    _adapter_env(data, sections, env, path, doc)
    model = settings_model(sections)
    try:
        settings = model.model_validate(data)
    except ValidationError as exc:
        voice = Voice(noun="setting", see="check the spelling against README 'Configuration'")
        raise ScriptError(problems_from(exc, model, data, doc or YamlDocument(str(path), data), voice)) from None
    guide_ids = {s.id for s in settings.staff}
    if settings.default_guide and settings.default_guide not in guide_ids:
        line = doc.line("default_guide") if doc else 1
        raise ScriptError([Problem(str(path), line, f"default_guide '{settings.default_guide}' is not in "
                                   "staff — add it under staff: or fix the id")])
    owners: dict[tuple[str, str], str] = {}
    for n, member in enumerate(settings.staff):
        for channel, platform_id in member.identities.items():
            first = owners.setdefault((channel, platform_id), member.id)
            if first != member.id:  # whoever it is would act as both, and the logs would name either
                line = doc.line("staff", n, "identities", channel) if doc else 1
                raise ScriptError([Problem(str(path), line, f"staff '{first}' and '{member.id}' both have "
                                           f"{channel} id '{platform_id}' — an identity is one person's: keep it "
                                           "under one of them")])
    return settings
