"""The one message type every channel hands to the conversation hub."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Inbound:
    """One message from a resident, already verified and normalised by its channel."""

    channel: str
    sender_key: str
    text: str
    provider_message_id: str | None = None
    phone: str | None = None
    wechat_openid: str | None = None
    payload: dict[str, Any] | None = None


__all__ = ["Inbound"]
