"""SLA timers (时限提醒与督办) on APScheduler with a job store in the application database.

Every ticket gets one date job per stage reminder and per deadline, with ids
`sla:<number>:<stage>:<remind|due>`, stored in apscheduler_jobs on DATABASE_URL so that
jobs survive restarts and jobs added by one process (the action server) are run by
another (the hub's scheduler, which wakes up every 30 seconds to look for them).

A job only carries primitive ids; when it fires it opens its own transaction, locks the
ticket row and records "sla_reminder", or "sla_breached" plus "escalated", unless the
stage is met, the ticket is finished, or this job's event already exists — so a job that
fires twice (two schedulers, a retry) still records once. Tests use run_due() to move
the clock instead of sleeping.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bot.app import App
from bot.db import SQLITE_BUSY_TIMEOUT_MS, session_scope
from bot.dispatch import FINISHED_TICKET_STATUSES, active_lead
from bot.models import Ticket
from bot.settings import Secret
from bot.ticket_view import ticket_timeline
from bot.tickets import record_event
from routing.catalogue import Catalogue
from routing.roster import Roster
from routing.sla import deadlines, escalation_target, stage_met

log = logging.getLogger(__name__)

JOB_TABLE = "apscheduler_jobs"
JOB_FUNC = "bot.scheduler:run_sla_check"
WAKE_UP_SECONDS = 30
KINDS: tuple[str, ...] = ("remind", "due")
SLA_EVENTS: tuple[str, ...] = ("sla_reminder", "sla_breached")
ACTOR = "scheduler"

# run_due() sets these so a job runs on the test's app and clock instead of shared_app().
_APP: ContextVar[App | None] = ContextVar("linli_sla_app", default=None)
_NOW: ContextVar[datetime | None] = ContextVar("linli_sla_now", default=None)


class SchedulerNotStarted(RuntimeError):
    """A stopped scheduler would keep the jobs in memory only; start it or pass its job store."""


@dataclass(frozen=True)
class _UtcScheduler:
    """Stands in for a scheduler when jobs are built for a bare job store: Job needs a zone."""

    timezone: object = UTC


def sla_job_id(number: str, stage: str, kind: str) -> str:
    """Return the job id of one SLA check, e.g. sla:GD20261128-0007:resolve:due."""
    return f"sla:{number}:{stage}:{kind}"


def make_jobstore(database_url: str | Secret) -> SQLAlchemyJobStore:
    """Return a job store on the application database (table apscheduler_jobs)."""
    raw = database_url.reveal() if isinstance(database_url, Secret) else database_url
    # APScheduler 3.9 calls Engine.execute(), which only the non-future engine has.
    if make_url(raw).get_backend_name() == "sqlite":
        engine = create_engine(
            raw,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
    else:
        engine = create_engine(raw, pool_pre_ping=True)
    return SQLAlchemyJobStore(engine=engine, tablename=JOB_TABLE)


def open_jobstore(database_url: str | Secret) -> SQLAlchemyJobStore:
    """Return a started job store for scheduling or run_due() without a running scheduler."""
    store = make_jobstore(database_url)
    store.start(None, "default")
    return store


def _wake_up() -> None:
    """Do nothing: firing makes the scheduler look at the job store again."""


def make_scheduler(database_url: str | Secret) -> BackgroundScheduler:
    """Return an unstarted BackgroundScheduler on the persistent SLA job store."""
    scheduler = BackgroundScheduler(
        jobstores={"default": make_jobstore(database_url), "local": MemoryJobStore()},
        # Late is better than never for an SLA check, and a backlog runs once.
        job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
        timezone=UTC,
    )
    # Jobs added by another process are invisible until the scheduler next looks.
    scheduler.add_job(
        _wake_up,
        "interval",
        seconds=WAKE_UP_SECONDS,
        id="linli:wake-up",
        jobstore="local",
        replace_existing=True,
    )
    return scheduler


def _stores(target: BaseScheduler | BaseJobStore) -> BaseJobStore | None:
    if isinstance(target, BaseJobStore):
        return target
    if target.state == STATE_STOPPED:
        raise SchedulerNotStarted(
            "start the scheduler (start(paused=True) is enough) before scheduling SLA jobs, "
            "or pass a job store from open_jobstore()"
        )
    return None


def schedule_sla(
    target: BaseScheduler | BaseJobStore,
    *,
    ticket: Ticket,
    catalogue: Catalogue,
    now: datetime,
) -> list[str]:
    """Add the ticket's reminder and deadline jobs not yet stored; return the ids added."""
    store = _stores(target)
    added: list[str] = []
    for deadline in deadlines(urgency=ticket.urgency, created_at=ticket.created_at,
                              catalogue=catalogue):
        for kind, when in (("remind", deadline.remind_at), ("due", deadline.due)):
            job_id = sla_job_id(ticket.number, deadline.stage, kind)
            options = {
                "trigger": DateTrigger(run_date=when, timezone=UTC),
                "args": (ticket.number, deadline.stage, kind),
                "id": job_id,
                "name": f"SLA {kind} {deadline.stage} {ticket.number}",
                "misfire_grace_time": None,
                "coalesce": True,
                "max_instances": 1,
            }
            try:
                if store is None:
                    scheduler = target  # a started scheduler: it also wakes up for the job
                    if scheduler.get_job(job_id, jobstore="default") is not None:
                        continue
                    scheduler.add_job(JOB_FUNC, jobstore="default", **options)
                else:
                    if store.lookup_job(job_id) is not None:
                        continue
                    job = Job(_UtcScheduler(), func=JOB_FUNC, executor="default",
                              kwargs={}, next_run_time=when, **options)
                    store.add_job(job)
            except ConflictingIdError:
                continue  # another process scheduled it between our look-up and insert
            added.append(job_id)
    log.debug("scheduled %d SLA jobs for %s at %s", len(added), ticket.number, now.isoformat())
    return added


