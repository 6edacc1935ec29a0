"""Removing what a test committed for real on its own ticket day (concurrency tests)."""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from bot.models import (
    Attachment,
    AuditEntry,
    OutboxMessage,
    Rating,
    Ticket,
    TicketCounter,
    TicketEvent,
    WorkOrder,
    apscheduler_jobs,
)


def purge_day(engine: Engine, day: str) -> None:
    """Delete the tickets numbered GD<day>-…, everything pointing at them, and their SLA jobs.

    Core statements: the ORM guards that keep events and audit entries append-only are for
    the application, not for cleaning up after a test.
    """
    numbered = Ticket.number.like(f"GD{day}-%")
    with engine.begin() as connection:
        ids = select(Ticket.id).where(numbered).scalar_subquery()
        for model in (OutboxMessage, Attachment, AuditEntry, Rating, WorkOrder, TicketEvent):
            connection.execute(delete(model.__table__).where(model.ticket_id.in_(ids)))
        connection.execute(delete(Ticket.__table__).where(numbered))
        connection.execute(delete(TicketCounter.__table__).where(TicketCounter.day == day))
        connection.execute(delete(apscheduler_jobs).where(
            apscheduler_jobs.c.id.like(f"sla:GD{day}-%")))
