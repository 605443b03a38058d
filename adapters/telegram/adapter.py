"""Translates Telegram updates into Events, and queued Actions into Bot API calls."""
from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import httpx
from aiohttp import web
from telegram import (
    BotCommand,
    BotCommandScopeChat,
    BotCommandScopeDefault,
    ChatMember,
    ChatPermissions,
    Message,
    Update,
)
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, ContextTypes, TypeHandler

from adapters.bodies import BadBody, parse_json_object, read_text
from bot.clock import Clock
from bot.transport import FOREVER, DedupesRepeats, DeliveryError, DeliveryInDoubt, LinksConversations
from bot.events import Action, ActionKind, ChatType, Event, EventKind, Profile, Role

log = logging.getLogger(__name__)
from adapters.telegram import CHANNEL
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
PUBLIC_COMMANDS = {"start": "开始聊天", "help": "帮助"}


def _content_type(message: Message) -> str:
    if message.contact:
        return "business_card"
    if message.photo:
        return "image"
    if message.document or message.video or message.audio or message.voice:
        return "file"
    if message.via_bot:
        return "mini_program"  # inline-bot content: the closest thing Telegram has
    return "text"


def _text_of(message: Message) -> str:
    """The message's text or caption; PTB does not check types, so anything but text counts as none."""
    text = message.text or message.caption or ""
    return text if isinstance(text, str) else ""


def _may_have_arrived(exc: NetworkError) -> bool:
    """A network failure after the request may have gone out: only a refused connection or a
    connection that was never made is known not to have reached Telegram."""
    cause = exc.__cause__
    return not isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