def check_sla(
    session: Session,
    *,
    ticket_number: str,
    stage: str,
    kind: str,
    now: datetime,
    catalogue: Catalogue,
    roster: Roster,
) -> str:
    """Record one SLA reminder or breach if still due; return what happened, in one word."""
    if kind not in KINDS:
        raise ValueError(f"SLA job kind must be one of {', '.join(KINDS)}, got {kind!r}")
    # The row lock makes a second firing of the same job wait, then see the first's event.
    ticket = session.execute(
        select(Ticket).where(Ticket.number == ticket_number).with_for_update()
    ).scalar_one_or_none()
    if ticket is None:
        return "missing"
    if ticket.status in FINISHED_TICKET_STATUSES:
        return "finished"
    job_id = sla_job_id(ticket_number, stage, kind)
    if any(e.kind in SLA_EVENTS and e.data.get("job") == job_id for e in ticket.events):
        return "duplicate"
    deadline = next(
        (d for d in deadlines(urgency=ticket.urgency, created_at=ticket.created_at,
                              catalogue=catalogue) if d.stage == stage),
        None,
    )
    if deadline is None:
        return "no_deadline"  # the urgency changed since and this stage has no target now
    if now < (deadline.remind_at if kind == "remind" else deadline.due):
        return "early"  # the urgency changed since and the deadline moved later
    if stage_met(stage, ticket_timeline(ticket)):
        return "met"
    lead = active_lead(ticket)
    department = lead.department if lead is not None else ticket.lead_department
    assignee = lead.assignee if lead is not None else None
    data = {"job": job_id, "stage": stage, "due": deadline.due.isoformat(),
            "department": department, "assignee": assignee}
    if kind == "remind":
        record_event(session, ticket=ticket, kind="sla_reminder", actor=ACTOR, now=now,
                     data={**data, "staff": assignee})
        return "reminded"
    # One rung up per breach: the worker was already reminded, so the first goes to the head.
    level = 1 + sum(e.kind == "escalated" for e in ticket.events)
    rung, staff = escalation_target(level=level, department=department, assignee=assignee,
                                    roster=roster)
    record_event(session, ticket=ticket, kind="sla_breached", actor=ACTOR, now=now, data=data)
    record_event(session, ticket=ticket, kind="escalated", actor=ACTOR, now=now,
                 data={"job": job_id, "stage": stage, "level": level, "rung": rung,
                       "staff": staff, "department": department})
    return "breached"


def run_sla_check(ticket_number: str, stage: str, kind: str) -> str:
    """Run one SLA job in its own transaction on the process's app and clock."""
    from bot import app as app_module  # looked up at call time so tests can swap it

    app = _APP.get() or app_module.shared_app()
    now = _NOW.get() or app.clock()
    with session_scope(app.sessions) as session:
        outcome = check_sla(session, ticket_number=ticket_number, stage=stage, kind=kind,
                            now=now, catalogue=app.catalogue, roster=app.roster)
    log.info("SLA %s: %s", sla_job_id(ticket_number, stage, kind), outcome)
    return outcome


@contextmanager
def _running_on(app: App | None, now: datetime) -> Iterator[None]:
    app_token = _APP.set(app)
    now_token = _NOW.set(now)
    try:
        yield
    finally:
        _NOW.reset(now_token)
        _APP.reset(app_token)


def run_due(
    jobstore: BaseJobStore, *, now: datetime, app: App | None = None
) -> dict[str, str]:
    """Run and remove every job due at `now` with that clock; return job id → outcome."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(UTC)")
    results: dict[str, str] = {}
    for job in jobstore.get_due_jobs(now):
        try:
            with _running_on(app, now):
                results[job.id] = str(job.func(*job.args, **job.kwargs))
        except Exception as exc:  # one bad job must not stop the others, as in APScheduler
            log.exception("SLA job %s failed", job.id)
            results[job.id] = f"error: {exc}"
        following = job.trigger.get_next_fire_time(job.next_run_time, now)
        if following is None:
            jobstore.remove_job(job.id)
        else:
            job._scheduler = job._scheduler or _UtcScheduler()  # a bare store has none
            job._modify(next_run_time=following)
            jobstore.update_job(job)
    return results
