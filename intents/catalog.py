"""The FAQ catalog: intents with example questions and answers, from `scripts/faq.yaml` or JSONL.

`FaqFile` is faq.yaml as written; the bot validates it (and places problems on lines) in bot.library.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler,
                      field_validator)
from pydantic_core import InitErrorDetails

from intents.jsonl import read_jsonl

INTENT_ID = re.compile(r"^[A-Za-z][\w:.\-]*$")


@dataclass(frozen=True)
class FaqIntent:
    """One question type the bot can answer."""

    id: str
    examples: tuple[str, ...]
    answer: str
    description: str = ""
    in_groups: bool = True  # small talk is for 1v1; in a group it is noise
    kind: str = "faq"  # faq: answers a question; chitchat: small talk; decline: politely not our business


@dataclass(frozen=True)
class Catalog:
    """All FAQ intents plus the polite reply used when the bot is not sure."""

    intents: tuple[FaqIntent, ...]
    handoff_reply: str = "这个问题我请导购来为您解答，请稍等～"
    ack_reply: str = ""  # said to 「好的」「👍」 and the like; empty: nothing is said (and nobody is called)

    @cached_property
    def _by_id(self) -> dict[str, FaqIntent]:
        return {i.id: i for i in self.intents}

    def get(self, intent_id: str) -> FaqIntent | None:
        return self._by_id.get(intent_id)


def _text(what: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"has an empty {what}")
        return value.strip() if isinstance(value, str) else value
    return check


class IntentFile(BaseModel):
    """One intent in faq.yaml as written."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="a word like shipping_time")
    description: str = ""
    examples: list[Annotated[str, AfterValidator(_text("example — write how customers really ask"))]] = Field(
        min_length=1, description="how customers really ask, several phrasings, e.g. examples: [包邮吗, 运费多少]")
    answer: Annotated[str, AfterValidator(_text("'answer' — write what the bot replies"))] = Field(
        description="what the bot replies")
    in_groups: bool = Field(True, strict=True)
    kind: Literal["faq", "chitchat", "decline"] = Field(
        "faq", description="faq (a question we answer), chitchat (small talk) or decline (not our business)")

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        if not isinstance(value, str) or not INTENT_ID.match(value):
            raise ValueError(f"id {value!r} — expected a word like shipping_time")
        return value

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, value: Any) -> str:
        return "" if value is None else str(value).strip()

    def intent(self) -> FaqIntent:
        return FaqIntent(self.id, tuple(self.examples), self.answer, self.description, self.in_groups, self.kind)


class FaqFile(BaseModel):
    """faq.yaml as written: the intents and the reply used when the bot hands a question to a guide."""

    model_config = ConfigDict(extra="forbid")

    handoff_reply: str | None = None
    ack_reply: str | None = None
    intents: list[IntentFile] = Field(description="a list of {id, examples, answer}")

    @field_validator("intents", mode="wrap")
    @classmethod
    def _unique_ids(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> list[IntentFile]:
        """Repeated ids are reported together with every other problem of the intents, not after them."""
        ids = [i.get("id") if isinstance(i, dict) else None for i in value] if isinstance(value, list) else []
        seen: set[str] = set()
        repeats = []
        for index, intent_id in enumerate(ids):
            if isinstance(intent_id, str) and intent_id in seen:
                repeats.append(InitErrorDetails(type="value_error", loc=(index, "id"), input=intent_id,
                                                ctx={"error": ValueError("is used twice — intent ids must be unique")}))
            if isinstance(intent_id, str):
                seen.add(intent_id)
        try:
            intents = handler(value)
        except ValidationError as exc:
            if not repeats:
                raise
            found = [InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"],  # type: ignore[typeddict-item]
                                      ctx=e.get("ctx", {})) for e in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, found + repeats) from None
        if repeats:
            raise ValidationError.from_exception_data(cls.__name__, repeats)
        return intents

    def catalog(self) -> Catalog:
        handoff = (self.handoff_reply or "").strip()
        return Catalog(tuple(i.intent() for i in self.intents), handoff or Catalog.handoff_reply,
                       (self.ack_reply or "").strip())


def catalog_from_jsonl(path: Path) -> Catalog:
    """`{"intent": id, "examples": [...], "answer": "..."}` per line (the `siyu eval` format)."""
    return Catalog(tuple(read_jsonl(path, lambda row: FaqIntent(
        str(row["intent"]), tuple(row["examples"]), str(row.get("answer", "")), str(row.get("description", ""))),
        '{"intent": id, "examples": [...], "answer": "..."}')))
