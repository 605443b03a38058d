"""Teaching the bot from the console: a question becomes an FAQ example, or a new intent.

`faq.yaml` stays the operator's source of truth: the change is made to the file itself with a
round-trip YAML editor (comments, order and quoting kept), checked by the same sandboxed checker
as `siyu check` before it replaces the file atomically, and then loaded, so the next question is
answered with it. A change that does not pass is refused with its `FILE:LINE` problems and the
file is left as it was.
"""
from __future__ import annotations

import asyncio
import io
import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from bot.app import App
from bot.script_sandbox import FileJob, check_files
from console.auth import Refused
from console.models import FaqChange, FaqIntentSummary
from intents.catalog import INTENT_ID
from intents.normalize import normalize

NO_FAQ = "还没有 FAQ 文件（{path}）：请先在脚本目录里写好 faq.yaml"
UNKNOWN_INTENT = "没有 FAQ 意图 '{intent}'；可用：{known}"
ALREADY_THERE = "「{text}」已经是意图 {intent} 的例句了"
INTENT_EXISTS = "意图 '{intent}' 已经存在：请改用「加为例句」"
BAD_ID = "意图 id 要以字母开头，只用字母、数字和下划线，例如 gift_wrap"
NOT_VALID = "改动没有通过检查，faq.yaml 保持原样：{problems}"
UNREADABLE = "faq.yaml 现在读不出来（{problem}），请先用 siyu check 修好它"


class FaqTeacher:
    """Adds examples and intents to the scripts directory's faq.yaml, one change at a time."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.path = app.library.root / "faq.yaml"
        self._lock = asyncio.Lock()  # one edit at a time in this process; the file swap is atomic for others

    def intents(self) -> list[FaqIntentSummary]:
        return [FaqIntentSummary(id=i.id, description=i.description, answer=i.answer, examples=list(i.examples))
                for i in self.app.library.catalog.intents]

    async def add_example(self, intent: str, text: str) -> FaqChange:
        text = text.strip()
        known = {i.id: i for i in self.app.library.catalog.intents}
        if intent not in known:
            raise Refused(404, UNKNOWN_INTENT.format(intent=intent, known=", ".join(sorted(known)) or "无"))
        for other in known.values():
            if normalize(text) in {normalize(e) for e in other.examples}:
                raise Refused(409, ALREADY_THERE.format(text=text, intent=other.id))

        def edit(data: Any) -> list[str]:
            entry = _find(data, intent)
            if entry is None:  # the running catalog has it but the file no longer does: edited meanwhile
                raise Refused(409, UNKNOWN_INTENT.format(intent=intent, known="请刷新页面"))
            examples = entry.get("examples")
            if not isinstance(examples, list):
                examples = CommentedSeq()
                entry["examples"] = examples
            examples.append(text)
            return [str(e) for e in examples]

        examples = await self._change(edit)
        return FaqChange(intent=intent, examples=examples, created=False,
                         message=f"已把「{text}」加为意图 {intent} 的例句，机器人现在就会这样回答")

    async def add_intent(self, intent: str, answer: str, examples: list[str], description: str | None) -> FaqChange:
        if not INTENT_ID.match(intent):
            raise Refused(422, BAD_ID)
        if intent in {i.id for i in self.app.library.catalog.intents}:
            raise Refused(409, INTENT_EXISTS.format(intent=intent))
        clean = [e.strip() for e in examples if e.strip()]

        def edit(data: Any) -> list[str]:
            intents = data.get("intents")
            if not isinstance(intents, list):
                intents = CommentedSeq()
                data["intents"] = intents
            if _find(data, intent) is not None:
                raise Refused(409, INTENT_EXISTS.format(intent=intent))
            entry = CommentedMap()
            entry["id"] = intent
            entry["description"] = description or (clean[0] if clean else "")
            entry["examples"] = CommentedSeq(clean)
            entry["answer"] = answer
            intents.append(entry)
            return clean

        saved = await self._change(edit)
        return FaqChange(intent=intent, examples=saved, created=True,
                         message=f"已新建意图 {intent}（{len(saved)} 个例句），机器人现在就会这样回答")

    async def _change(self, edit: Any) -> list[str]:
        """Edit, check, swap in, load: the bot answers with the new catalog when this returns."""
        async with self._lock:
            result = await asyncio.to_thread(self._rewrite, edit)
            await asyncio.to_thread(self.app.library.reload)
            await self.app.engine.answers.refresh()
        return result

    def _rewrite(self, edit: Any) -> list[str]:
        if not self.path.exists():
            raise Refused(404, NO_FAQ.format(path=self.path))
        yaml = YAML()  # round-trip: comments, key order and quoting survive
        yaml.preserve_quotes = True
        yaml.width = 4096  # never re-wrap an operator's long answer
        try:
            data = yaml.load(self.path.read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001 — any parse failure is the same answer: fix the file first
            raise Refused(409, UNREADABLE.format(problem=type(exc).__name__)) from None
        if not isinstance(data, dict):
            raise Refused(409, UNREADABLE.format(problem="不是一个映射"))
        result = edit(data)
        out = io.StringIO()
        yaml.dump(data, out)
        self._replace_checked(out.getvalue())
        return result

    def _replace_checked(self, text: str) -> None:
        """Write beside the file, check it as `siyu check` would, then rename over it (atomic)."""
        folder = self.path.parent
        handle, name = tempfile.mkstemp(prefix=".faq-console-", suffix=".yaml", dir=folder)
        temp = Path(name)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            verdict = check_files([FileJob(temp, str(self.path), "faq")], self.app.settings.brand,
                                  self.app.library.limits)[0]
            if verdict.problems:
                raise Refused(422, NOT_VALID.format(problems="；".join(str(p) for p in verdict.problems[:5])))
            if self.path.exists():
                os.chmod(temp, self.path.stat().st_mode & 0o777)
            os.replace(temp, self.path)
        finally:
            temp.unlink(missing_ok=True)


def _find(data: Any, intent: str) -> Any:
    intents = data.get("intents") if isinstance(data, dict) else None
    if not isinstance(intents, list):
        return None
    return next((e for e in intents if isinstance(e, dict) and e.get("id") == intent), None)
