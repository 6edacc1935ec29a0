"""Linking a WeChat follower to a phone number by SMS code, on SQLite and PostgreSQL.

Every test runs through bot.linking.handle exactly as the hub calls it, and checks the
stored rows: the code queued in the outbox, the hashed LinkCode, the residents' phones
and whose tickets the status query finds afterwards.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot import linking
from bot.conversations import find_or_create_resident, open_conversation
from bot.models import Conversation, LinkCode, OutboxMessage, Resident, Ticket
from bot.outbox import enqueue
from bot.reports import find_ticket
from bot.tickets import create_ticket, tickets_for_resident
from routing.catalogue import Catalogue

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
PHONE = "13812345678"
SMS_CODE = re.compile(r"【邻里】您的验证码是(\d{6})，10分钟内有效。如非本人操作，请忽略。")


def say(session: Session, resident: Resident | None, text: str, *, now: datetime = NOW,
        channel: str = "wechat", sms_available: bool = True,
        hotline: str | None = "0571-88001234") -> str | None:
    return linking.handle(session, resident_id=resident.id if resident else None,
                          channel=channel, text=text, now=now, sms_available=sms_available,
                          hotline=hotline)


def codes_sent(session: Session, resident: Resident) -> list[OutboxMessage]:
    return list(session.execute(
        select(OutboxMessage).where(OutboxMessage.resident_id == resident.id,
                                    OutboxMessage.kind == "code").order_by(OutboxMessage.id)
    ).scalars())


def link_codes(session: Session, resident: Resident) -> list[LinkCode]:
    return list(session.execute(
        select(LinkCode).where(LinkCode.resident_id == resident.id).order_by(LinkCode.id)
    ).scalars())


def request_code(session: Session, resident: Resident, *, phone: str = PHONE,
                 now: datetime = NOW) -> str:
    """Ask for a code and return the digits the SMS carries."""
    reply = say(session, resident, f"绑定手机 {phone}", now=now)
    assert reply == f"验证码已发到尾号{phone[-4:]}的手机，请把6位验证码发给我。"
    match = SMS_CODE.fullmatch(codes_sent(session, resident)[-1].text)
    assert match is not None
    return match.group(1)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


@pytest.fixture
def follower(db_session: Session) -> Resident:
    resident = find_or_create_resident(db_session, now=NOW, wechat_openid="o-linli-follower")
    db_session.flush()
    return resident


@pytest.fixture
def sms_resident(db_session: Session, catalogue: Catalogue) -> Resident:
    """Someone who reported by SMS: a resident with the phone, a conversation and a ticket."""
    resident = find_or_create_resident(db_session, now=NOW - timedelta(days=2), phone=PHONE)
    conversation = open_conversation(db_session, channel="sms", sender_key=PHONE,
                                     now=NOW - timedelta(days=2), resident=resident)
    ticket = create_ticket(db_session, now=NOW - timedelta(days=2), catalogue=catalogue,
                           category="water_leak", description="厨房水管漏水", channel="sms",
                           resident=resident, conversation=conversation, building="5",
                           unit="2", room="501", contact_phone=PHONE)
    enqueue(db_session, channel="sms", address=PHONE, kind="status", now=NOW - timedelta(days=1),
            text=f"您的工单{ticket.number}已派单。", resident_id=resident.id, ticket_id=ticket.id)
    db_session.flush()
    return resident


# --- asking for a code ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["绑定手机 13812345678", "绑定手机号13812345678",
                                  "关联电话 138-1234-5678", "绑定手机号：+86 138 1234 5678。"])
def test_bind_command_queues_the_code_by_sms(db_session: Session, follower: Resident,
                                             text: str) -> None:
    reply = say(db_session, follower, text)

    assert reply == "验证码已发到尾号5678的手机，请把6位验证码发给我。"
    [sms] = codes_sent(db_session, follower)
    assert (sms.channel, sms.address, sms.kind, sms.status) == ("sms", PHONE, "code", "pending")
    assert sms.next_attempt_at == NOW
    assert SMS_CODE.fullmatch(sms.text)
    [code] = link_codes(db_session, follower)
    assert (code.phone, code.attempts, code.used_at) == (PHONE, 0, None)
    assert code.expires_at == NOW + timedelta(minutes=10)
    assert follower.phone is None  # nothing is linked until the code comes back


def test_code_is_stored_salted_never_in_clear(db_session: Session, follower: Resident) -> None:
    first = request_code(db_session, follower)
    second = request_code(db_session, follower, now=NOW + timedelta(minutes=2))
    rows = link_codes(db_session, follower)

    for row, code in zip(rows, (first, second), strict=True):
        stored = " ".join(str(v) for v in (row.phone, row.code_hash, row.attempts))
        assert code not in stored
        assert row.code_hash.startswith("scrypt$")
        assert linking.code_matches(code, row.code_hash)
        assert not linking.code_matches(wrong(code), row.code_hash)
    # A per-row salt: the same code never hashes the same way twice.
    assert linking.hash_code(first) != linking.hash_code(first)


def test_binding_is_done_in_wechat_only(db_session: Session, catalogue: Catalogue) -> None:
    texter = find_or_create_resident(db_session, now=NOW, phone="13900001111")
    db_session.flush()

    assert "微信" in (say(db_session, texter, "绑定手机 13812345678", channel="sms") or "")
    assert "微信" in (say(db_session, texter, "解除绑定", channel="sms") or "")
    assert link_codes(db_session, texter) == []
    assert codes_sent(db_session, texter) == []


@pytest.mark.parametrize("text", ["绑定手机", "绑定手机 12345", "绑定手机 0571-88001234",
                                  "绑定手机 23812345678"])
def test_a_bad_number_asks_for_an_11_digit_mobile(db_session: Session, follower: Resident,
                                                  text: str) -> None:
    assert say(db_session, follower, text) == linking.ASK_MOBILE
    assert link_codes(db_session, follower) == []


def test_no_sms_means_no_code_and_a_hotline(db_session: Session, follower: Resident) -> None:
    reply = say(db_session, follower, "绑定手机 13812345678", sms_available=False)

    assert reply is not None and "稍后再试" in reply and "0571-88001234" in reply
    assert link_codes(db_session, follower) == []
    assert codes_sent(db_session, follower) == []


def test_codes_are_rate_limited(db_session: Session, follower: Resident) -> None:
    request_code(db_session, follower)
    assert say(db_session, follower, "绑定手机 13812345678",
               now=NOW + timedelta(seconds=59)) == linking.TOO_SOON
    request_code(db_session, follower, now=NOW + timedelta(seconds=61))
    request_code(db_session, follower, now=NOW + timedelta(seconds=122))
    assert say(db_session, follower, "绑定手机 13812345678",
               now=NOW + timedelta(minutes=30)) == linking.TOO_MANY
    assert len(codes_sent(db_session, follower)) == 3
    assert len(link_codes(db_session, follower)) == 3
    # An hour after the first one, a code may go out again.
    request_code(db_session, follower, now=NOW + timedelta(minutes=60, seconds=1))


def test_one_phone_is_not_flooded_from_many_accounts(db_session: Session) -> None:
    followers = [find_or_create_resident(db_session, now=NOW, wechat_openid=f"o-flood-{i}")
                 for i in range(3)]
    db_session.flush()
    for i in range(linking.PHONE_CODES_PER_HOUR):
        request_code(db_session, followers[i % 3], now=NOW + timedelta(minutes=2 * i))
    assert say(db_session, followers[2], "绑定手机 13812345678",
               now=NOW + timedelta(minutes=20)) == linking.TOO_MANY


def test_the_phone_already_linked_sends_nothing(db_session: Session, follower: Resident) -> None:
    follower.phone = PHONE
    db_session.flush()
    assert say(db_session, follower, "绑定手机 13812345678") == linking.ALREADY_LINKED
    assert codes_sent(db_session, follower) == []


# --- answering with the code ----------------------------------------------------------------


def test_the_right_code_links_the_phone(db_session: Session, follower: Resident) -> None:
    code = request_code(db_session, follower)

    reply = say(db_session, follower, code, now=NOW + timedelta(minutes=3))

    assert reply == "绑定成功。以后用微信或短信、电话都能查到您的工单。"
    db_session.expire_all()
    assert follower.phone == PHONE
    [row] = link_codes(db_session, follower)
    assert row.used_at == NOW + timedelta(minutes=3)
    # Texting from that phone is now the same resident.
    assert find_or_create_resident(db_session, now=NOW, phone=PHONE).id == follower.id
    # A used code is just digits again: the bot gets them.
    assert say(db_session, follower, code, now=NOW + timedelta(minutes=4)) is None


def test_a_wrong_code_is_counted(db_session: Session, follower: Resident) -> None:
    code = request_code(db_session, follower)

    reply = say(db_session, follower, f"验证码：{wrong(code)}")

    assert reply == "验证码不对，请再核对一下。还可以试4次。"
    [row] = link_codes(db_session, follower)
    assert row.attempts == 1 and row.used_at is None
    assert follower.phone is None


def test_five_wrong_codes_void_it(db_session: Session, follower: Resident) -> None:
    code = request_code(db_session, follower)
    replies = [say(db_session, follower, wrong(code)) for _ in range(5)]

    assert replies[3] == "验证码不对，请再核对一下。还可以试1次。"
    assert replies[4] == linking.CODE_VOID
    # Even the right code no longer links; the digits go to the bot.
    assert say(db_session, follower, code) is None
    db_session.expire_all()
    [row] = link_codes(db_session, follower)
    assert row.attempts == 5 and row.used_at is None
    assert follower.phone is None


def test_an_expired_code_says_how_to_get_a_new_one(db_session: Session,
                                                   follower: Resident) -> None:
    code = request_code(db_session, follower)

    reply = say(db_session, follower, code, now=NOW + timedelta(minutes=10, seconds=1))

    assert reply == linking.CODE_EXPIRED and "绑定手机" in reply
    assert say(db_session, follower, code, now=NOW + timedelta(minutes=11)) is None
    db_session.expire_all()
    assert follower.phone is None
    # A fresh code works.
    fresh = request_code(db_session, follower, now=NOW + timedelta(minutes=12))
    assert say(db_session, follower, fresh, now=NOW + timedelta(minutes=13)) == linking.LINKED


def test_only_the_newest_code_counts(db_session: Session, follower: Resident) -> None:
    old = request_code(db_session, follower)
    new = request_code(db_session, follower, now=NOW + timedelta(minutes=2))
    if old != new:
        assert say(db_session, follower, old, now=NOW + timedelta(minutes=3)) != linking.LINKED
    assert say(db_session, follower, new, now=NOW + timedelta(minutes=3)) == linking.LINKED


# --- merging --------------------------------------------------------------------------------


def test_linking_merges_the_sms_resident_so_status_finds_their_ticket(
        db_session: Session, follower: Resident, sms_resident: Resident) -> None:
    [ticket] = tickets_for_resident(db_session, resident=sms_resident)
    assert find_ticket(db_session, text=None, conversation_id=None, resident_id=follower.id,
                       open_only=False) is None

    code = request_code(db_session, follower)
    assert say(db_session, follower, code, now=NOW + timedelta(minutes=1)) == linking.LINKED

    db_session.expire_all()
    # The query "我的工单" runs (actions/followup.py → bot.reports.find_ticket).
    assert find_ticket(db_session, text=None, conversation_id=None, resident_id=follower.id,
                       open_only=False) == ticket
    assert tickets_for_resident(db_session, resident=follower) == [ticket]
    assert tickets_for_resident(db_session, resident=sms_resident) == []
    assert (follower.phone, sms_resident.phone) == (PHONE, None)
    conversations = db_session.execute(select(Conversation.channel, Conversation.resident_id)
                                       .where(Conversation.sender_key == PHONE)).all()
    assert conversations == [("sms", follower.id)]
    owners = set(db_session.execute(
        select(OutboxMessage.resident_id).where(OutboxMessage.address == PHONE)).scalars())
    assert owners == {follower.id}
    assert find_or_create_resident(db_session, now=NOW, phone=PHONE).id == follower.id


def test_a_failed_merge_moves_nothing(db_session: Session, follower: Resident,
                                      sms_resident: Resident) -> None:
    code = request_code(db_session, follower)
    connection = db_session.connection()

    def collide(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Tickets and conversations have moved by now; the outbox update fails.
        if statement.lstrip().upper().startswith("UPDATE OUTBOX"):
            raise IntegrityError(statement, {}, Exception("simulated concurrent link"))

    event.listen(connection, "before_cursor_execute", collide)
    try:
        reply = say(db_session, follower, code, now=NOW + timedelta(minutes=1))
    finally:
        event.remove(connection, "before_cursor_execute", collide)

    assert reply == linking.TRY_AGAIN
    db_session.expire_all()
    assert (follower.phone, sms_resident.phone) == (None, PHONE)
    assert [t.resident_id for t in db_session.execute(select(Ticket)).scalars()] \
        == [sms_resident.id]
    assert db_session.execute(select(Conversation.resident_id)
                              .where(Conversation.sender_key == PHONE)).scalar_one() \
        == sms_resident.id
    [row] = link_codes(db_session, follower)
    assert row.used_at is None
    # Sending the code again completes the link.
    assert say(db_session, follower, code, now=NOW + timedelta(minutes=2)) == linking.LINKED
    db_session.expire_all()
    assert tickets_for_resident(db_session, resident=follower)[0].resident_id == follower.id


def test_a_phone_held_by_another_wechat_is_not_merged(db_session: Session,
                                                      follower: Resident,
                                                      sms_resident: Resident) -> None:
    sms_resident.wechat_openid = "o-linli-someone-else"
    db_session.flush()
    code = request_code(db_session, follower)

    assert say(db_session, follower, code) == linking.OTHER_WECHAT

    db_session.expire_all()
    assert (follower.phone, sms_resident.phone) == (None, PHONE)
    assert len(tickets_for_resident(db_session, resident=sms_resident)) == 1


# --- unlinking ------------------------------------------------------------------------------


def test_unlinking_keeps_the_tickets(db_session: Session, follower: Resident,
                                     sms_resident: Resident) -> None:
    code = request_code(db_session, follower)
    assert say(db_session, follower, code) == linking.LINKED

    assert say(db_session, follower, "解除绑定") == linking.UNLINKED

    db_session.expire_all()
    assert follower.phone is None
    assert find_ticket(db_session, text=None, conversation_id=None, resident_id=follower.id,
                       open_only=False) is not None
    assert say(db_session, follower, "解除绑定") == linking.NOT_LINKED


# --- everything else passes through ---------------------------------------------------------


@pytest.fixture
def statements(db_session: Session) -> Iterator[list[str]]:
    """Every SQL statement db_session's connection runs while the test body runs."""
    db_session.flush()
    seen: list[str] = []
    connection = db_session.connection()

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(connection, "before_cursor_execute", record)
    yield seen
    event.remove(connection, "before_cursor_execute", record)


