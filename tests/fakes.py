"""Fake platform servers on 127.0.0.1 that speak the real wire formats."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class FakeOpenAI:
    """`POST /v1/chat/completions` as an OpenAI-compatible server answers it.

    `reply(request_json)` returns the assistant message content, or raises web.HTTPException.
    """

    reply: Callable[[dict[str, Any]], str]
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: TestServer | None = None

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        content = self.reply(body)
        return web.json_response({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return f"http://127.0.0.1:{self.server.port}/v1"

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


def user_message(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def answer(intent: str, confidence: float = 0.9) -> str:
    return json.dumps({"intent": intent, "confidence": confidence})
