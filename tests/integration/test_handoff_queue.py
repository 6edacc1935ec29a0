"""The agents' queue and console accounts on real databases (SQLite file and PostgreSQL).

The claim race commits for real from two threads, like two agents clicking 认领 at the
same instant, and deletes what it wrote.
"""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.accounts import (
    AccountError,
    check_password,
    create_account,
    hash_password,
    resolve,
    sign_in,
    sign_out,
)
from bot.audit import audit
from bot.conversations import open_conversation
from bot.db import make_session_factory, session_scope
from bot.handoff import (
    AlreadyClaimed,
    HandoffError,
    back_to_bot,
    claim,
    estimate_wait,
    queue,
    transfer,
    waiting,
)
from bot.models import Account, AppendOnlyError, AuditEntry, Conversation, WebSession

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"


def _agent(session: Session, name: str, role: str = "agent") -> Account:
    account = create_account(session, username=name, password=PASSWORD, role=role,
                             display_name=name, now=NOW)
    session.flush()
    return account


def _conversation(session: Session, sender: str, *, channel: str = "sms") -> Conversation:
    conversation = open_conversation(session, channel=channel, sender_key=sender, now=NOW)
    session.flush()
    return conversation


def test_passwords_are_salted_hashes_checked_in_constant_time() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and PASSWORD not in first
    assert check_password(PASSWORD, first) and not check_password("wrong password!", first)
    assert not check_password(PASSWORD, "md5$x$y") and not check_password(PASSWORD, "garbage")
    with pytest.raises(AccountError, match="10"):
        hash_password("short")


def test_accounts_refuse_bad_data(db_session: Session) -> None:
    _agent(db_session, "xiaomei")
    with pytest.raises(AccountError, match="taken"):
        _agent(db_session, "xiaomei")
    with pytest.raises(AccountError, match="department"):
        create_account(db_session, username="wy02", password=PASSWORD, role="staff",
                       display_name="孙师傅", now=NOW)
    with pytest.raises(AccountError, match="username"):
        create_account(db_session, username="a b", password=PASSWORD, role="agent",
                       display_name="x", now=NOW)


def test_sessions_expire_when_idle_or_old_and_end_at_sign_out(db_session: Session) -> None:
    _agent(db_session, "agent-s")
    assert sign_in(db_session, username="agent-s", password="nope nope nope", now=NOW) is None
    assert sign_in(db_session, username="nobody", password=PASSWORD, now=NOW) is None
    token, who = sign_in(db_session, username="agent-s", password=PASSWORD, now=NOW)
    stored = db_session.execute(select(WebSession.token_hash)).scalars().all()
    assert token not in stored  # only the hash is kept
    assert resolve(db_session, token=token, now=NOW + timedelta(minutes=30)) == who
    assert resolve(db_session, token=token, now=NOW + timedelta(hours=3)) is None  # idle
    token, _ = sign_in(db_session, username="agent-s", password=PASSWORD, now=NOW)
    sign_out(db_session, token=token)
    assert resolve(db_session, token=token, now=NOW) is None
    assert resolve(db_session, token="x" * 500, now=NOW) is None


def test_a_disabled_account_cannot_sign_in_or_keep_its_session(db_session: Session) -> None:
    account = _agent(db_session, "agent-d")
    token, _ = sign_in(db_session, username="agent-d", password=PASSWORD, now=NOW)
    account.active = False
    assert resolve(db_session, token=token, now=NOW) is None
    assert sign_in(db_session, username="agent-d", password=PASSWORD, now=NOW) is None


