"""Status updates and the outbox worker on real databases (SQLite file and PostgreSQL).

The worker is driven with `run_once()` and a controllable clock; senders are small
in-test doubles that record, fail on demand, or report a closed WeChat window.
"""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.conversations import find_or_create_resident, record_inbound
from bot.db import session_scope
from bot.dispatch import dispatch_ticket
from bot.models import Conversation, OutboxMessage, Ticket
from bot.notify import RATING_TITLES, delivery_target
from bot.outbox import (
    Offline,
    Outbox,
    RetryLater,
    Undeliverable,
    WindowClosed,
    backoff,
    enqueue,
)
from bot.staff import accept_order, add_progress, resolve_order, return_order
from bot.tickets import create_ticket
from routing.catalogue import Catalogue
from routing.roster import Roster

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    """A sender that records; `errors` are raised one per send before succeeding."""

    def __init__(self, channel: str, *errors: Exception) -> None:
        self.channel = channel
        self.sent: list[tuple[str, str]] = []
        self.errors = list(errors)

    async def send(self, address: str, text: str) -> str | None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append((address, text))
        return f"id-{len(self.sent)}"


def _reported(session: Session, catalogue: Catalogue, roster: Roster, *, channel: str,
              sender: str, phone: str | None = None, openid: str | None = None) -> Ticket:
    resident = find_or_create_resident(session, now=NOW, phone=phone, wechat_openid=openid)
    message, _ = record_inbound(session, channel=channel, sender_key=sender, text="楼道灯坏了",
                                now=NOW, resident=resident)
    ticket = create_ticket(session, now=NOW, catalogue=catalogue, category="public_facility",
                           description="楼道灯坏了", channel=channel, building="3", unit="2",
                           resident=resident,
                           conversation=session.get(Conversation, message.conversation_id))
    dispatch_ticket(session, ticket=ticket, catalogue=catalogue, roster=roster, now=NOW)
    return ticket


def _lead(ticket: Ticket):  # noqa: ANN202 - a WorkOrder
    return next(o for o in reversed(ticket.work_orders) if o.role == "lead")


def _outbox(session: Session, ticket: Ticket) -> list[OutboxMessage]:
    session.flush()
    return session.execute(select(OutboxMessage).where(OutboxMessage.ticket_id == ticket.id)
                           .order_by(OutboxMessage.id)).scalars().all()


