"""Photos and shared locations a resident sends: kept as evidence on their work order.

A photo that arrives on its own goes straight onto the resident's open order in that
conversation; one that comes before the order exists (or with a description of a new
problem) waits and is attached when the order is created. Provider media URLs are
temporary (WeChat's PicUrl, Twilio's MediaUrl): the stored media id / URL lets staff
fetch the file while it lives; copying files into storage is left to the console.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.models import Attachment, Conversation, Message, Ticket
from bot.texts import text as domain_text
from bot.tickets import record_event

# A photo sent on its own within this time after an order was made belongs to that order.
ATTACH_WINDOW = timedelta(days=7)
# A location shared this long before the order is taken as the order's location.
LOCATION_WINDOW = timedelta(hours=1)
_OPEN = ("new", "dispatched", "accepted", "in_progress", "reopened")


def _photos_of(payload: dict[str, Any] | None) -> list[dict[str, str | None]]:
    if not payload:
        return []
    found: list[dict[str, str | None]] = []
    image = payload.get("image")
    if isinstance(image, dict):
        found.append({"kind": "image", "url": image.get("url"), "media_id": image.get("media_id"),
                      "content_type": "image/jpeg"})
    for item in payload.get("media") or ():
        if isinstance(item, dict) and item.get("url"):
            content_type = str(item.get("content_type") or "")
            kind = "image" if content_type.startswith("image/") else "file"
            found.append({"kind": kind, "url": item["url"], "media_id": None,
                          "content_type": content_type[:64] or None})
    return found


def _open_ticket(session: Session, conversation_id: int, now: datetime) -> Ticket | None:
    return session.execute(
        select(Ticket).where(Ticket.conversation_id == conversation_id,
                             Ticket.status.in_(_OPEN),
                             Ticket.created_at >= now - ATTACH_WINDOW)
        .order_by(Ticket.id.desc()).limit(1)
    ).scalar_one_or_none()


def store_photos(session: Session, *, message: Message, payload: dict[str, Any] | None,
                 now: datetime) -> int:
    """Store the photos a message carries; return how many."""
    photos = _photos_of(payload)
    if not photos:
        return 0
    # Only a photo sent on its own is about the order already open; with words it may
    # be the start of a new report, and waits for the order this turn creates.
    ticket = _open_ticket(session, message.conversation_id, now) if not message.text else None
    for photo in photos:
        session.add(Attachment(conversation_id=message.conversation_id, message_id=message.id,
                               ticket_id=ticket.id if ticket else None, kind=str(photo["kind"]),
                               url=photo["url"], media_id=photo["media_id"],
                               content_type=photo["content_type"], created_at=now))
    if ticket is not None:
        record_event(session, ticket=ticket, kind="evidence_added", actor="resident", now=now,
                     data={"count": len(photos), "message_id": message.id})
    session.flush()
    return len(photos)


def acknowledge(session: Session, conversation: Conversation, *, now: datetime) -> str:
    """Tell the resident where their photo went."""
    latest = session.execute(
        select(Attachment).where(Attachment.conversation_id == conversation.id)
        .order_by(Attachment.id.desc()).limit(1)
    ).scalar_one_or_none()
    if latest is not None and latest.ticket_id is not None:
        ticket = session.get(Ticket, latest.ticket_id)
        if ticket is not None:
            return domain_text("utter_photo_attached", number=ticket.number)
    return domain_text("utter_photo_received")


def attach_to_new_ticket(session: Session, *, ticket: Ticket, conversation: Conversation,
                         now: datetime) -> None:
    """Give a new order the photos and location its resident sent before it existed."""
    loose = session.execute(
        select(Attachment).where(Attachment.conversation_id == conversation.id,
                                 Attachment.ticket_id.is_(None))
    ).scalars().all()
    for attachment in loose:
        attachment.ticket_id = ticket.id
    if loose:
        record_event(session, ticket=ticket, kind="evidence_added", actor="resident", now=now,
                     data={"count": len(loose)})
    shared = _recent_location(session, conversation.id, since=ticket.created_at - LOCATION_WINDOW)
    if shared is not None:
        label = str(shared.get("label") or "").strip()
        if not ticket.address_text:
            ticket.address_text = (label or f"{shared['lat']:.5f},{shared['lng']:.5f}")[:255]
        record_event(session, ticket=ticket, kind="location_shared", actor="resident", now=now,
                     data={"lat": shared["lat"], "lng": shared["lng"], "label": label})


def _recent_location(session: Session, conversation_id: int,
                     *, since: datetime) -> dict[str, Any] | None:
    messages = session.execute(
        select(Message).where(Message.conversation_id == conversation_id,
                              Message.direction == "in", Message.created_at >= since)
        .order_by(Message.id.desc()).limit(20)
    ).scalars()
    for message in messages:
        location = (message.payload or {}).get("location")
        if isinstance(location, dict) and "lat" in location and "lng" in location:
            return location
    return None
