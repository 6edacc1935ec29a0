"""SLA jobs on real databases: scheduling, reminders, breaches, escalation, restarts.

The job store is the apscheduler_jobs table of the test database, so these tests commit
for real (each on a ticket day of its own) and delete their tickets and jobs afterwards.
Time moves through run_due(now=...) instead of sleeping; one test runs a real
BackgroundScheduler to prove the stored jobs fire on their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.base import STATE_STOPPED
from sqlalchemy import select
from sqlalchemy.engine import Engine

import bot.app
from bot.app import App
from bot.community import load_community
from bot.db import make_session_factory, session_scope
from bot.dispatch import dispatch_ticket
from bot.models import Ticket
from bot.scheduler import (
    SchedulerNotStarted,
    check_sla,
    make_scheduler,
    open_jobstore,
    run_due,
    schedule_sla,
    sla_job_id,
)
from bot.settings import Secret, Settings
from bot.staff import accept_order
from bot.tickets import cancel_ticket, create_ticket
from routing.catalogue import Catalogue
from routing.roster import Roster
from tests.cleanup import purge_day

pytestmark = pytest.mark.integration


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


class World:
    """A committed ticket day on one backend: its app, its job store, and helpers."""

    def __init__(self, engine: Engine, catalogue: Catalogue, roster: Roster, start: datetime):
        self.engine = engine
        self.catalogue = catalogue
        self.roster = roster
        self.start = start
        self.day = (start + timedelta(hours=8)).strftime("%Y%m%d")
        self.sessions = make_session_factory(engine)
        self.clock_now = start
        self.app = App(
            settings=Settings(database_url=Secret(_url(engine))), engine=engine,
            sessions=self.sessions, catalogue=catalogue, community=load_community(),
            roster=roster, clock=lambda: self.clock_now,
        )
        self.store = open_jobstore(_url(engine))

    def ticket(self, category: str, *, dispatch: bool = True, at: datetime | None = None) -> str:
        at = at or self.start
        with session_scope(self.sessions) as session:
            ticket = create_ticket(session, now=at, catalogue=self.catalogue, category=category,
                                   description="时限测试", channel="web", building="9")
            if dispatch:
                dispatch_ticket(session, ticket=ticket, catalogue=self.catalogue,
                                roster=self.roster, now=at)
            return ticket.number

    def load(self, number: str) -> Ticket:
        with session_scope(self.sessions) as session:
            ticket = session.execute(select(Ticket).where(Ticket.number == number)).scalar_one()
            list(ticket.events), list(ticket.work_orders)  # load before the session closes
            return ticket

    def schedule(self, number: str, target: Any = None) -> list[str]:
        return schedule_sla(target or self.store, ticket=self.load(number),
                            catalogue=self.catalogue, now=self.start)

    def run(self, after: timedelta) -> dict[str, str]:
        return run_due(self.store, now=self.start + after, app=self.app)

    def sla_events(self, number: str) -> list[tuple[str, dict[str, Any]]]:
        kinds = ("sla_reminder", "sla_breached", "escalated")
        return [(e.kind, e.data) for e in self.load(number).events if e.kind in kinds]

    def job_ids(self) -> list[str]:
        prefix = f"sla:GD{self.day}-"
        return sorted(j.id for j in self.store.get_all_jobs() if j.id.startswith(prefix))


@pytest.fixture
def world_at(
    db_engine: Engine, catalogue: Catalogue, roster: Roster
) -> Iterator[Callable[[datetime], World]]:
    made: list[World] = []

    def build(start: datetime) -> World:
        made.append(World(db_engine, catalogue, roster, start))
        return made[-1]

    try:
        yield build
    finally:
        for world in made:
            purge_day(db_engine, world.day)
            world.store.shutdown()


# Monday 10:00 in Shanghai on days no other test uses.
P2_START = datetime(2031, 3, 3, 2, 0, tzinfo=UTC)


def test_schedule_adds_one_job_per_reminder_and_deadline_once(
    world_at: Callable[[datetime], World]
) -> None:
    world = world_at(datetime(2031, 3, 4, 2, 0, tzinfo=UTC))
    number = world.ticket("elevator_trapped")  # P1: all four stages have a target
    added = world.schedule(number)
    stages = ("dispatch", "first_response", "on_site", "resolve")
    assert sorted(added) == sorted(
        sla_job_id(number, s, k) for s in stages for k in ("remind", "due")
    )
    assert world.schedule(number) == []  # idempotent
    assert world.job_ids() == sorted(added)
    job = world.store.lookup_job(sla_job_id(number, "first_response", "due"))
    assert job.next_run_time == world.start + timedelta(minutes=5)
    assert job.args == (number, "first_response", "due")
    remind = world.store.lookup_job(sla_job_id(number, "first_response", "remind"))
    assert remind.next_run_time == world.start + timedelta(minutes=4)  # 80 % of 5 minutes


def test_reminder_then_breach_escalates_once_per_job(
    world_at: Callable[[datetime], World]
) -> None:
    world = world_at(P2_START)
    number = world.ticket("water_leak")  # P2: first response 30 min, resolve 24 h
    world.schedule(number)
    lead = next(o for o in world.load(number).work_orders if o.role == "lead")

    assert world.run(timedelta(minutes=23)) == {}
    assert world.run(timedelta(minutes=24)) == {
        sla_job_id(number, "first_response", "remind"): "reminded"
    }
    assert world.run(timedelta(minutes=25)) == {}  # fired jobs are gone
    assert world.run(timedelta(minutes=31)) == {
        sla_job_id(number, "first_response", "due"): "breached"
    }
    events = world.sla_events(number)
    assert [k for k, _ in events] == ["sla_reminder", "sla_breached", "escalated"]
    assert events[0][1]["staff"] == lead.assignee
    assert events[2][1]["rung"] == "department_head"
    assert events[2][1]["staff"] == world.roster.head("property").id

    # The same job scheduled again and fired again (a second scheduler, a retry): no repeat.
    assert sla_job_id(number, "first_response", "due") in world.schedule(number)
    assert world.run(timedelta(minutes=32)) == {
        sla_job_id(number, "first_response", "remind"): "duplicate",
        sla_job_id(number, "first_response", "due"): "duplicate",
    }
    assert len(world.sla_events(number)) == 3


def test_rung_rises_with_each_breach(world_at: Callable[[datetime], World]) -> None:
    world = world_at(datetime(2031, 3, 5, 2, 0, tzinfo=UTC))
    number = world.ticket("elevator_trapped", dispatch=False)  # P1 and never even dispatched
    world.schedule(number)
    outcomes = world.run(timedelta(hours=5))  # past every deadline at once
    assert sorted(outcomes.values()) == ["breached"] * 4 + ["reminded"] * 4
    escalations = [d for k, d in world.sla_events(number) if k == "escalated"]
    assert [(d["level"], d["rung"]) for d in escalations] == [
        (1, "department_head"), (2, "community_director"), (3, "street_office"),
        (4, "street_office"),
    ]
    assert escalations[1]["staff"] == world.roster.director().id
    assert escalations[0]["department"] == "elevator_maintenance"


def test_met_stages_and_finished_tickets_record_nothing(
    world_at: Callable[[datetime], World]
) -> None:
    world = world_at(datetime(2031, 3, 6, 2, 0, tzinfo=UTC))
    accepted = world.ticket("water_leak")
    cancelled = world.ticket("water_leak")
    for number in (accepted, cancelled):
        world.schedule(number)
    lead = next(o for o in world.load(accepted).work_orders if o.role == "lead")
    with session_scope(world.sessions) as session:
        accept_order(session, order_id=lead.id, staff_id=lead.assignee, roster=world.roster,
                     now=world.start + timedelta(minutes=10))
        ticket = session.execute(select(Ticket).where(Ticket.number == cancelled)).scalar_one()
        cancel_ticket(session, ticket=ticket, actor="agent:li", now=world.start)
    outcomes = world.run(timedelta(minutes=31))
    assert outcomes[sla_job_id(accepted, "first_response", "due")] == "met"
    assert outcomes[sla_job_id(cancelled, "first_response", "due")] == "finished"
    assert world.sla_events(accepted) == [] and world.sla_events(cancelled) == []
    # The resolve deadline is still pending for the accepted ticket, and no longer for the other.
    assert world.job_ids() == sorted(
        sla_job_id(n, "resolve", k) for n in (accepted, cancelled) for k in ("remind", "due")
    )


def test_the_same_job_firing_twice_at_once_records_once(
    world_at: Callable[[datetime], World]
) -> None:
    world = world_at(datetime(2031, 3, 7, 2, 0, tzinfo=UTC))
    number = world.ticket("water_leak")
    late = world.start + timedelta(minutes=31)
    in_transaction = world.engine.dialect.name == "postgresql"
    ready = threading.Barrier(2)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def fire() -> None:
        try:
            if not in_transaction:
                ready.wait(timeout=10)
            with session_scope(world.sessions) as session:
                if in_transaction:
                    session.execute(select(1))  # both transactions are open before either checks
                    ready.wait(timeout=10)
                outcomes.append(check_sla(session, ticket_number=number, stage="first_response",
                                          kind="due", now=late, catalogue=world.catalogue,
                                          roster=world.roster))
                time.sleep(0.3)  # hold the ticket row so the other check must wait
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert sorted(outcomes) == ["breached", "duplicate"]
    assert [k for k, _ in world.sla_events(number)] == ["sla_breached", "escalated"]


def test_jobs_survive_a_restart_and_fire_once(world_at: Callable[[datetime], World]) -> None:
    world = world_at(datetime(2031, 3, 10, 2, 0, tzinfo=UTC))
    number = world.ticket("sanitation")  # P3: first response 2 h, resolve 3 d
    first = make_scheduler(_url(world.engine))
    with pytest.raises(SchedulerNotStarted):
        world.schedule(number, first)
    first.start(paused=True)
    try:
        assert len(world.schedule(number, first)) == 4
    finally:
        first.shutdown(wait=False)
    assert first.state == STATE_STOPPED

    second = make_scheduler(_url(world.engine))
    second.start(paused=True)
    try:
        stored = sorted(j.id for j in second.get_jobs(jobstore="default") if number in j.id)
        assert stored == sorted(
            sla_job_id(number, s, k) for s in ("first_response", "resolve")
            for k in ("remind", "due")
        )
        assert second.get_job("linli:wake-up") is not None
        assert world.schedule(number, second) == []  # still idempotent after the restart
    finally:
        second.shutdown(wait=False)

    outcomes = world.run(timedelta(days=4))
    assert sorted(outcomes.values()) == ["breached", "breached", "reminded", "reminded"]
    assert world.run(timedelta(days=5)) == {}
    assert len(world.sla_events(number)) == 6  # 2 reminders, 2 × (breach + escalation)


def test_a_running_scheduler_fires_stored_jobs_by_itself(
    world_at: Callable[[datetime], World], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deadlines long past in real time, so the real scheduler finds them due at once.
    world = world_at(datetime(2020, 1, 6, 2, 0, tzinfo=UTC))
    world.clock_now = world.start + timedelta(days=10)
    monkeypatch.setattr(bot.app, "shared_app", lambda: world.app)
    number = world.ticket("sanitation")
    scheduler = make_scheduler(_url(world.engine))
    scheduler.start()
    try:
        world.schedule(number, scheduler)
        deadline = time.monotonic() + 20
        while len(world.sla_events(number)) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        while world.job_ids() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        scheduler.shutdown(wait=True)
    kinds = sorted(k for k, _ in world.sla_events(number))
    assert kinds == ["escalated"] * 2 + ["sla_breached"] * 2 + ["sla_reminder"] * 2
    assert world.job_ids() == []  # date jobs are removed once they have fired
