"""Dispatch a ticket (派单): turn routing's plan into work orders, and read orders back.

The decision is made by routing.dispatch (pure); this module feeds it what only the
database knows — who holds how many open orders, who was given how many so far, which
routes past tickets ended up taking — and records the outcome as WorkOrder rows plus a
"dispatched" event. Like bot.tickets, services take the Session and the clock and never
commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from bot.models import ACTIVE_ORDER_STATUSES, Ticket, WorkOrder
from bot.tickets import record_event, transition
from routing.catalogue import Catalogue, default_catalogue
from routing.dispatch import DispatchPlan, TicketFacts, plan_dispatch
from routing.learning import LearnedRoutes, Outcome
from routing.roster import (
    BuildingNotInGrid,
    Roster,
    UnknownStaff,
)

if TYPE_CHECKING:
    pass

# Tickets in these statuses no longer tie anyone up, whatever their orders say.
FINISHED_TICKET_STATUSES: tuple[str, ...] = ("resolved", "closed", "cancelled")
DISPATCHABLE_STATUSES: tuple[str, ...] = ("new", "reopened")
# Events that moved the lead to another department: each one is a hop.
REROUTE_EVENTS: tuple[str, ...] = ("rerouted", "arbitration")

ROLE_LABELS: Mapping[str, str] = {"lead": "主办", "assist": "协办", "verify": "核查"}
ORDER_STATUS_LABELS: Mapping[str, str] = {
    "open": "待签收",
    "accepted": "已签收",
    "in_progress": "处理中",
    "returned": "已退回",
    "resolved": "已办结",
    "cancelled": "已取消",
}


class DispatchError(Exception):
    """The ticket cannot be dispatched now; the message says why and what to do."""


def grid_of(roster: Roster, building: str | None) -> str | None:
    """Return the id of the grid covering a building, or None if unknown."""
    if not building:
        return None
    try:
        return roster.grid_for_building(building).id
    except BuildingNotInGrid:
        return None


def ticket_facts(
    ticket: Ticket, *, roster: Roster, ranking: Sequence[tuple[str, float]] = ()
) -> TicketFacts:
    """Return what routing needs to know about a ticket."""
    # A building outside every grid would make routing raise; treat it as unknown instead.
    building = ticket.building if grid_of(roster, ticket.building) else None
    return TicketFacts(
        number=ticket.number,
        category=ticket.category,
        urgency=ticket.urgency,
        building=building,
        ranking=tuple((str(c), float(s)) for c, s in ranking),
    )


def stored_ranking(ticket: Ticket) -> tuple[tuple[str, float], ...]:
    """Return the classifier ranking saved with the ticket's latest dispatch, if any."""
    for event in reversed(ticket.events):
        if event.kind == "dispatched":
            return tuple((str(c), float(s)) for c, s in event.data.get("ranking") or ())
    return ()


def order_load(session: Session) -> tuple[dict[str, int], dict[str, int]]:
    """Return (open orders per assignee, orders ever assigned per assignee)."""
    open_rows = session.execute(
        select(WorkOrder.assignee, func.count())
        .join(Ticket, Ticket.id == WorkOrder.ticket_id)
        .where(
            WorkOrder.assignee.is_not(None),
            WorkOrder.status.in_(ACTIVE_ORDER_STATUSES),
            Ticket.status.not_in(FINISHED_TICKET_STATUSES),
        )
        .group_by(WorkOrder.assignee)
    ).all()
    total_rows = session.execute(
        select(WorkOrder.assignee, func.count())
        .where(WorkOrder.assignee.is_not(None))
        .group_by(WorkOrder.assignee)
    ).all()
    return {a: int(n) for a, n in open_rows}, {a: int(n) for a, n in total_rows}


def active_lead(ticket: Ticket) -> WorkOrder | None:
    """Return the ticket's current lead order (open, accepted or in progress), if any."""
    return next(
        (
            o
            for o in reversed(ticket.work_orders)
            if o.role == "lead" and o.status in ACTIVE_ORDER_STATUSES
        ),
        None,
    )


def _order_entry(order: WorkOrder) -> dict[str, Any]:
    return {
        "order": order.id,
        "department": order.department,
        "role": order.role,
        "assignee": order.assignee,
        "reasons": list(order.reasons),
    }


