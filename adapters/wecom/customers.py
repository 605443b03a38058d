"""WeCom customer ownership: hand-over between guides (在职/离职继承) and 「联系我」 channel codes.

Wire formats (qyapi, customer-contact secret):
- `externalcontact/transfer_customer` (serving) and `externalcontact/resigned/transfer_customer`
  (departed): `{handover_userid, takeover_userid, external_userid: [...]}` → `customer: [{external_userid,
  errcode}]`; at most 100 customers per call.
- `externalcontact/transfer_result` and `externalcontact/resigned/transfer_result`: `{handover_userid,
  takeover_userid, cursor}` → `customer: [{external_userid, status, takeover_time}]`, `next_cursor`;
  status 1 taken over, 2 waiting, 3 refused by the customer, 4 the new guide is full, 5 no such transfer.
- `externalcontact/add_contact_way`: `{type: 2 (several guides), scene: 2 (QR code), state, user: [...],
  remark, skip_verify}` → `config_id`, `qr_code`. WeCom spreads the customers over `user`, and each add
  event carries `State`.
"""
from __future__ import annotations

from collections.abc import Sequence

from adapters.wecom.api import WeComClient, WeComError
from bot.transport import ContactCode, Handover, HandoverState

BATCH = 100  # customers per transfer call (the platform's limit)
_STATUS = {
    1: (HandoverState.ACCEPTED, ""),
    2: (HandoverState.WAITING, ""),
    3: (HandoverState.REFUSED, "客户拒绝"),
    4: (HandoverState.REFUSED, "接替成员的客户数已达上限"),
    5: (HandoverState.FAILED, "平台没有这条接替记录"),
}


def _path(departed: bool, name: str) -> str:
    return f"/externalcontact/{'resigned/' if departed else ''}{name}"


class CustomerOwnership:
    """Mixed into the WeCom adapter: the calls that move customers between guides and spread new ones."""

    client: WeComClient

    async def hand_over(self, from_guide: str, to_guide: str, customers: Sequence[str],
                        departed: bool) -> list[Handover]:
        """Ask WeCom to move the customers; each one's answer, or the whole batch's failure."""
        results: list[Handover] = []
        for start in range(0, len(customers), BATCH):
            batch = list(customers[start:start + BATCH])
            try:
                # a transfer is not repeated after no answer: the platform may have started it
                data = await self.client.call(_path(departed, "transfer_customer"), {
                    "handover_userid": from_guide, "takeover_userid": to_guide, "external_userid": batch},
                    repeatable=False)
            except WeComError as exc:
                results += [Handover(c, HandoverState.FAILED, f"企业微信返回 {exc.errcode}") for c in batch]
                continue
            answered = {row.get("external_userid"): int(row.get("errcode", 0)) for row in data.get("customer", [])}
            for customer in batch:
                code = answered.get(customer, 0)
                results.append(Handover(customer, HandoverState.WAITING) if code == 0 else
                               Handover(customer, HandoverState.FAILED, f"企业微信返回 {code}"))
        return results

    async def handover_results(self, from_guide: str, to_guide: str, departed: bool) -> list[Handover]:
        """Every page of transfer_result for this pair of guides."""
        results: list[Handover] = []
        cursor = ""
        while True:
            data = await self.client.call(_path(departed, "transfer_result"), {
                "handover_userid": from_guide, "takeover_userid": to_guide, "cursor": cursor})
            for row in data.get("customer", []):
                state, detail = _STATUS.get(int(row.get("status", 5)), _STATUS[5])
                results.append(Handover(str(row.get("external_userid", "")), state, detail))
            cursor = str(data.get("next_cursor") or "")
            if not cursor:
                return results

    async def create_contact_code(self, state: str, guides: Sequence[str], remark: str) -> ContactCode:
        """A multi-guide 「联系我」 QR code whose adds carry `state`."""
        data = await self.client.call("/externalcontact/add_contact_way", {
            "type": 2, "scene": 2, "state": state, "user": list(guides), "remark": remark[:30],
            "skip_verify": True}, repeatable=False)
        return ContactCode(str(data["config_id"]), str(data.get("qr_code", "")))
