"""`adapters.webchat` in config.yaml; the session signing secret comes from the environment only."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

MIN_SECRET = 32


class WebchatSettings(BaseModel):
    """The web chat page at `/`: on by default, with one demo group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    demo_group: str = "demo"
    # SIYU_WEBCHAT_SECRET signs customer sessions and guide logins. Unset, siyu generates one and keeps
    # it in the database, which is enough; set it to share one across databases or to rotate it.
    secret: SecretStr | None = Field(None, exclude=True)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # our own message: pydantic's would quote the secret
        if value is not None and len(value.get_secret_value()) < MIN_SECRET:
            raise ValueError(f"is too short to sign sessions — set SIYU_WEBCHAT_SECRET to at least {MIN_SECRET} "
                             "random characters, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
        return value
