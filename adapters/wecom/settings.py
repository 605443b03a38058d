"""`adapters.wecom` in config.yaml; the token, AES key and secrets come from the environment only."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bot.durations import parse_duration

DEFAULT_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin"
DEFAULT_AIBOT_URL = "wss://openws.work.weixin.qq.com"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeComQuotas(_Strict):
    """The platform's own limits, as policy inputs; configurable because WeCom changes them."""

    mass_per_customer_month: int | None = Field(None, ge=1)  # None: as many as days in the month (4 on old rules)
    member_per_customer_day: int = Field(1, ge=1)            # member-initiated sends per member per customer
    app_messages_per_member_minute: int = Field(30, ge=1)


class WeComSettings(_Strict):
    """The callback route is on when corp_id, token and encoding_aes_key are set; the AI bot with aibot_id."""

    corp_id: str | None = None
    agent_id: str | None = None
    api_base: str = DEFAULT_API_BASE
    timestamp_window: int = Field(300, ge=0)  # seconds; 0 disables the freshness check
    assisted_expiry: str = "24h"              # how long a guide has to confirm an assisted send
    quotas: WeComQuotas = WeComQuotas()
    aibot_id: str | None = None               # 智能机器人: long connection with SIYU_WECOM_AIBOT_SECRET
    aibot_url: str = DEFAULT_AIBOT_URL
    # SecretStr: repr() and str() show ******; only the adapter factory unwraps them
    aibot_secret: SecretStr | None = Field(None, exclude=True)
    token: SecretStr | None = Field(None, exclude=True)
    encoding_aes_key: SecretStr | None = Field(None, exclude=True)
    secret: SecretStr | None = Field(None, exclude=True)

    @field_validator("assisted_expiry")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def callback_enabled(self) -> bool:
        return bool(self.corp_id and self.token and self.encoding_aes_key)
