"""Residents, conversations and the message log every channel writes to first."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from bot.models import CHANNELS, CONVERSATION_STATES, Conversation, Message, Resident

_MOBILE = re.compile(r"1[3-9]\d{9}")
_LANDLINE = re.compile(r"0\d{9,11}")


class ConversationError(ValueError):
    """Bad input to a conversation service; the message says what to pass instead."""


class InvalidPhone(ConversationError):
    """Text that is not a Chinese mobile or landline number."""


def normalize_phone(text: str) -> str:
    """Return the bare digits of a Chinese mobile or landline number, or raise InvalidPhone."""
    cleaned = re.sub(r"[\s\-()（）]", "", unicodedata.normalize("NFKC", text))
    cleaned = re.sub(r"^(?:\+86|0086|86)(?=1\d{10}$)", "", cleaned)
    if _MOBILE.fullmatch(cleaned) or _LANDLINE.fullmatch(cleaned):
        return cleaned
    raise InvalidPhone(
        f"{text!r} is not a phone number; give 11 mobile digits (e.g. 13800000000) "
        f"or a landline with area code (e.g. 0571-88001234)"
    )


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ConversationError("'now' must be timezone-aware, e.g. datetime.now(timezone.utc)")


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise ConversationError(f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")


def find_or_create_resident(
    session: Session,
    *,
    now: datetime,
    phone: str | None = None,
    wechat_openid: str | None = None,
    display_name: str | None = None,
) -> Resident:
    """Return the resident known by this phone or WeChat id, creating or linking as needed.

    When the phone and the WeChat id belong to two different residents, the WeChat
    resident (the actual sender) wins and the phone is left with its owner.
    """
    _require_aware(now)
    phone = normalize_phone(phone) if phone else None
    wechat_openid = wechat_openid.strip() if wechat_openid else None
    if not phone and not wechat_openid:
        raise ConversationError("pass phone or wechat_openid to identify the resident")

    resident = _resident_by(session, Resident.wechat_openid, wechat_openid)
    by_phone = _resident_by(session, Resident.phone, phone)
    resident = resident or by_phone
    if resident is None:
        resident = Resident(
            phone=phone, wechat_openid=wechat_openid, display_name=display_name, created_at=now
        )
        try:
            with session.begin_nested():
                session.add(resident)
            return resident
        except IntegrityError:
            # Another request created the same resident in between; use theirs.
            resident = _resident_by(session, Resident.wechat_openid, wechat_openid)
            by_phone = _resident_by(session, Resident.phone, phone)
            resident = resident or by_phone
            if resident is None:
                raise

    if wechat_openid and resident.wechat_openid is None:
        resident.wechat_openid = wechat_openid
    if phone and resident.phone is None and by_phone is None:
        resident.phone = phone
    if display_name and not resident.display_name:
        resident.display_name = display_name
    return resident


def _id_of(session: Session, obj: Resident | Conversation | None) -> int | None:
    if obj is None:
        return None
    if obj.id is None:
        session.add(obj)
        session.flush([obj])
    return obj.id


def _resident_by(session: Session, column: Any, value: str | None) -> Resident | None:
    if not value:
        return None
    return session.execute(select(Resident).where(column == value)).scalar_one_or_none()


def find_open_conversation(
    session: Session, *, channel: str, sender_key: str
) -> Conversation | None:
    """Return the conversation still open for this sender on this channel, if any."""
    return session.execute(
        select(Conversation).where(
            Conversation.channel == channel,
            Conversation.sender_key == sender_key,
            Conversation.state != "closed",
        )
    ).scalar_one_or_none()


def open_conversation(
    session: Session,
    *,
    channel: str,
    sender_key: str,
    now: datetime,
    resident: Resident | None = None,
) -> Conversation:
    """Return the sender's open conversation on this channel, starting one if none is open."""
    _require_aware(now)
    _check_channel(channel)
    if not sender_key:
        raise ConversationError("sender_key must identify the sender, e.g. the WeChat openid")
    conversation = find_open_conversation(session, channel=channel, sender_key=sender_key)
    if conversation is None:
        conversation = Conversation(
            channel=channel,
            sender_key=sender_key,
            resident_id=_id_of(session, resident),
            state="bot",
            started_at=now,
            last_message_at=now,
        )
        try:
            with session.begin_nested():
                session.add(conversation)
        except IntegrityError:
            # A concurrent message from the same sender opened it first.
            conversation = find_open_conversation(session, channel=channel, sender_key=sender_key)
            if conversation is None:
                raise
    if resident is not None and conversation.resident is None:
        conversation.resident = resident
    return conversation