def dispatch_ticket(
    session: Session,
    *,
    ticket: Ticket,
    catalogue: Catalogue,
    roster: Roster,
    now: datetime,
    ranking: Sequence[tuple[str, float]] = (),
    learned: LearnedRoutes | None = None,
    actor: str = "bot",
) -> DispatchPlan:
    """Write the lead, assisting and verifying orders at once and mark the ticket dispatched."""
    if ticket.status not in DISPATCHABLE_STATUSES:
        raise DispatchError(
            f"ticket {ticket.number} is {ticket.status!r}; only new or reopened tickets are "
            f"dispatched — use return/re-route for one already dispatched"
        )
    if active_lead(ticket) is not None:
        raise DispatchError(
            f"ticket {ticket.number} still has an active lead order; resolve or cancel it first"
        )
    open_load, assigned_total = order_load(session)
    facts = ticket_facts(ticket, roster=roster, ranking=ranking)
    plan = plan_dispatch(
        ticket=facts,
        catalogue=catalogue,
        roster=roster,
        open_load=open_load,
        assigned_total=assigned_total,
        learned=learned,
        now=now,
    )
    # A reopened ticket's new round counts on from its earlier leads.
    attempt = 1 + max((o.attempt for o in ticket.work_orders if o.role == "lead"), default=0)
    orders = [
        WorkOrder(
            department=a.department,
            role=a.role,
            assignee=a.assignee,
            status="open",
            attempt=attempt,
            reasons=list(a.reasons),
            created_at=now,
            updated_at=now,
        )
        for a in plan.orders
    ]
    for order in orders:
        ticket.work_orders.append(order)
        session.add(order)
    session.flush()
    data: dict[str, Any] = {
        "orders": [_order_entry(o) for o in orders],
        "attempt": attempt,
        "reasons": list(plan.lead.reasons),
        "grid": grid_of(roster, ticket.building),
        "ranking": [[c, s] for c, s in facts.ranking],
    }
    if plan.lead.department != ticket.lead_department:
        # A learned route led instead of the catalogue; the ticket shows who owns it now.
        data["lead_department"] = {"old": ticket.lead_department, "new": plan.lead.department}
        ticket.lead_department = plan.lead.department
    record_event(session, ticket=ticket, kind="dispatched", actor=actor, now=now, data=data)
    transition(session, ticket=ticket, to="dispatched", actor=actor, now=now, reason="派单")
    return plan


def cancel_open_orders(
    session: Session, *, ticket: Ticket, actor: str, now: datetime
) -> list[WorkOrder]:
    """Cancel the ticket's unfinished orders (call when the ticket itself is cancelled)."""
    cancelled = [o for o in ticket.work_orders if o.status in ACTIVE_ORDER_STATUSES]
    if not cancelled:
        return []
    for order in cancelled:
        order.status = "cancelled"
        order.updated_at = now
    record_event(
        session,
        ticket=ticket,
        kind="orders_cancelled",
        actor=actor,
        now=now,
        data={"orders": [o.id for o in cancelled]},
    )
    return cancelled


def final_owner(leads: Sequence[WorkOrder]) -> str | None:
    """Return the department that resolved the ticket, or the one holding it now."""
    resolved = [o for o in leads if o.status == "resolved"]
    if resolved:
        return resolved[-1].department
    standing = [o for o in leads if o.status != "returned"]
    return standing[-1].department if standing else None


def load_learned_routes(session: Session, *, roster: Roster) -> LearnedRoutes:
    """Learn routes from resolved and closed tickets: first lead versus final owner."""
    tickets = session.execute(
        select(Ticket)
        .where(Ticket.status.in_(("resolved", "closed")))
        .options(selectinload(Ticket.work_orders))
        .order_by(Ticket.id)
    ).scalars()
    outcomes: list[Outcome] = []
    for ticket in tickets:
        leads = [o for o in ticket.work_orders if o.role == "lead"]
        if not leads:
            continue  # finished before work orders existed: nothing to learn from
        owner = final_owner(leads)
        if owner is None:
            continue
        outcomes.append(
            Outcome(
                category=ticket.category,
                grid=grid_of(roster, ticket.building),
                first_lead=min(leads, key=lambda o: (o.attempt, o.id)).department,
                final_owner=owner,
            )
        )
    return LearnedRoutes.from_outcomes(outcomes)


def hop_count(ticket: Ticket) -> int:
    """Return how many departments led the ticket: 1 + re-routes (0 before dispatch)."""
    kinds = [e.kind for e in ticket.events]
    if "dispatched" not in kinds:
        return 0
    return 1 + sum(kind in REROUTE_EVENTS for kind in kinds)


def _staff_name(roster: Roster, staff_id: str) -> str:
    try:
        return roster.member(staff_id).name
    except UnknownStaff:
        return staff_id  # left the roster since; the id still says who it was


def order_as_dict(
    order: WorkOrder, *, roster: Roster, catalogue: Catalogue | None = None
) -> dict[str, Any]:
    """Return one work order as JSON-ready data, names resolved."""
    catalogue = catalogue or default_catalogue()
    names = {d.id: d.name for d in catalogue.departments}
    return {
        "id": order.id,
        "ticket": order.ticket.number if order.ticket is not None else None,
        "department": order.department,
        "department_name": names.get(order.department, order.department),
        "role": order.role,
        "role_label": ROLE_LABELS.get(order.role, order.role),
        "assignee": (
            {"id": order.assignee, "name": _staff_name(roster, order.assignee)}
            if order.assignee
            else None
        ),
        "status": order.status,
        "status_label": ORDER_STATUS_LABELS.get(order.status, order.status),
        "attempt": order.attempt,
        "reasons": list(order.reasons),
        "return_reason": order.return_reason,
        "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
    }


def work_orders_view(
    ticket: Ticket, *, roster: Roster, catalogue: Catalogue | None = None
) -> dict[str, Any]:
    """Return the ticket's work orders and hop count for the JSON API."""
    lead = active_lead(ticket)
    return {
        "number": ticket.number,
        "hops": hop_count(ticket),
        "lead_order": lead.id if lead is not None else None,
        "orders": [
            order_as_dict(o, roster=roster, catalogue=catalogue) for o in ticket.work_orders
        ],
    }