def test_accept_progress_resolve_each_store_one_update_for_the_residents_channel(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _reported(db_session, catalogue, roster, channel="sms", sender="13800000001",
                       phone="13800000001")
    lead = _lead(ticket)
    assert _outbox(db_session, ticket) == []  # the confirmation reply already named the owner
    accept_order(db_session, order_id=lead.id, staff_id=lead.assignee, roster=roster, now=NOW,
                 catalogue=catalogue)
    add_progress(db_session, order_id=lead.id, staff_id=lead.assignee, text="已买好灯泡",
                 roster=roster, now=NOW, catalogue=catalogue)
    resolve_order(db_session, order_id=lead.id, staff_id=lead.assignee, note="灯已换好",
                  roster=roster, now=NOW, catalogue=catalogue)
    rows = _outbox(db_session, ticket)
    assert [(r.channel, r.address, r.kind) for r in rows] == [
        ("sms", "13800000001", "status"), ("sms", "13800000001", "status"),
        ("sms", "13800000001", "rating")]
    assert ticket.number in rows[0].text and "接单" in rows[0].text
    assert "已买好灯泡" in rows[1].text
    assert "回复1很不满意" in rows[2].text and "回复5非常满意" in rows[2].text
    conversation = db_session.get(Conversation, ticket.conversation_id)
    assert [c["title"] for c in conversation.pending_choices] == list(RATING_TITLES)
    assert conversation.pending_choices[4]["payload"] == f"rate:{ticket.id}:5"


def test_assisting_orders_do_not_message_the_resident(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _reported(db_session, catalogue, roster, channel="sms", sender="13800000002",
                       phone="13800000002")
    ticket.category = "parking"
    assist = [o for o in ticket.work_orders if o.role != "lead"]
    for order in assist:
        if order.assignee:
            accept_order(db_session, order_id=order.id, staff_id=order.assignee, roster=roster,
                         now=NOW)
    assert _outbox(db_session, ticket) == []


def test_a_return_that_reroutes_tells_the_resident_the_new_department(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _reported(db_session, catalogue, roster, channel="wechat", sender="oUser123",
                       openid="oUser123")
    lead = _lead(ticket)
    return_order(db_session, order_id=lead.id, staff_id=lead.assignee, reason="not_our_function",
                 note=None, roster=roster, catalogue=catalogue, now=NOW)
    rows = _outbox(db_session, ticket)
    assert [(r.channel, r.address) for r in rows] == [("wechat", "oUser123")]
    assert "改派" in rows[0].text


def test_a_hotline_caller_gets_updates_and_the_rating_by_sms(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _reported(db_session, catalogue, roster, channel="voice", sender="13700000001",
                       phone="13700000001")
    assert delivery_target(db_session, ticket) == ("sms", "13700000001")
    lead = _lead(ticket)
    accept_order(db_session, order_id=lead.id, staff_id=lead.assignee, roster=roster, now=NOW)
    resolve_order(db_session, order_id=lead.id, staff_id=lead.assignee, note=None,
                  roster=roster, now=NOW)
    sms = db_session.execute(select(Conversation).where(
        Conversation.channel == "sms", Conversation.sender_key == "13700000001")).scalar_one()
    assert sms.pending_choices and sms.pending_choices[0]["payload"] == f"rate:{ticket.id}:1"


def test_enqueue_with_the_same_key_twice_stores_one_message(db_session: Session) -> None:
    first = enqueue(db_session, channel="sms", address="13800000003", text="你好", kind="notice",
                    now=NOW, dedupe_key="k-1")
    again = enqueue(db_session, channel="sms", address="13800000003", text="你好", kind="notice",
                    now=NOW, dedupe_key="k-1")
    assert first is not None and again is None
    with pytest.raises(ValueError, match="channel"):
        enqueue(db_session, channel="voice", address="x", text="t", kind="notice", now=NOW)
    with pytest.raises(ValueError, match="address"):
        enqueue(db_session, channel="sms", address="", text="t", kind="notice", now=NOW)


# --- the worker ------------------------------------------------------------------------------


def _store(factory: sessionmaker, **fields: object) -> int:
    with session_scope(factory) as session:
        message = enqueue(session, now=NOW, kind="status", **fields)  # type: ignore[arg-type]
        assert message is not None
        session.flush()
        return message.id


def _row(factory: sessionmaker, message_id: int) -> OutboxMessage:
    with session_scope(factory) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        session.expunge(row)
        return row


def test_a_provider_outage_is_retried_with_backoff_until_it_goes_out(
    db_session_factory: sessionmaker,
) -> None:
    clock = Clock()
    sms = Recorder("sms", RetryLater("HTTP 503"), RetryLater("timeout"))
    outbox = Outbox(db_session_factory, {"sms": sms}, clock=clock)
    message_id = _store(db_session_factory, channel="sms", address="13800000004", text="工单已接单")

    assert asyncio.run(outbox.run_once()) == 1
    row = _row(db_session_factory, message_id)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 503")
    assert row.next_attempt_at == NOW + backoff(1)
    assert asyncio.run(outbox.run_once()) == 0  # not due yet

    clock.now = row.next_attempt_at
    asyncio.run(outbox.run_once())
    row = _row(db_session_factory, message_id)
    assert (row.status, row.attempts) == ("pending", 2)
    assert row.next_attempt_at == clock.now + backoff(2) > clock.now + backoff(1)

    clock.now = row.next_attempt_at
    asyncio.run(outbox.run_once())
    row = _row(db_session_factory, message_id)
    assert (row.status, row.attempts, row.provider_message_id) == ("sent", 3, "id-1")
    assert sms.sent == [("13800000004", "工单已接单")]


def test_backoff_grows_and_is_capped() -> None:
    waits = [backoff(n).total_seconds() for n in range(1, 12)]
    assert waits[:4] == [5, 10, 20, 40]
    assert max(waits) == 900 and waits == sorted(waits)


def test_an_undeliverable_message_is_kept_as_failed_with_the_reason(
    db_session_factory: sessionmaker,
) -> None:
    outbox = Outbox(db_session_factory, {"sms": Recorder("sms", Undeliverable("opted out"))},
                    clock=Clock())
    message_id = _store(db_session_factory, channel="sms", address="13800000005", text="通知")
    asyncio.run(outbox.run_once())
    row = _row(db_session_factory, message_id)
    assert (row.status, row.last_error) == ("failed", "opted out")


def test_a_channel_that_is_off_fails_the_message_visibly(
    db_session_factory: sessionmaker,
) -> None:
    outbox = Outbox(db_session_factory, {}, clock=Clock())
    message_id = _store(db_session_factory, channel="wechat", address="oNobody", text="通知")
    asyncio.run(outbox.run_once())
    assert _row(db_session_factory, message_id).status == "failed"
    assert "off" in _row(db_session_factory, message_id).last_error


def test_a_closed_wechat_window_falls_back_to_sms(db_session_factory: sessionmaker) -> None:
    with session_scope(db_session_factory) as session:
        resident = find_or_create_resident(session, now=NOW, phone="13800000006",
                                           wechat_openid="oWindowClosed")
        session.flush()
        resident_id = resident.id
    wechat = Recorder("wechat", WindowClosed("window closed"))
    sms = Recorder("sms")
    outbox = Outbox(db_session_factory, {"wechat": wechat, "sms": sms}, clock=Clock())
    message_id = _store(db_session_factory, channel="wechat", address="oWindowClosed",
                        text="工单已办结", resident_id=resident_id)
    asyncio.run(outbox.run_once())
    asyncio.run(outbox.run_once())
    row = _row(db_session_factory, message_id)
    assert (row.status, row.channel, row.address) == ("sent", "sms", "13800000006")
    assert sms.sent == [("13800000006", "工单已办结")] and wechat.sent == []
    assert "SMS" in row.last_error


def test_a_closed_window_without_a_phone_is_failed_not_dropped(
    db_session_factory: sessionmaker,
) -> None:
    outbox = Outbox(db_session_factory, {"wechat": Recorder("wechat", WindowClosed("closed")),
                                         "sms": Recorder("sms")}, clock=Clock())
    message_id = _store(db_session_factory, channel="wechat", address="oNoPhone", text="通知")
    asyncio.run(outbox.run_once())
    row = _row(db_session_factory, message_id)
    assert row.status == "failed" and "no phone" in row.last_error


def test_an_offline_web_chat_waits_without_counting_attempts(
    db_session_factory: sessionmaker,
) -> None:
    clock = Clock()
    web = Recorder("web", Offline("web chat not open"))
    outbox = Outbox(db_session_factory, {"web": web}, clock=clock)
    message_id = _store(db_session_factory, channel="web", address="web-abc", text="进展")
    asyncio.run(outbox.run_once())
    row = _row(db_session_factory, message_id)
    assert (row.status, row.attempts) == ("pending", 0)
    # The resident reconnects: their pending messages go out at once, due or not.
    asyncio.run(outbox.run_once("web-abc"))
    assert _row(db_session_factory, message_id).status == "sent"
    assert web.sent == [("web-abc", "进展")]


def test_two_workers_deliver_each_message_once(db_session_factory: sessionmaker) -> None:
    ids = [_store(db_session_factory, channel="sms", address=f"1380000010{i}", text=f"第{i}条")
           for i in range(5)]
    first, second = Recorder("sms"), Recorder("sms")
    clock = Clock()
    a = Outbox(db_session_factory, {"sms": first}, clock=clock)
    b = Outbox(db_session_factory, {"sms": second}, clock=clock)

    async def both() -> None:
        # The shared test connection serialises the two; each still claims before sending.
        await a.run_once()
        await b.run_once()

    asyncio.run(both())
    delivered = first.sent + second.sent
    assert sorted(text for _, text in delivered) == sorted(f"第{i}条" for i in range(5))
    assert all(_row(db_session_factory, i).status == "sent" for i in ids)


def test_later_due_messages_wait(db_session_factory: sessionmaker) -> None:
    clock = Clock()
    outbox = Outbox(db_session_factory, {"sms": Recorder("sms")}, clock=clock)
    with session_scope(db_session_factory) as session:
        message = enqueue(session, channel="sms", address="13800000007", text="稍后", kind="notice",
                          now=NOW + timedelta(minutes=5))
        session.flush()
        message_id = message.id
    assert asyncio.run(outbox.run_once()) == 0
    clock.now = NOW + timedelta(minutes=5)
    assert asyncio.run(outbox.run_once()) == 1
    assert _row(db_session_factory, message_id).status == "sent"
