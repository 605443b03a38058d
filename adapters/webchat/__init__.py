"""Web chat: a browser page over aiohttp + WebSocket where a person can be customer, group member or
(after logging in) guide."""
from __future__ import annotations

from adapters.webchat.settings import WebchatSettings
from bot.plugin import Adapter, AdapterContext, AdapterSpec

CHANNEL = "webchat"


def build(context: AdapterContext[WebchatSettings]) -> Adapter | None:
    if not context.settings.enabled:
        return None
    from adapters.webchat.server import WebChat

    # the page shows replies in order on the same socket, so each event is delivered before the next frame
    webchat = WebChat(context.handle_now, context.store, context.clock, context.settings.demo_group,
                      context.settings.secret)
    return Adapter(transports=[webchat], routes=webchat.install)


SPEC = AdapterSpec("webchat", WebchatSettings, build, env=("secret",), secrets=("secret",))
