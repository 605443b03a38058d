"""WeCom transports: the app callback, customer contact (客户联系) and 微信客服 (kf).

Capabilities differ per channel, and the adapter plans around them:
- `wecom`: staff get app messages directly (message/send); an external contact can only be
  greeted through the add event's welcome code (20 s, once), and is otherwise reached by an
  *assisted* send — the platform queues it for the guide to confirm (add_msg_template).
- `wecom_kf`: 微信客服 may answer directly, but only within 48 h of the customer's last
  message and at most 5 messages in that window.
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from xml.etree.ElementTree import Element
from zoneinfo import ZoneInfo

import defusedxml.ElementTree as SafeXML
from aiohttp import web
from defusedxml import DefusedXmlException

from adapters.bodies import BadBody, parse_json_object, read_text
from adapters.wecom.api import RETRYABLE, WeComClient, WeComError
from adapters.wecom.crypto import CallbackError, SignatureMismatch, StaleTimestamp, Undecryptable, WeComCrypto
from adapters.wecom.customers import CustomerOwnership
from adapters.wecom.settings import WeComQuotas
from bot.channel_rules import local_midnight, quota_blocks, window_refusal
from bot.clock import Clock
from bot.events import Action, ActionKind, ChatType, Event, EventKind, Profile, Role
from bot.plugin import AdapterStore
from bot.ratelimit import TokenBucket
from bot.transport import (
    FOREVER,
    ChannelLimits,
    ConfirmsPending,
    DedupesRepeats,
    DeliveryError,
    DeliveryInDoubt,
    HandsOverCustomers,
    Limited,
    MakesContactCodes,
    Pending,
    PendingMessage,
    PendingState,
)

log = logging.getLogger(__name__)
from adapters.wecom import CHANNEL, KF_CHANNEL

CALLBACK_PATH = "/wecom/callback"
WELCOME_WINDOW = timedelta(seconds=20)
KF_WINDOW = timedelta(hours=48)
KF_MAX_MESSAGES = 5
KF_CURSOR_KEY = "wecom_kf:cursor"

KF_LIMITS = ChannelLimits(reply_window=KF_WINDOW, window_messages=KF_MAX_MESSAGES)
# message/send drops the same request (same JSON) to the same member within this interval (WeCom's default)
APP_DUPLICATE_CHECK = timedelta(seconds=1800)
MAX_MESSAGE_ID = 128  # WeCom's message ids are a few dozen characters
SHA1_HEX = re.compile(r"[0-9a-fA-F]{40}")
BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
NONCE = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII: WeCom's nonces are short digits and letters
Remember = Callable[[str, str, str], Awaitable[bool]]  # channel, dedupe key, payload → stored?


def _fields(xml: str) -> dict[str, str]:
    """Child elements of a WeCom XML document as a flat mapping (defusedxml: no entity tricks).

    Anything that is not such a document is a `BadBody`.
    """
    try:
        root: Element = SafeXML.fromstring(xml)
    except (SafeXML.ParseError, DefusedXmlException, ValueError) as exc:
        raise BadBody(f"not a WeCom XML document ({type(exc).__name__})") from None
    return {child.tag: (child.text or "").strip() for child in root if isinstance(child.tag, str)}


def _message_id(value: object) -> str | None:
    """A platform message id as the dedupe key: short text, or none at all."""
    if value is None or value == "":
        return None
    if not (isinstance(value, str) and len(value) <= MAX_MESSAGE_ID and value.isascii() and value.isprintable()):
        raise BadBody("the message id is not short, printable ASCII")
    return value


@dataclass
class WeComCallback:
    """`/wecom/callback`: verifies and decrypts, answers at once, and leaves the work to the inbox.

    Apps post XML and sign with the corp id as receive id; the AI bot (`json_bodies`) posts
    `{"encrypt": …}` JSON with an empty receive id.
    """

    crypto: WeComCrypto
    clock: Clock
    remember: Remember
    wake: Callable[[], None]
    timestamp_window: int = 300
    path: str = CALLBACK_PATH
    channel: str = CHANNEL
    json_bodies: bool = False

    def install(self, app: web.Application) -> None:
        app.router.add_get(self.path, self._verify_url)
        app.router.add_post(self.path, self._receive)

    def _encrypted(self, body: str) -> str:
        encrypt = parse_json_object(body).get("encrypt", "") if self.json_bodies else _fields(body).get("Encrypt", "")
        if not isinstance(encrypt, str) or (encrypt and not BASE64.fullmatch(encrypt)):
            raise BadBody("the encrypted payload is not base64 text")
        return encrypt

    def _message_id(self, plain: str) -> str | None:
        if self.json_bodies:
            return _message_id(parse_json_object(plain).get("msgid"))
        return _message_id(_fields(plain).get("MsgId"))

    @staticmethod
    def _check_signed(query: Mapping[str, str]) -> None:
        """The signature parameters look like WeCom's, so nothing odd reaches the SHA1 (an unsigned request is 403)."""
        if not SHA1_HEX.fullmatch(query.get("msg_signature", "")):
            raise SignatureMismatch("msg_signature is not a SHA1 signature")
        if not NONCE.fullmatch(query.get("nonce", "")):
            raise SignatureMismatch("nonce is not short ASCII text")

    def _check_fresh(self, timestamp: str) -> None:
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise StaleTimestamp("timestamp is not a number of seconds")
        sent = int(timestamp)
        if self.timestamp_window and abs(self.clock.now().timestamp() - sent) > self.timestamp_window:
            raise StaleTimestamp(f"timestamp {sent} is outside ±{self.timestamp_window}s")

    async def _verify_url(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            self._check_signed(q)
            self._check_fresh(q.get("timestamp", ""))
            if not BASE64.fullmatch(q.get("echostr", "")):
                raise Undecryptable("echostr is not base64 text")
            self.crypto.verify(q.get("msg_signature", ""), q.get("timestamp", ""), q.get("nonce", ""),
                               q.get("echostr", ""))
            return web.Response(text=self.crypto.decrypt(q.get("echostr", "")))
        except CallbackError as exc:
            log.warning("wecom URL check refused (%s): %s", type(exc).__name__, exc)
            return web.Response(status=exc.status)

    async def _receive(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            # what can be checked without the body first: an unsigned or stale request is refused unread
            self._check_signed(q)
            self._check_fresh(q.get("timestamp", ""))
            try:
                encrypt = self._encrypted(await read_text(request))
            except BadBody as exc:
                raise Undecryptable(f"body is not acceptable: {exc}") from None
            if not encrypt:
                raise Undecryptable("no encrypted payload")
            self.crypto.verify(q.get("msg_signature", ""), q.get("timestamp", ""), q.get("nonce", ""), encrypt)
            plain = self.crypto.decrypt(encrypt)
            try:
                message_id = self._message_id(plain)
            except BadBody as exc:
                raise Undecryptable(f"decrypted message is not acceptable: {exc}") from None
        except CallbackError as exc:
            log.warning("wecom callback refused (%s): %s", type(exc).__name__, exc)
            return web.Response(status=exc.status)
        # WeCom retries after 5 s: store, answer at once, process from the inbox
        key = message_id or hashlib.sha256(plain.encode()).hexdigest()
        if await self.remember(self.channel, key, plain):
            self.wake()
        return web.Response(text="success")


@dataclass
class WeComAdapter(Limited, ConfirmsPending, DedupesRepeats, CustomerOwnership, HandsOverCustomers,
                   MakesContactCodes):
    """Customer contact and app messages for one corp."""

    client: WeComClient
    agent_id: str
    clock: Clock
    store: AdapterStore
    staff_ids: frozenset[str]
    zone: ZoneInfo
    kf: "WeComKf | None" = None
    assisted_expiry: timedelta = timedelta(hours=24)
    quotas: WeComQuotas = field(default_factory=WeComQuotas)
    channel: str = CHANNEL
    _app_buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _tag_ids: dict[str, str] = field(default_factory=dict)
    # welcome codes live 20 s, so keeping them in memory loses nothing a restart would not
    _welcome: dict[str, tuple[str, datetime]] = field(default_factory=dict)

    @property
    def limits(self) -> ChannelLimits:
        """External contacts: only assisted proactive sends, within WeCom's per-customer quotas."""
        return ChannelLimits(assisted=True, per_customer_day=self.quotas.member_per_customer_day,
                             per_customer_month=self.quotas.mass_per_customer_month,
                             month_is_days=self.quotas.mass_per_customer_month is None)

    async def translate(self, payload: str) -> list[Event]:
        """A stored callback → Events. One that is not a WeCom XML document becomes nothing, logged once,
        instead of failing the inbox item again and again."""
        try:
            f = _fields(payload)
        except BadBody as exc:
            log.warning("wecom: skipping a stored callback: %s", exc)
            return []
        now = self.clock.now()
        kind, event = f.get("MsgType"), f.get("Event", "")
        if kind == "text":  # a corp member writing to the app: commands, but only from configured staff
            sender = f.get("FromUserName", "")
            if sender not in self.staff_ids:
                log.warning("wecom: ignoring an app message from a corp member who is not configured staff")
                return []
            return [Event(EventKind.MESSAGE, CHANNEL, sender, now, text=f.get("Content", ""),
                          message_id=f.get("MsgId"), sender_role=Role.STAFF)]
        if kind != "event":
            return []
        if event == "kf_msg_or_event" and self.kf is not None:
            return await self.kf.pull(f.get("Token", ""), f.get("OpenKfId", ""))
        if event == "change_external_contact":
            return await self._contact_change(f, now)
        if event == "change_external_chat":
            return await self._chat_change(f, now)
        return []

    async def _contact_change(self, f: dict[str, str], now: datetime) -> list[Event]:
        change, customer, guide = f.get("ChangeType"), f.get("ExternalUserID", ""), f.get("UserID", "")
        if change in ("add_external_contact", "add_half_external_contact"):
            if f.get("WelcomeCode"):
                self._welcome[customer] = (f["WelcomeCode"], now)
            name, tags = await self._contact_detail(customer, guide)
            return [Event(EventKind.CONTACT_ADDED, CHANNEL, customer, now, profile=Profile(
                name=name, source=f.get("State") or None, tags=tags, guide_id=guide or None))]
        if change in ("del_external_contact", "del_follow_user"):
            return [Event(EventKind.CONTACT_REMOVED, CHANNEL, customer, now)]
        if change == "edit_external_contact":  # a guide edited the remark or the corp tags
            return [Event(EventKind.TAG_ADDED, CHANNEL, customer, now, tag=tag)
                    for tag in await self._tags_of(customer, guide)]
        return []

    async def _contact_detail(self, customer: str, guide: str) -> tuple[str, tuple[str, ...]]:
        """The contact's name and the corp tags its guide has given it (WeCom's own view)."""
        try:
            detail = await self.client.call("/externalcontact/get", params={"external_userid": customer})
        except WeComError as exc:
            log.warning("wecom: cannot read contact %s: %s", customer, exc)
            return customer, ()
        name = detail.get("external_contact", {}).get("name") or customer
        follow = next((u for u in detail.get("follow_user", []) if u.get("userid") == guide), {})
        return name, tuple(t.get("tag_name", "") for t in follow.get("tags", []) if t.get("tag_name"))

    async def _tags_of(self, customer: str, guide: str) -> tuple[str, ...]:
        return (await self._contact_detail(customer, guide))[1]

    async def _chat_change(self, f: dict[str, str], now: datetime) -> list[Event]:
        """Keep group membership in step with WeCom: joins, leaves and dismissal become Events."""
        chat, change = f.get("ChatId", ""), f.get("ChangeType")
        known = await self.store.group_members(CHANNEL, chat)
        if change == "dismiss":
            return [Event(EventKind.LEFT_GROUP, CHANNEL, member, now, ChatType.GROUP, chat) for member in sorted(known)]
        if change not in ("create", "update"):
            return []
        try:
            data = await self.client.call("/externalcontact/groupchat/get", {"chat_id": chat, "need_name": 1})
        except WeComError as exc:
            log.warning("wecom: cannot read group %s: %s", chat, exc)
            return []
        members = {m["userid"]: m for m in data.get("group_chat", {}).get("member_list", [])
                   if m.get("type") == 2 and m.get("userid")}  # 2 = external contact; staff are not customers
        joined = [Event(EventKind.JOINED_GROUP, CHANNEL, uid, now, ChatType.GROUP, chat,
                        profile=Profile(name=m.get("name") or None))
                  for uid, m in members.items() if uid not in known]
        # QuitScene 1: the group's owner or an admin took them out (0: they left); the API cannot say which
        # admin, so the owner stands for them. External groups cannot be moderated through the API, so this is
        # always a person's decision, never the guard's.
        removed = f.get("UpdateDetail") == "del_member" and f.get("QuitScene") == "1"
        remover = (data.get("group_chat", {}).get("owner") or "owner") if removed else None
        left = [Event(EventKind.LEFT_GROUP, CHANNEL, uid, now, ChatType.GROUP, chat, removed_by=remover)
                for uid in sorted(known - set(members))]
        return joined + left

    async def _tag_id(self, name: str) -> str | None:
        """Corp tag names → ids, read once from get_corp_tag_list and kept (tags change rarely)."""
        if name not in self._tag_ids:
            data = await self.client.call("/externalcontact/get_corp_tag_list", {})
            for group in data.get("tag_group", []):
                for tag in group.get("tag", []):
                    self._tag_ids[tag["name"]] = tag["id"]
        return self._tag_ids.get(name)

    async def mark_tag(self, guide: str, customer: str, name: str) -> None:
        """Write a tag onto the contact (the client retries WeCom's 45033 concurrency answers)."""
        tag_id = await self._tag_id(name)
        if tag_id is None:
            raise DeliveryError(f"no corp tag named {name!r} — create it in the WeCom admin console", permanent=True)
        await self.client.call("/externalcontact/mark_tag", {"userid": guide, "external_userid": customer,
                                                              "add_tag": [tag_id]})

    def repeat_window(self, action: Action) -> timedelta | None:
        """App messages to staff: WeCom's duplicate check drops a repeat for APP_DUPLICATE_CHECK. A tag
        the contact already has stays as it is, and other actions send nothing. A customer's message has
        no key to repeat safely: the welcome code lives only in memory (after a restart a repeat would
        become an assisted send), and a second add_msg_template queues a second task for the guide."""
        if action.kind is not ActionKind.SAY:
            return FOREVER
        return APP_DUPLICATE_CHECK if action.address.chat_id in self.staff_ids else None

    async def deliver(self, action: Action) -> Pending | None:
        target = action.address.chat_id
        try:
            if action.kind is ActionKind.TAG and action.sender_id and action.target_id:
                await self.mark_tag(action.sender_id, action.target_id, action.text)
                return None
            if action.kind is not ActionKind.SAY:
                return None  # external groups cannot be moderated through the API
            if target in self.staff_ids:
                await self._app_message(target, action.text)
                return None
            welcome = self._welcome.pop(target, None)
            if welcome is not None:
                code, received = welcome
                if self.clock.now() - received <= WELCOME_WINDOW:
                    return await self._welcome_message(code, action.text)
                log.info("wecom: welcome code for %s is older than 20 s; not attempted", target)
            return await self._assisted(target, action)
        except WeComError as exc:
            if exc.errcode == 0:  # no answer (timeout, lost connection): the request may have gone through
                raise DeliveryInDoubt(str(exc), retry_after=60) from None
            busy = exc.errcode in RETRYABLE  # still busy after the client's own retries
            raise DeliveryError(str(exc), permanent=not busy and exc.errcode != 0,
                                retry_after=60 if busy else None, pause_channel=busy) from None

    async def _app_message(self, userid: str, text: str) -> None:
        now = self.clock.now()
        bucket = self._app_buckets.get(userid)
        if bucket is None:
            per_minute = self.quotas.app_messages_per_member_minute
            bucket = self._app_buckets[userid] = TokenBucket(per_minute / 60, per_minute, now)
        wait = bucket.take(now)
        if wait > 0:
            raise DeliveryError(f"app messages to {userid}: {self.quotas.app_messages_per_member_minute}/min",
                                retry_after=wait)
        await self.client.call("/message/send", {"touser": userid, "msgtype": "text",
                                                 "agentid": int(self.agent_id or 0), "text": {"content": text},
                                                 "enable_duplicate_check": 1,
                                                 "duplicate_check_interval": int(APP_DUPLICATE_CHECK.total_seconds())})

    async def _welcome_message(self, code: str, text: str) -> None:
        try:
            await self.client.call("/externalcontact/send_welcome_msg", {"welcome_code": code,
                                                                         "text": {"content": text}},
                                   repeatable=False)
        except WeComError as exc:
            if exc.errcode != 41051:
                raise
            # another app greeted first: recorded, and nothing else to do
            raise DeliveryError("41051: the customer was already welcomed by another app", permanent=True) from None

    async def _check_quotas(self, customer: str) -> None:
        """The backstop for what the policy planned: wait (never drop) when WeCom's quotas are used up."""
        now = self.clock.now()
        month_start = local_midnight(now.astimezone(self.zone).date().replace(day=1), self.zone)
        sent = await self.store.assisted_send_times(CHANNEL, customer, month_start)
        blocks = quota_blocks(self.limits, sent, now, self.zone)
        if blocks:
            until, _, detail = max(blocks)
            raise DeliveryError(f"WeCom: {detail}", retry_after=(until - now).total_seconds())

    async def _assisted(self, customer: str, action: Action) -> Pending:
        guide = action.sender_id if action.sender_id and action.sender_id != "bot" else None
        if guide is None:
            raise DeliveryError(f"no guide to send as for {customer}", permanent=True)
        await self._check_quotas(customer)
        result = await self.client.call("/externalcontact/add_msg_template", {
            "chat_type": "single", "external_userid": [customer], "sender": guide,
            "text": {"content": action.text}}, repeatable=False)
        try:
            # the message number keeps two reminders with the same text apart (WeCom drops repeats to a member)
            await self._app_message(guide, f"您有一条客户消息待确认发送（编号 {action.ref}）：请在企业微信"
                                           f"「客户联系 → 群发助手」中确认。\n内容：{action.text[:60]}")
        except (DeliveryError, WeComError) as exc:  # the task exists: failing now would queue it a second time
            log.warning("wecom: could not remind guide %s of an assisted send: %s", guide, exc)
        return Pending(str(result.get("msgid", "")), self.clock.now() + self.assisted_expiry)

    async def check_pending(self, message: PendingMessage) -> PendingState:
        """What get_groupmsg_send_result says about one customer's copy of an assisted message."""
        if not message.platform_ref or not message.sender_id:
            return PendingState.FAILED
        try:
            data = await self.client.call("/externalcontact/get_groupmsg_send_result",
                                          {"msgid": message.platform_ref, "userid": message.sender_id,
                                           "limit": 1000})
        except WeComError as exc:
            raise DeliveryError(str(exc)) from None
        for row in data.get("send_list", []):
            if row.get("external_userid") == message.chat_id:
                # 0 not sent yet, 1 sent, 2 not a friend any more, 3 the customer's daily limit
                return {1: PendingState.SENT, 2: PendingState.FAILED, 3: PendingState.FAILED}.get(
                    int(row.get("status", 0)), PendingState.WAITING)
        return PendingState.WAITING


def _kf_messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    """sync_msg's messages that have the fields siyu needs. Others are skipped, and said so, so that one odd
    message cannot hold the cursor back forever."""
    listed = data.get("msg_list")
    if not isinstance(listed, list):
        return []
    usable = [m for m in listed if isinstance(m, dict)
              and all(isinstance(m.get(key), str) and m[key] for key in ("open_kfid", "external_userid", "msgid"))]
    if len(usable) < len(listed):
        log.warning("wecom kf: skipping %d messages without open_kfid, external_userid or msgid",
                    len(listed) - len(usable))
    return usable


@dataclass
class WeComKf(Limited, DedupesRepeats):
    """微信客服: pull messages with a persisted cursor, answer within the platform's window."""

    client: WeComClient
    clock: Clock
    store: AdapterStore
    channel: str = KF_CHANNEL

    @property
    def limits(self) -> ChannelLimits:
        return KF_LIMITS

    async def pull(self, token: str, open_kfid: str) -> list[Event]:
        events: list[Event] = []
        while True:
            cursor = await self.store.get_value(KF_CURSOR_KEY)
            body: dict[str, object] = {"limit": 1000, "open_kfid": open_kfid}
            if cursor:
                body["cursor"] = cursor
            if token:
                body["token"] = token
            data = await self.client.call("/kf/sync_msg", body)
            # 3 = from the customer; system events and our own echoes are not questions
            questions = [m for m in _kf_messages(data) if m.get("origin") == 3 and m.get("msgtype") == "text"]
            names = await self._nicknames({m["external_userid"] for m in questions})
            for message in questions:
                chat_id = f"{message['open_kfid']}:{message['external_userid']}"
                text = message.get("text")
                content = text.get("content") if isinstance(text, dict) else None
                events.append(Event(EventKind.MESSAGE, KF_CHANNEL, chat_id, self.clock.now(),
                                    text=content if isinstance(content, str) else "", message_id=message["msgid"],
                                    profile=Profile(name=names.get(message["external_userid"]))))
            if data.get("next_cursor"):
                await self.store.set_value(KF_CURSOR_KEY, str(data["next_cursor"]))  # saved per page: a restart resumes here
            if not data.get("has_more"):
                return events

    async def _nicknames(self, customers: set[str]) -> dict[str, str]:
        if not customers:
            return {}
        try:
            data = await self.client.call("/kf/customer/batchget", {"external_userid_list": sorted(customers)})
        except WeComError as exc:
            log.warning("wecom kf: cannot read customer names: %s", exc)
            return {}
        return {c["external_userid"]: c.get("nickname", "") for c in data.get("customer_list", [])
                if c.get("nickname")}

    def repeat_window(self, action: Action) -> timedelta | None:
        """kf/send_msg takes our own msgid, and WeCom refuses one it has seen in this kf account."""
        return FOREVER

    @staticmethod
    def msgid(action: Action) -> str:
        """The idempotency key: the outbox id, plus its queue time so a fresh database's ids never collide
        with an old one's (at most 32 of [0-9a-zA-Z_-])."""
        return f"siyu-{action.ref}-{int(action.at.timestamp())}"[:32]

    async def deliver(self, action: Action) -> None:
        if action.kind is not ActionKind.SAY:
            return
        open_kfid, _, customer = action.address.chat_id.partition(":")
        last_in, sent = await self.store.delivery_window(KF_CHANNEL, action.address.chat_id)
        refusal = window_refusal(KF_LIMITS, last_in, sent, self.clock.now())
        if refusal is not None:  # what 95018 would say, without asking
            raise DeliveryError(f"{refusal.reason}: {refusal.detail}", permanent=True)
        try:
            # a repeat after a crash is refused by WeCom (its msgid is taken), so it never shows twice;
            # that refusal's errcode is not documented, so it is retried and then recorded as a failure
            await self.client.call("/kf/send_msg", {"touser": customer, "open_kfid": open_kfid, "msgtype": "text",
                                                    "msgid": self.msgid(action), "text": {"content": action.text}})
        except WeComError as exc:
            raise DeliveryError(str(exc), permanent=exc.errcode == 95018) from None


