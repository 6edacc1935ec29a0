"""Service metrics computed from the stored event log, never typed in."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from bot.dispatch import final_owner, grid_of, hop_count
from bot.models import Ticket
from bot.ticket_view import ticket_timeline
from routing.catalogue import Catalogue
from routing.metrics import OrderRecord, summarize
from routing.roster import Roster
from routing.sla import deadlines, met_on_time


def order_record(ticket: Ticket, *, catalogue: Catalogue, roster: Roster,
                 now: datetime) -> OrderRecord:
    """Describe one dispatched ticket for the metrics, from its events and work orders."""
    timeline = ticket_timeline(ticket)
    leads = sorted((o for o in ticket.work_orders if o.role == "lead"),
                   key=lambda o: (o.attempt, o.id))
    sla_met: dict[str, bool] = {}
    for deadline in deadlines(urgency=ticket.urgency, created_at=ticket.created_at,
                              catalogue=catalogue):
        met = met_on_time(deadline=deadline, timeline=timeline, now=now)
        if met is not None:
            sla_met[deadline.stage] = met
    return OrderRecord(
        number=ticket.number,
        category=ticket.category,
        channel=ticket.channel,
        grid=grid_of(roster, ticket.building),
        created_at=ticket.created_at,
        urgency=ticket.urgency,
        hops=hop_count(ticket),
        first_lead=leads[0].department if leads else ticket.lead_department,
        final_owner=final_owner(leads),
        dispatched_at=timeline.dispatched_at,
        first_response_at=timeline.first_response_at,
        resolved_at=timeline.resolved_at,
        assignees=tuple(dict.fromkeys(o.assignee for o in ticket.work_orders if o.assignee)),
        sla_met=sla_met,
    )


def service_metrics(session: Session, *, catalogue: Catalogue, roster: Roster, now: datetime,
                    by: str | None = None, since: datetime | None = None) -> dict[str, Any]:
    """Summarise every dispatched order (optionally since a time), overall or by one dimension."""
    query = (select(Ticket).options(selectinload(Ticket.events), selectinload(Ticket.work_orders))
             .order_by(Ticket.id))
    if since is not None:
        query = query.where(Ticket.created_at >= since)
    records = [
        order_record(ticket, catalogue=catalogue, roster=roster, now=now)
        for ticket in session.execute(query).scalars()
        if ticket.work_orders
    ]
    return summarize(records, by=by)