@pytest.mark.parametrize(("text", "channel", "who"), [
    ("我家厨房水管漏水了", "wechat", "follower"),
    ("我的工单", "wechat", "follower"),
    ("1", "wechat", "follower"),
    ("13812345678", "wechat", "follower"),
    ("1234567", "wechat", "follower"),
    ("123456", "sms", "follower"),       # codes are only ever pending in WeChat
    ("123456", "wechat", None),          # nobody to look up
    ("", "wechat", "follower"),
])
def test_ordinary_messages_never_touch_the_database(db_session: Session, follower: Resident,
                                                    statements: list[str], text: str,
                                                    channel: str, who: str | None) -> None:
    resident = follower if who else None
    assert say(db_session, resident, text, channel=channel) is None
    assert statements == []
    assert not db_session.new and not db_session.dirty


def test_six_digits_without_a_pending_code_cost_one_query(db_session: Session,
                                                          follower: Resident,
                                                          statements: list[str]) -> None:
    assert say(db_session, follower, "502301") is None
    assert len(statements) == 1 and "link_codes" in statements[0]


def test_logs_show_neither_the_code_nor_the_number(db_session: Session, follower: Resident,
                                                   sms_resident: Resident,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.linking")
    code = request_code(db_session, follower)
    say(db_session, follower, wrong(code))
    say(db_session, follower, code)
    say(db_session, follower, "解除绑定")

    assert "138****5678" in caplog.text
    assert code not in caplog.text
    assert PHONE not in caplog.text
