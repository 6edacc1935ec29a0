"""The store on real databases: migrations, numbering, lifecycle, de-duplication, JSON.

Most tests run on SQLite (file) and PostgreSQL through the db_session fixture in
tests/conftest.py; the concurrency tests commit for real and clean up after themselves.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from bot import conversations
from bot.conversations import (
    ConversationError,
    InvalidPhone,
    find_or_create_resident,
    normalize_phone,
    open_conversation,
    record_inbound,
    record_outbound,
    set_conversation_state,
    transcript,
)
from bot.db import make_engine, make_session_factory, session_scope
from bot.migrate import alembic_config, current_revision, head_revision, upgrade
from bot.models import (
    AppendOnlyError,
    Base,
    Conversation,
    Message,
    NaiveDatetimeError,
    Resident,
    Ticket,
    TicketCounter,
    TicketEvent,
)
from bot.settings import Secret, Settings, SettingsError
from bot.ticket_view import ticket_as_dict, ticket_timeline
from bot.tickets import (
    InvalidTransition,
    RatingNotAllowed,
    add_info,
    cancel_ticket,
    correct_ticket,
    create_ticket,
    get_ticket_by_number,
    latest_open_ticket_for_resident,
    rate_ticket,
    tickets_for_resident,
    transition,
    update_location,
)
from routing.catalogue import Catalogue, CatalogueError, UnknownCategory, load_catalogue
from tests.cleanup import purge_day

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


@pytest.fixture
def resident(db_session: Session) -> Resident:
    return find_or_create_resident(db_session, now=NOW, phone="13800000000")


def _ticket(session: Session, catalogue: Catalogue, now: datetime = NOW, **extra: object) -> Ticket:
    fields: dict[str, object] = {
        "category": "water_leak",
        "description": "厨房水管漏水",
        "channel": "wechat",
        "building": "5",
        "unit": "2",
        "room": "501",
        "contact_phone": "13800000000",
    }
    fields.update(extra)
    return create_ticket(session, now=now, catalogue=catalogue, **fields)  # type: ignore[arg-type]


# --- schema and engine -------------------------------------------------------------------


def test_migrated_schema_matches_the_models(db_engine: Engine) -> None:
    with db_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert context.get_current_revision() == head_revision()


def test_migrations_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'roundtrip.db'}"
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head_revision()
    command.downgrade(alembic_config(url), "base")
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    upgrade(Secret(url))
    assert current_revision(url) == head_revision()


def test_sqlite_engine_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "linli.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        pragma = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        }
    engine.dispose()
    assert path.parent.is_dir()
    assert pragma == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": 5000,
        "synchronous": 1,
    }


def test_foreign_keys_are_enforced(db_session: Session) -> None:
    db_session.add(
        Message(conversation_id=999_999, direction="in", channel="web", text="x", created_at=NOW)
    )
    with pytest.raises(Exception, match="(?i)foreign key"):
        db_session.flush()


def test_session_scope_commits_or_rolls_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'scope.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        find_or_create_resident(session, now=NOW, phone="13800000001")
    with pytest.raises(RuntimeError), session_scope(factory) as session:
        find_or_create_resident(session, now=NOW, phone="13800000002")
        raise RuntimeError("boom")
    with session_scope(factory) as session:
        phones = session.execute(select(Resident.phone)).scalars().all()
    engine.dispose()
    assert phones == ["13800000001"]


def test_factory_sessions_see_each_others_commits(db_session_factory: sessionmaker) -> None:
    with session_scope(db_session_factory) as session:
        find_or_create_resident(session, now=NOW, phone="13800000008")
    with session_scope(db_session_factory) as session:
        phones = session.execute(select(Resident.phone)).scalars().all()
    assert phones == ["13800000008"]  # and nothing from other tests: they were rolled back


def test_datetimes_come_back_aware_utc(db_session: Session) -> None:
    shanghai = timezone(timedelta(hours=8))
    resident = find_or_create_resident(
        db_session, now=datetime(2026, 11, 29, 1, 0, tzinfo=shanghai), phone="13800000003"
    )
    db_session.expire_all()
    loaded = db_session.get(Resident, resident.id)
    assert loaded.created_at == datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
    assert loaded.created_at.utcoffset() == timedelta(0)


def test_naive_datetimes_are_refused(db_session: Session) -> None:
    db_session.add(Resident(phone="13800000004", created_at=datetime(2026, 11, 28)))
    with pytest.raises(StatementError) as info:
        db_session.flush()
    assert isinstance(info.value.orig, NaiveDatetimeError)


# --- numbering ---------------------------------------------------------------------------


def test_numbers_run_per_shanghai_day(db_session: Session, catalogue: Catalogue) -> None:
    first = _ticket(db_session, catalogue, now=datetime(2026, 11, 28, 1, 0, tzinfo=UTC))
    second = _ticket(db_session, catalogue, now=datetime(2026, 11, 28, 15, 59, tzinfo=UTC))
    # 17:00 UTC is already 01:00 on the 29th in Shanghai.
    third = _ticket(db_session, catalogue, now=datetime(2026, 11, 28, 17, 0, tzinfo=UTC))
    fourth = _ticket(db_session, catalogue, now=datetime(2026, 11, 29, 3, 0, tzinfo=UTC))
    assert [t.number for t in (first, second, third, fourth)] == [
        "GD20261128-0001",
        "GD20261128-0002",
        "GD20261129-0001",
        "GD20261129-0002",
    ]
    counters = dict(db_session.execute(select(TicketCounter.day, TicketCounter.value)).all())
    assert counters == {"20261128": 2, "20261129": 2}


def _create_concurrently(engine: Engine, catalogue: Catalogue, now: datetime) -> list[str]:
    factory = make_session_factory(engine)
    ready = threading.Barrier(2)
    numbers: list[str] = []
    errors: list[BaseException] = []
    in_transaction = engine.dialect.name == "postgresql"

    def worker() -> None:
        try:
            if not in_transaction:
                ready.wait(timeout=10)
            with session_scope(factory) as session:
                if in_transaction:
                    session.execute(select(1))  # both transactions are open before numbering
                    ready.wait(timeout=10)
                ticket = create_ticket(
                    session,
                    now=now,
                    category="other",
                    description="并发测试",
                    channel="web",
                    catalogue=catalogue,
                )
                numbers.append(ticket.number)
                time.sleep(0.3)  # hold the counter lock so the other creator must wait
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return numbers


@pytest.mark.postgres
def test_concurrent_creation_on_postgresql_gets_distinct_numbers(
    postgres_engine: Engine, catalogue: Catalogue
) -> None:
    now = datetime(2031, 1, 1, 4, 0, tzinfo=UTC)  # a day no other test uses
    try:
        numbers = _create_concurrently(postgres_engine, catalogue, now)
        assert sorted(numbers) == ["GD20310101-0001", "GD20310101-0002"]
    finally:
        purge_day(postgres_engine, "20310101")


def test_concurrent_creation_on_sqlite_gets_distinct_numbers(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    url = f"sqlite:///{tmp_path / 'concurrent.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        numbers = _create_concurrently(engine, catalogue, datetime(2031, 1, 2, 4, tzinfo=UTC))
    finally:
        engine.dispose()
    assert sorted(numbers) == ["GD20310102-0001", "GD20310102-0002"]


# --- lifecycle ---------------------------------------------------------------------------


def test_ticket_is_created_with_catalogue_defaults(
    db_session: Session, catalogue: Catalogue, resident: Resident
) -> None:
    ticket = _ticket(db_session, catalogue, resident=resident, contact_phone="138-0000-0000")
    assert (ticket.status, ticket.lead_department, ticket.urgency) == ("new", "property", "P2")
    assert ticket.contact_phone == "13800000000"
    assert [e.kind for e in ticket.events] == ["created"]
    with pytest.raises(UnknownCategory):
        _ticket(db_session, catalogue, category="broken_window")


def test_full_lifecycle_is_persisted_and_timed_from_events(
    db_session: Session, catalogue: Catalogue
) -> None:
    ticket = _ticket(db_session, catalogue)
    steps = [
        "dispatched",
        "accepted",
        "in_progress",
        "resolved",
        "reopened",
        "in_progress",
        "resolved",
        "closed",
    ]
    for minute, status in enumerate(steps, start=1):
        transition(
            db_session,
            ticket=ticket,
            to=status,
            actor="agent:li",
            now=NOW + timedelta(minutes=minute),
        )
    db_session.commit()  # the fixture keeps this inside its rolled-back transaction
    db_session.expire_all()

    loaded = get_ticket_by_number(db_session, number=ticket.number)
    assert loaded is not None and loaded.status == "closed"
    assert [e.kind for e in loaded.events] == ["created"] + ["status_changed"] * len(steps)
    timeline = ticket_timeline(loaded)
    assert timeline.dispatched_at == NOW + timedelta(minutes=1)
    assert timeline.first_response_at == NOW + timedelta(minutes=2)
    assert timeline.resolved_at == NOW + timedelta(minutes=7)
    assert timeline.closed_at == NOW + timedelta(minutes=8)
    assert timeline.reopened_count == 1


def test_illegal_transition_changes_nothing_in_the_database(
    db_session: Session, catalogue: Catalogue
) -> None:
    ticket = _ticket(db_session, catalogue)
    db_session.flush()
    with pytest.raises(InvalidTransition, match="allowed from 'new': dispatched, cancelled"):
        transition(db_session, ticket=ticket, to="resolved", actor="bot", now=NOW)
    db_session.flush()
    db_session.expire_all()
    assert db_session.get(Ticket, ticket.id).status == "new"
    count = db_session.execute(
        select(func.count()).select_from(TicketEvent).where(TicketEvent.ticket_id == ticket.id)
    ).scalar_one()
    assert count == 1


def test_cancel_and_edits_append_events(db_session: Session, catalogue: Catalogue) -> None:
    ticket = _ticket(db_session, catalogue)
    add_info(db_session, ticket=ticket, text="楼下邻居也被淹了", actor="resident", now=NOW)
    update_location(db_session, ticket=ticket, actor="resident", now=NOW, room="502")
    correct_ticket(
        db_session,
        ticket=ticket,
        changes={"urgency": "P1"},
        actor="agent:li",
        now=NOW,
        reason="水已漫到电箱",
        catalogue=catalogue,
    )
    cancel_ticket(db_session, ticket=ticket, actor="resident", now=NOW, reason="已修好")
    db_session.flush()
    db_session.expire_all()
    events = (
        db_session.execute(
            select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id)
        )
        .scalars()
        .all()
    )
    assert [e.kind for e in events] == [
        "created",
        "info_added",
        "location_updated",
        "corrected",
        "status_changed",
    ]
    assert events[2].data["changes"] == {"room": {"old": "501", "new": "502"}}
    assert events[3].data == {
        "changes": {"urgency": {"old": "P2", "new": "P1"}},
        "reason": "水已漫到电箱",
    }
    assert db_session.get(Ticket, ticket.id).description == "厨房水管漏水"


def test_events_are_append_only(db_session: Session, catalogue: Catalogue) -> None:
    ticket = _ticket(db_session, catalogue)
    event = ticket.events[0]
    event.actor = "someone-else"
    with pytest.raises(AppendOnlyError, match="append-only"):
        db_session.flush()
    db_session.rollback()
    ticket = _ticket(db_session, catalogue)
    db_session.delete(ticket.events[0])
    with pytest.raises(AppendOnlyError, match="append-only"):
        db_session.flush()


def test_rating_only_after_resolution(db_session: Session, catalogue: Catalogue) -> None:
    ticket = _ticket(db_session, catalogue)
    with pytest.raises(RatingNotAllowed, match="once resolved"):
        rate_ticket(db_session, ticket=ticket, score=5, actor="resident", now=NOW)
    for status in ("dispatched", "accepted", "in_progress", "resolved"):
        transition(db_session, ticket=ticket, to=status, actor="a", now=NOW)
    with pytest.raises(RatingNotAllowed, match="1-5"):
        rate_ticket(db_session, ticket=ticket, score=6, actor="resident", now=NOW)
    rate_ticket(db_session, ticket=ticket, score=3, actor="resident", now=NOW)
    rating = rate_ticket(
        db_session, ticket=ticket, score=5, actor="resident", now=NOW, comment="很快"
    )
    db_session.flush()
    assert (rating.score, rating.comment) == (5, "很快")
    assert ticket.events[-1].data == {"score": 5, "comment": "很快", "previous_score": 3}


def test_lookups(db_session: Session, catalogue: Catalogue, resident: Resident) -> None:
    leak = _ticket(db_session, catalogue, resident=resident, now=NOW)
    noise = _ticket(
        db_session,
        catalogue,
        resident=resident,
        now=NOW + timedelta(hours=1),
        category="neighbor_noise",
    )
    assert get_ticket_by_number(db_session, number=leak.number.lower().replace("-", " ")) is leak
    assert get_ticket_by_number(db_session, number="GD20261128-9999") is None
    assert latest_open_ticket_for_resident(db_session, resident=resident) is noise
    assert (
        latest_open_ticket_for_resident(db_session, resident=resident, category="water_leak")
        is leak
    )
    cancel_ticket(db_session, ticket=noise, actor="resident", now=NOW + timedelta(hours=2))
    assert latest_open_ticket_for_resident(db_session, resident=resident) is leak
    assert tickets_for_resident(db_session, resident=resident) == [noise, leak]
    assert tickets_for_resident(db_session, resident=resident, statuses=["new"]) == [leak]


def test_ticket_as_dict_shape(db_session: Session, catalogue: Catalogue) -> None:
    ticket = _ticket(db_session, catalogue, time_window="明天上午")
    transition(
        db_session, ticket=ticket, to="dispatched", actor="bot", now=NOW + timedelta(minutes=1)
    )
    correct_ticket(
        db_session,
        ticket=ticket,
        changes={"contact_phone": "13912345678"},
        actor="resident",
        now=NOW,
        catalogue=catalogue,
    )
    db_session.flush()
    data = ticket_as_dict(ticket, catalogue=catalogue)
    json.dumps(data, ensure_ascii=False)  # must be JSON-ready as is
    assert data["number"] == ticket.number
    assert (data["category_name"], data["lead_department_name"]) == (
        "漏水渗水、水管爆裂",
        "物业服务中心",
    )
    assert (data["status"], data["status_label"]) == ("dispatched", "已派单")
    assert data["location"] == {
        "building": "5",
        "unit": "2",
        "room": "501",
        "floor": None,
        "address_text": None,
    }
    assert data["location_display"] == "5号楼2单元501"
    assert data["contact_phone"] == "139****5678"
    assert "13800000000" not in json.dumps(data) and "13912345678" not in json.dumps(data)
    assert [e["kind"] for e in data["events"]] == ["created", "status_changed", "corrected"]
    assert data["created_at"] == "2026-11-28T02:00:00+00:00"
    assert data["created_at_local"] == "2026-11-28 10:00"
    assert data["timeline"]["dispatched_at"] == "2026-11-28T02:01:00+00:00"
    assert data["sla"]["resolve_due"] == "2026-11-29T02:00:00+00:00"
    assert (data["urgency"], data["channel"], data["in_home"]) == ("P2", "wechat", True)


# --- residents, conversations, messages ----------------------------------------------------


def test_resident_is_found_by_phone_or_openid(db_session: Session) -> None:
    by_phone = find_or_create_resident(db_session, now=NOW, phone="+86 138 0000 0005")
    assert by_phone.phone == "13800000005"
    linked = find_or_create_resident(
        db_session, now=NOW, phone="13800000005", wechat_openid="o-wx-1"
    )
    assert linked is by_phone and linked.wechat_openid == "o-wx-1"
    assert find_or_create_resident(db_session, now=NOW, wechat_openid="o-wx-1") is by_phone
    with pytest.raises(InvalidPhone, match="11 mobile digits"):
        find_or_create_resident(db_session, now=NOW, phone="12345")
    with pytest.raises(ConversationError, match="phone or wechat_openid"):
        find_or_create_resident(db_session, now=NOW)


def test_normalize_phone() -> None:
    assert normalize_phone("１３８ ００００ ００００") == "13800000000"
    assert normalize_phone("0571-88001234") == "057188001234"


def test_inbound_messages_are_deduplicated(db_session: Session) -> None:
    first, duplicate = record_inbound(
        db_session,
        channel="wechat",
        sender_key="o-wx-2",
        text="电梯坏了",
        now=NOW,
        provider_message_id="wx-msg-1",
        payload={"MsgType": "text"},
    )
    again, repeat = record_inbound(
        db_session,
        channel="wechat",
        sender_key="o-wx-2",
        text="电梯坏了",
        now=NOW + timedelta(seconds=5),
        provider_message_id="wx-msg-1",
    )
    assert (duplicate, repeat) == (False, True)
    assert again.id == first.id
    other_channel, dup = record_inbound(
        db_session,
        channel="sms",
        sender_key="13800000000",
        text="电梯坏了",
        now=NOW,
        provider_message_id="wx-msg-1",
    )
    assert dup is False and other_channel.id != first.id
    rows = db_session.execute(
        select(func.count()).select_from(Message).where(Message.provider_message_id == "wx-msg-1")
    ).scalar_one()
    assert rows == 2
    # Without a provider id there is nothing to compare, so both are stored.
    a, _ = record_inbound(db_session, channel="web", sender_key="s1", text="你好", now=NOW)
    b, dup = record_inbound(db_session, channel="web", sender_key="s1", text="你好", now=NOW)
    assert dup is False and a.id != b.id


def test_inbound_retry_racing_the_first_delivery_is_a_duplicate(
    db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = record_inbound(
        db_session,
        channel="wechat",
        sender_key="o-wx-9",
        text="有人被困电梯",
        now=NOW,
        provider_message_id="wx-race",
    )
    real_lookup = conversations._duplicate
    calls: list[str] = []

    def lookup_missing_once(session: Session, channel: str, provider_id: str) -> Message | None:
        # The retry's first look happens before the first delivery is visible.
        calls.append(provider_id)
        return None if len(calls) == 1 else real_lookup(session, channel, provider_id)

    monkeypatch.setattr(conversations, "_duplicate", lookup_missing_once)
    again, duplicate = record_inbound(
        db_session,
        channel="wechat",
        sender_key="o-wx-9",
        text="有人被困电梯",
        now=NOW,
        provider_message_id="wx-race",
    )
    assert (duplicate, again.id, len(calls)) == (True, first.id, 2)
    # The unique-constraint failure stayed inside its savepoint: the session still works.
    record_outbound(db_session, conversation=first.conversation, text="已收到", now=NOW)
    db_session.flush()


def test_conversation_opened_by_a_racing_request_is_reused(
    db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = open_conversation(db_session, channel="sms", sender_key="13800000007", now=NOW)
    db_session.flush()
    real_find = conversations.find_open_conversation
    calls: list[str] = []

    def find_missing_once(
        session: Session, *, channel: str, sender_key: str
    ) -> Conversation | None:
        calls.append(sender_key)
        if len(calls) == 1:
            return None
        return real_find(session, channel=channel, sender_key=sender_key)

    monkeypatch.setattr(conversations, "find_open_conversation", find_missing_once)
    again = open_conversation(db_session, channel="sms", sender_key="13800000007", now=NOW)
    assert again is existing and len(calls) == 2


def test_inbound_is_stored_even_if_processing_fails_later(db_session: Session) -> None:
    message, _ = record_inbound(
        db_session,
        channel="sms",
        sender_key="13800000006",
        text="停水了",
        now=NOW,
        provider_message_id="sms-1",
    )
    db_session.commit()  # what the hub does before calling Rasa
    db_session.rollback()  # a later failure
    assert db_session.get(Message, message.id) is not None


def test_conversation_reuse_and_transcript(db_session: Session) -> None:
    resident = find_or_create_resident(db_session, now=NOW, wechat_openid="o-wx-3")
    message, _ = record_inbound(
        db_session,
        channel="wechat",
        sender_key="o-wx-3",
        text="暖气不热",
        now=NOW,
        resident=resident,
    )
    conversation = message.conversation
    assert conversation.resident is resident and conversation.state == "bot"
    record_outbound(
        db_session,
        conversation=conversation,
        text="请问您住几号楼？",
        now=NOW + timedelta(seconds=1),
    )
    reply, _ = record_inbound(
        db_session,
        channel="wechat",
        sender_key="o-wx-3",
        text="3号楼",
        now=NOW + timedelta(seconds=30),
    )
    assert reply.conversation is conversation
    assert conversation.last_message_at == NOW + timedelta(seconds=30)
    assert [(m["direction"], m["text"]) for m in transcript(conversation)] == [
        ("in", "暖气不热"),
        ("out", "请问您住几号楼？"),
        ("in", "3号楼"),
    ]
    set_conversation_state(db_session, conversation=conversation, state="closed", now=NOW)
    fresh = open_conversation(db_session, channel="wechat", sender_key="o-wx-3", now=NOW)
    assert fresh.id != conversation.id and fresh.state == "bot"
    with pytest.raises(ConversationError, match="unknown channel 'fax'"):
        open_conversation(db_session, channel="fax", sender_key="x", now=NOW)


def test_only_one_open_conversation_per_sender(db_session: Session) -> None:
    open_conversation(db_session, channel="web", sender_key="dup", now=NOW)
    db_session.flush()
    # Bypass open_conversation, as a racing request would: the database must refuse.
    db_session.add(
        Conversation(
            channel="web", sender_key="dup", state="bot", started_at=NOW, last_message_at=NOW
        )
    )
    with pytest.raises(IntegrityError):
        db_session.flush()


# --- settings and catalogue files ------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.database_url.reveal().endswith("/var/linli.db")
    assert settings.database_url.reveal().startswith("sqlite:////")
    assert (settings.host, settings.port, settings.actions_port) == ("127.0.0.1", 8000, 5055)
    assert settings.rasa_url == "http://127.0.0.1:5005"
    assert settings.catalogue_path.name == "catalogue.yml"
    assert settings.tz.key == "Asia/Shanghai"


def test_settings_overrides_and_secret_masking() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgres://linli:hunter2@db:5432/linli",
            "LINLI_PORT": "9000",
            "RASA_URL": "http://rasa:5005/",
        }
    )
    assert settings.database_url.reveal() == "postgresql://linli:hunter2@db:5432/linli"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.database_url)
    assert "hunter2" not in f"{settings.database_url}"
    assert settings.database_url_redacted == "postgresql://linli:***@db:5432/linli"
    assert (settings.port, settings.rasa_url) == (9000, "http://rasa:5005")


def test_settings_errors_say_how_to_fix() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(
            {
                "LINLI_PORT": "eighty",
                "ACTIONS_PORT": "70000",
                "RASA_URL": "rasa",
                "DATABASE_URL": "mysql://x",
            }
        )
    message = str(info.value)
    assert "LINLI_PORT=8000" in message and "ACTIONS_PORT=5055" in message
    assert "RASA_URL=http://127.0.0.1:5005" in message and "DATABASE_URL=sqlite:" in message


def test_load_catalogue_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="file not found"):
        load_catalogue(tmp_path / "missing.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("sla: [unclosed", encoding="utf-8")
    with pytest.raises(CatalogueError, match="not valid YAML"):
        load_catalogue(broken)
    empty = tmp_path / "empty.yml"
    empty.write_text("sla: []\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match=r"empty\.yml: section 'sla'"):
        load_catalogue(empty)