def set_conversation_state(
    session: Session, *, conversation: Conversation, state: str, now: datetime
) -> None:
    """Move a conversation to bot, queued, agent or closed."""
    _require_aware(now)
    if state not in CONVERSATION_STATES:
        raise ConversationError(
            f"unknown state {state!r}; use one of {', '.join(CONVERSATION_STATES)}"
        )
    conversation.state = state
    session.add(conversation)


def _duplicate(session: Session, channel: str, provider_message_id: str) -> Message | None:
    return session.execute(
        select(Message).where(
            Message.channel == channel, Message.provider_message_id == provider_message_id
        )
    ).scalar_one_or_none()


def record_inbound(
    session: Session,
    *,
    channel: str,
    sender_key: str,
    text: str,
    now: datetime,
    provider_message_id: str | None = None,
    payload: Mapping[str, Any] | None = None,
    resident: Resident | None = None,
) -> tuple[Message, bool]:
    """Store a resident's message before anything else; return it and whether it is a repeat.

    A repeat (same channel and provider_message_id, e.g. a webhook retry) returns the
    stored message untouched. Commit right after this call so the message survives
    any failure in the processing that follows.
    """
    _require_aware(now)
    _check_channel(channel)
    if provider_message_id:
        existing = _duplicate(session, channel, provider_message_id)
        if existing is not None:
            return existing, True
    conversation = open_conversation(
        session, channel=channel, sender_key=sender_key, now=now, resident=resident
    )
    # Link by id, not by relationship: a backref cascade would put the message into the
    # session outside the savepoint below.
    message = Message(
        conversation_id=_id_of(session, conversation),
        direction="in",
        channel=channel,
        text=text,
        provider_message_id=provider_message_id or None,
        payload=dict(payload) if payload is not None else None,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(message)
    except IntegrityError:
        if provider_message_id:
            existing = _duplicate(session, channel, provider_message_id)
            if existing is not None:
                return existing, True
        raise
    conversation.last_message_at = max(conversation.last_message_at, now)
    return message, False


def record_outbound(
    session: Session,
    *,
    conversation: Conversation,
    text: str,
    now: datetime,
    provider_message_id: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Message:
    """Store a reply sent to the resident on the conversation's channel."""
    _require_aware(now)
    message = Message(
        conversation_id=_id_of(session, conversation),
        direction="out",
        channel=conversation.channel,
        text=text,
        provider_message_id=provider_message_id or None,
        payload=dict(payload) if payload is not None else None,
        created_at=now,
    )
    session.add(message)
    conversation.last_message_at = max(conversation.last_message_at, now)
    return message


def transcript(conversation: Conversation) -> list[dict[str, Any]]:
    """Return the conversation's messages oldest first, as plain dicts for a human agent."""
    session = object_session(conversation)
    if session is None:
        raise ConversationError("transcript needs a conversation attached to a session")
    messages = session.execute(
        select(Message)
        .where(Message.conversation_id == conversation.id)
        .order_by(Message.created_at, Message.id)
    ).scalars()
    return [
        {
            "direction": m.direction,
            "text": m.text,
            "at": m.created_at.isoformat(),
            "provider_message_id": m.provider_message_id,
        }
        for m in messages
    ]