def test_the_queue_puts_life_safety_first_then_waiting_time(db_session: Session) -> None:
    asked = _conversation(db_session, "13800000201")
    distress = _conversation(db_session, "13800000202")
    life = _conversation(db_session, "13800000203")
    queue(db_session, conversation=asked, reason="asked", now=NOW)
    queue(db_session, conversation=distress, reason="distress", now=NOW + timedelta(minutes=1))
    queue(db_session, conversation=life, reason="life_safety", now=NOW + timedelta(minutes=2))
    order = [c.id for c in waiting(db_session) if c.id in (asked.id, distress.id, life.id)]
    assert order == [life.id, distress.id, asked.id]
    # Nobody signed in: every conversation ahead costs a whole agent's time.
    assert estimate_wait(db_session, conversation=life, now=NOW) <= estimate_wait(
        db_session, conversation=asked, now=NOW)
    # A more urgent reason moves a waiting conversation up, never down.
    queue(db_session, conversation=asked, reason="life_safety", now=NOW + timedelta(minutes=3))
    assert asked.queue_priority == 0 and asked.queued_at == NOW
    queue(db_session, conversation=asked, reason="asked", now=NOW + timedelta(minutes=4))
    assert asked.queue_priority == 0


def test_claim_transfer_and_back_to_bot(db_session: Session) -> None:
    first, second = _agent(db_session, "agent-a"), _agent(db_session, "agent-b")
    staff = create_account(db_session, username="wy-x", password=PASSWORD, role="staff",
                           display_name="孙师傅", department="property", now=NOW)
    conversation = _conversation(db_session, "13800000204")
    queue(db_session, conversation=conversation, reason="asked", now=NOW)
    claim(db_session, conversation_id=conversation.id, agent_id=first.id, now=NOW)
    assert (conversation.state, conversation.agent_id) == ("agent", first.id)
    claim(db_session, conversation_id=conversation.id, agent_id=first.id, now=NOW)  # a double click
    with pytest.raises(AlreadyClaimed, match="agent-a"):
        claim(db_session, conversation_id=conversation.id, agent_id=second.id, now=NOW)
    with pytest.raises(HandoffError, match="not yours"):
        back_to_bot(db_session, conversation=conversation, agent_id=second.id, now=NOW)
    with pytest.raises(HandoffError, match="cannot take"):
        transfer(db_session, conversation=conversation, from_agent=first.id, to_agent=staff,
                 now=NOW)
    transfer(db_session, conversation=conversation, from_agent=first.id, to_agent=second,
             now=NOW)
    assert conversation.agent_id == second.id
    back_to_bot(db_session, conversation=conversation, agent_id=second.id, now=NOW)
    assert (conversation.state, conversation.agent_id, conversation.queued_at) == ("bot", None,
                                                                                  None)


def test_audit_entries_cannot_be_edited(db_session: Session) -> None:
    audit(db_session, who=None, action="view_order", now=NOW, reason="test")
    db_session.flush()
    entry = db_session.execute(select(AuditEntry).order_by(AuditEntry.id.desc())).scalars().first()
    entry.action = "nothing"
    with pytest.raises(AppendOnlyError):
        db_session.flush()


def test_two_agents_claiming_at_the_same_instant_one_wins(db_engine: Engine) -> None:
    sessions = make_session_factory(db_engine)
    with session_scope(sessions) as session:
        agents = [_agent(session, f"race-{db_engine.dialect.name}-{i}").id for i in range(2)]
        conversation = _conversation(session, f"race-{db_engine.dialect.name}")
        queue(session, conversation=conversation, reason="asked", now=NOW)
        conversation_id = conversation.id
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(agent_id: int) -> None:
        barrier.wait()
        try:
            with session_scope(sessions) as session:
                claim(session, conversation_id=conversation_id, agent_id=agent_id, now=NOW)
            outcomes.append("won")
        except AlreadyClaimed:
            outcomes.append("lost")

    try:
        threads = [threading.Thread(target=attempt, args=(agent,)) for agent in agents]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes) == ["lost", "won"]
        with session_scope(sessions) as session:
            stored = session.get(Conversation, conversation_id)
            assert stored.state == "agent" and stored.agent_id in agents
    finally:
        with session_scope(sessions) as session:
            session.execute(delete(Conversation).where(Conversation.id == conversation_id))
            session.execute(delete(Account).where(Account.id.in_(agents)))
