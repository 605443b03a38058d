"""The console: guides and operators in the browser (`/console`), backed by a JSON API (`/api`).

Like an adapter it is one more way in: staff are authenticated, and what they do becomes the
engine's own operations. `install` is the one hook `bot/app.py` calls.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bot.app import App

STATIC = Path(__file__).with_name("static")
NOT_BUILT = "控制台页面还没有安装（console/static/index.html 不存在）"


def install(web_app: web.Application, app: App) -> None:
    """Mount `/api` and serve `/console` (the page) and `/console/...` (its files)."""
    from console.events_api import install as install_events
    from console.routes import build_api  # the API pulls in the engine; the package itself stays light

    install_events(web_app, app)  # POST /api/events: integrations' business events, before the /api/ sub-app
    web_app.add_subapp("/api/", build_api(app))

    async def page(_request: web.Request) -> web.StreamResponse:
        index = STATIC / "index.html"
        if not index.exists():
            return web.Response(status=404, text=NOT_BUILT)
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    web_app.router.add_get("/console", page)
    web_app.router.add_get("/console/", page)
    if STATIC.is_dir():
        web_app.router.add_static("/console/static/", STATIC)
