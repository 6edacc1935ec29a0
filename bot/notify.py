"""Status updates to the resident — re-dispatch, acceptance, progress, resolution — via the outbox.

Called inside the transaction that records the change, so the update is stored exactly
when the change is. The update goes to the channel the resident reported on; a hotline
caller gets it by SMS. The resolution update asks for a 1-5 rating, which the resident
answers with one digit (the hub reads it through the conversation's pending choices).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from bot.conversations import open_conversation
from bot.models import Conversation, OutboxMessage, Resident, Ticket, TicketEvent
from bot.outbox import enqueue
from bot.texts import text as domain_text
from channels.menus import numbered_menu
from routing.catalogue import Catalogue
from routing.dispatch import department_name

UPDATES = {
    "dispatched": "utter_update_dispatched",
    "accepted": "utter_update_accepted",
    "progress": "utter_update_progress",
    "resolved": "utter_update_resolved",
}
# Ordered so that "回复1" is the lowest score and "回复5" the highest.
RATING_TITLES = ("很不满意", "不满意", "一般", "满意", "非常满意")
NOTE_MAX_CHARS = 40


def delivery_target(session: Session, ticket: Ticket) -> tuple[str, str] | None:
    """Return (outbox channel, address) that reaches the ticket's resident, or None."""
    conversation = session.get(Conversation, ticket.conversation_id) if ticket.conversation_id \
        else None
    resident = session.get(Resident, ticket.resident_id) if ticket.resident_id else None
    if conversation is not None:
        if conversation.channel in ("web", "wechat", "sms"):
            return conversation.channel, conversation.sender_key
        if conversation.channel == "voice" and resident is not None and resident.phone:
            return "sms", resident.phone
    if resident is not None and resident.wechat_openid:
        return "wechat", resident.wechat_openid
    if resident is not None and resident.phone:
        return "sms", resident.phone
    return None


def notify_ticket(
    session: Session,
    *,
    ticket: Ticket,
    update: str,
    event: TicketEvent,
    now: datetime,
    catalogue: Catalogue,
    department: str | None = None,
    note: str | None = None,
) -> OutboxMessage | None:
    """Store one status update for the ticket's resident; None if nobody can be reached."""
    if update not in UPDATES:
        raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {update!r}")
    target = delivery_target(session, ticket)
    if target is None:
        return None
    channel, address = target
    name = department_name(catalogue, department or ticket.lead_department)
    short_note = (note or "").strip()[:NOTE_MAX_CHARS]
    text = domain_text(UPDATES[update], number=ticket.number, department=name, note=short_note)
    kind = "status"
    if update == "resolved":
        text = numbered_menu(text, RATING_TITLES)
        kind = "rating"
    session.flush()
    message = enqueue(session, channel=channel, address=address, text=text, kind=kind, now=now,
                      resident_id=ticket.resident_id, conversation_id=ticket.conversation_id,
                      ticket_id=ticket.id, dedupe_key=f"event:{event.id}:{update}")
    if message is not None and update == "resolved":
        _offer_rating(session, ticket=ticket, channel=channel, address=address, now=now)
    return message


def _offer_rating(session: Session, *, ticket: Ticket, channel: str, address: str,
                  now: datetime) -> None:
    # The digit comes back on the channel the update went to (a caller replies by SMS).
    resident = session.get(Resident, ticket.resident_id) if ticket.resident_id else None
    conversation = open_conversation(session, channel=channel, sender_key=address, now=now,
                                     resident=resident)
    conversation.pending_choices = [
        {"title": title, "payload": f"rate:{ticket.id}:{score}"}
        for score, title in enumerate(RATING_TITLES, 1)
    ]