class TelegramAdapter(LinksConversations, DedupesRepeats):
    """One bot token; polling or webhook; delivery through the bot with Telegram's own rate limiter."""

    channel = CHANNEL

    def __init__(self, token: str, api_base: str, handle: Callable[[Event], Awaitable[None]], clock: Clock,
                 guide_ids: Sequence[str], staff_commands: dict[str, str], mode: str = "polling",
                 webhook_url: str | None = None, webhook_secret: str | None = None) -> None:
        self.handle = handle
        self.clock = clock
        self.guide_ids = list(guide_ids)
        self.staff_commands = staff_commands
        self.mode = mode
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self._no_admin_warned: set[str] = set()
        builder: ApplicationBuilder = (
            ApplicationBuilder().token(token).base_url(api_base)
            .base_file_url(api_base.replace("/bot", "/file/bot"))
            # Telegram's flood limits; siyu's dispatcher handles RetryAfter itself, durably
            .rate_limiter(AIORateLimiter(max_retries=0))
        )
        if mode == "webhook":
            builder = builder.updater(None)
        self.app: Application = builder.build()
        self.app.add_handler(TypeHandler(Update, self._on_update))

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.app.initialize()
        await self.app.start()
        await self._register_commands()
        if self.mode == "webhook":
            await self.app.bot.set_webhook(self.webhook_url or "", secret_token=self.webhook_secret,
                                           allowed_updates=Update.ALL_TYPES)
        else:
            assert self.app.updater is not None
            await self.app.updater.start_polling(poll_interval=0.0, timeout=10, allowed_updates=Update.ALL_TYPES)
        log.info("telegram: @%s is up (%s)", self.app.bot.username, self.mode)

    async def stop(self) -> None:
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    async def _register_commands(self) -> None:
        public = [BotCommand(name, text) for name, text in PUBLIC_COMMANDS.items()]
        await self.app.bot.set_my_commands(public, scope=BotCommandScopeDefault())
        staff = [BotCommand(name, text[:256]) for name, text in self.staff_commands.items()]
        for guide in self.guide_ids:
            try:  # a guide who never opened a chat with the bot cannot be scoped yet
                await self.app.bot.set_my_commands(staff, scope=BotCommandScopeChat(int(guide)))
            except TelegramError as exc:
                log.warning("telegram: cannot register commands for guide %s: %s", guide, exc)

    def install(self, web_app: web.Application) -> None:
        """The webhook route, served by siyu's own aiohttp server."""
        web_app.router.add_post(WEBHOOK_PATH, self._webhook)

    async def _webhook(self, request: web.Request) -> web.Response:
        """Only Telegram knows the secret: without it (or with no secret configured) nothing is read."""
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
        if not self.webhook_secret or not hmac.compare_digest(given, self.webhook_secret.encode()):
            log.warning("telegram webhook: refused a request without the right secret token")
            return web.Response(status=403)
        try:
            data = parse_json_object(await read_text(request))  # too big: aiohttp's own 413 passes through
            if not isinstance(data.get("update_id"), int):
                raise BadBody("no update_id")
        except BadBody as exc:
            log.warning("telegram webhook: refused a body: %s", exc)
            return web.Response(status=400)
        try:
            update = Update.de_json(data, self.app.bot)
        except Exception as exc:  # PTB's parser on an update of the wrong shape: many kinds of error, all a 400
            log.warning("telegram webhook: refused an update of the wrong shape (%s)", type(exc).__name__)
            return web.Response(status=400)
        await self.app.process_update(update)
        return web.Response(text="ok")

    def conversation_link(self, chat_id: str) -> str:
        return f"tg://user?id={chat_id}"

    # --- inbound ----------------------------------------------------------------------------

    async def _on_update(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        for event in self.translate(update):
            await self.handle(event)

    def translate(self, update: Update) -> list[Event]:
        """One update becomes zero or more Events; the adapter never decides what to say."""
        now = self.clock.now()
        if update.my_chat_member is not None:
            change = update.my_chat_member
            if change.chat.type == "private" and change.new_chat_member.status in (ChatMember.BANNED,
                                                                                   ChatMember.LEFT):
                user = change.from_user
                return [Event(EventKind.CONTACT_REMOVED, CHANNEL, str(user.id), now)]  # blocked the bot
            return []
        message = update.message or update.edited_message
        if message is None or message.from_user is None:
            return []
        user = message.from_user
        profile = Profile(name=user.full_name)
        if message.chat.type in ("group", "supergroup"):
            return self._group_events(message, now)
        if message.chat.type != "private":
            return []
        text = _text_of(message)
        if text.startswith("/start"):
            payload = text.partition(" ")[2].strip()  # deep link t.me/bot?start=<channel code>
            return [Event(EventKind.CONTACT_ADDED, CHANNEL, str(user.id), now,
                          profile=Profile(name=user.full_name, source=payload or "Telegram"))]
        return [Event(EventKind.MESSAGE, CHANNEL, str(user.id), now, text=text,
                      message_id=f"{message.chat.id}:{message.message_id}",
                      sender_role=Role.BOT if user.is_bot else Role.CUSTOMER, profile=profile,
                      content_type=_content_type(message))]

    def _group_events(self, message: Message, now: datetime) -> list[Event]:
        chat = str(message.chat.id)
        if message.new_chat_members:
            return [Event(EventKind.JOINED_GROUP, CHANNEL, str(m.id), now, ChatType.GROUP, chat,
                          profile=Profile(name=m.full_name)) for m in message.new_chat_members if not m.is_bot]
        if message.left_chat_member is not None:
            member, by = message.left_chat_member, message.from_user
            # someone else took them out: an admin (a person; the bot's own bans are the guard's, not staff's)
            removed_by = str(by.id) if by is not None and by.id != member.id and not by.is_bot else None
            return [Event(EventKind.LEFT_GROUP, CHANNEL, str(member.id), now, ChatType.GROUP, chat,
                          removed_by=removed_by)]
        user = message.from_user
        assert user is not None
        text = _text_of(message)
        username = self.app.bot.username
        mentioned = bool(username) and f"@{username}".lower() in text.lower()
        replied_to_bot = bool(message.reply_to_message and message.reply_to_message.from_user
                              and message.reply_to_message.from_user.id == self.app.bot.id)
        if mentioned:
            text = text.replace(f"@{username}", "").strip()
        return [Event(EventKind.MESSAGE, CHANNEL, str(user.id), now, ChatType.GROUP, chat, text=text,
                      message_id=f"{chat}:{message.message_id}",
                      sender_role=Role.BOT if user.is_bot else Role.CUSTOMER,
                      mentions_bot=mentioned or replied_to_bot, profile=Profile(name=user.full_name),
                      content_type=_content_type(message))]

    # --- outbound ---------------------------------------------------------------------------

    def repeat_window(self, action: Action) -> timedelta | None:
        """sendMessage has no idempotency key: a repeated SAY would show twice, so it is never repeated.
        Delete, restrict and ban set a state that a repeat leaves as it is (a repeated delete is refused
        as "not found"); a tag is not sent at all. One narrow exception: without admin rights a mute or
        remove falls back to a warning text, which a repeat after a crash in that call would show again."""
        return None if action.kind is ActionKind.SAY else FOREVER

    async def deliver(self, action: Action) -> None:
        chat_id = int(action.address.chat_id)
        bot = self.app.bot
        try:
            if action.kind is ActionKind.SAY:
                await bot.send_message(chat_id, action.text)
            elif action.kind is ActionKind.DELETE and action.target_ref:
                await bot.delete_message(chat_id, int(action.target_ref.rpartition(":")[2]))
            elif action.kind is ActionKind.MUTE and action.target_id:
                await self._moderate(action, bot.restrict_chat_member(
                    chat_id, int(action.target_id), ChatPermissions.no_permissions(), until_date=action.until))
            elif action.kind is ActionKind.UNMUTE and action.target_id:  # all permissions: the restriction lifted
                await self._moderate(action, bot.restrict_chat_member(
                    chat_id, int(action.target_id), ChatPermissions.all_permissions()))
            elif action.kind is ActionKind.TAG:
                return  # Telegram has no customer tags; siyu keeps them in storage
            elif action.kind is ActionKind.REMOVE and action.target_id:
                await self._moderate(action, bot.ban_chat_member(chat_id, int(action.target_id)))
        except RetryAfter as exc:
            wait = exc.retry_after
            seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
            raise DeliveryError(f"telegram asks to wait {seconds:.0f}s", retry_after=seconds,
                                pause_channel=True) from None
        except Forbidden as exc:
            if action.address.chat_type is ChatType.DIRECT:
                # the customer blocked the bot: record it as churn so nothing more is attempted
                await self.handle(Event(EventKind.CONTACT_REMOVED, CHANNEL, action.address.chat_id,
                                        self.clock.now()))
            raise DeliveryError(f"telegram: {exc.message}", permanent=True) from None
        except BadRequest as exc:
            raise DeliveryError(f"telegram: {exc.message}", permanent=True) from None
        except NetworkError as exc:  # TimedOut too; BadRequest was handled above
            if _may_have_arrived(exc):  # no answer to a request that went out: not a refusal
                raise DeliveryInDoubt(f"telegram: no answer ({type(exc).__name__})") from None
            raise DeliveryError(f"telegram: {exc}") from None
        except TelegramError as exc:
            raise DeliveryError(f"telegram: {exc}") from None

    async def _moderate(self, action: Action, call: Awaitable[object]) -> None:
        """Mute or ban; without admin rights say so once in the log and fall back to a warning."""
        try:
            await call
        except BadRequest as exc:
            if "rights" not in exc.message.lower() and "admin" not in exc.message.lower():
                raise
            group = action.address.chat_id
            if group not in self._no_admin_warned:
                self._no_admin_warned.add(group)
                log.warning("telegram: the bot is not an admin in %s (%s); warning instead of %s",
                            group, exc.message, action.kind.value)
            await self.app.bot.send_message(int(group), action.text or "请遵守群规，勿发广告或刷屏。")
