"""`adapters.webchat` in config.yaml."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class WebchatSettings(BaseModel):
    """The web chat page at `/`: on by default, with one demo group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    demo_group: str = "demo"
