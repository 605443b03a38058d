"""WeCom (企业微信): callback crypto, customer contact, 微信客服 and the AI bot (智能机器人)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pydantic import SecretStr

from adapters.wecom.settings import WeComSettings
from bot.plugin import Adapter, AdapterContext, AdapterSpec, Translator
from bot.transport import Transport

if TYPE_CHECKING:
    from aiohttp import web

CHANNEL = "wecom"
KF_CHANNEL = "wecom_kf"
AIBOT_CHANNEL = "wecom_aibot"
AIBOT_CALLBACK = "wecom_aibot_callback"  # inbox channel of the AI bot's HTTP callbacks
AIBOT_CALLBACK_PATH = "/wecom/aibot/callback"


def _plain(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


def build(context: AdapterContext[WeComSettings]) -> Adapter | None:
    """The app callback with customer contact and 微信客服 (corp id + token + AES key), and/or the AI bot."""
    settings = context.settings
    if not settings.callback_enabled and not settings.aibot_id:
        return None
    # the platform clients and crypto only when WeCom is on
    from adapters.wecom.adapter import WeComAdapter, WeComCallback, WeComKf
    from adapters.wecom.aibot import AiBotConnection
    from adapters.wecom.api import WeComClient
    from adapters.wecom.crypto import WeComCrypto
    from bot.durations import parse_duration

    transports: list[Transport] = []
    translators: dict[str, Translator] = {}
    routes: list[Callable[["web.Application"], None]] = []
    starts: list[Callable[[], None]] = []
    stops: list[Callable[[], Awaitable[None]]] = []
    remember, wake = context.store.remember_inbound, context.wake
    # the one place the secrets are unwrapped: the platform clients need them in plain text
    token, aes_key = _plain(settings.token), _plain(settings.encoding_aes_key)
    if settings.callback_enabled:
        assert settings.corp_id and token and aes_key
        client = WeComClient(settings.corp_id, _plain(settings.secret), context.clock, settings.api_base)
        kf = WeComKf(client, context.clock, context.store)
        wecom = WeComAdapter(client, settings.agent_id or "", context.clock, context.store,
                             context.staff_on(CHANNEL), context.zone, kf=kf,
                             assisted_expiry=parse_duration(settings.assisted_expiry), quotas=settings.quotas)
        transports += [wecom, kf]
        translators[CHANNEL] = wecom.translate
        crypto = WeComCrypto(token, aes_key, settings.corp_id)
        routes.append(WeComCallback(crypto, context.clock, remember, wake, settings.timestamp_window).install)
        stops.append(client.close)
    if settings.aibot_id:
        aibot = AiBotConnection(settings.aibot_id, _plain(settings.aibot_secret), context.handle, context.clock,
                                url=settings.aibot_url)
        transports.append(aibot)
        translators[AIBOT_CALLBACK] = aibot.translate_callback
        if token and aes_key:  # its JSON callback signs with an empty receive id
            crypto = WeComCrypto(token, aes_key, "")
            routes.append(WeComCallback(crypto, context.clock, remember, wake, settings.timestamp_window,
                                        AIBOT_CALLBACK_PATH, AIBOT_CALLBACK, json_bodies=True).install)
        if settings.aibot_secret:  # the long connection; without a secret the bot runs on its callback only
            starts.append(aibot.start)
            stops.insert(0, aibot.stop)

    async def start() -> None:
        for step in starts:
            step()

    async def stop() -> None:
        for step in stops:
            await step()

    def install(web_app: "web.Application") -> None:
        for route in routes:
            route(web_app)

    return Adapter(transports, install, translators, start, stop)


SPEC = AdapterSpec("wecom", WeComSettings, build,
                   env=("corp_id", "token", "encoding_aes_key", "secret", "agent_id", "api_base", "timestamp_window",
                        "aibot_id", "aibot_secret", "aibot_url"),
                   secrets=("token", "encoding_aes_key", "secret", "aibot_secret"))
