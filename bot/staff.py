"""What staff do with a work order: accept (签收), return (退单), note progress, resolve (办结).

Each service checks everything before it writes, so an error leaves the database as it
was. Accepting and returning race safely: the status change is a conditional UPDATE
(only an order still open, and not held by someone else, changes) and its row count
decides who won. Services never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from bot.dispatch import (
    FINISHED_TICKET_STATUSES,
    ORDER_STATUS_LABELS,
    order_load,
    stored_ranking,
    ticket_facts,
)
from bot.models import ACTIVE_ORDER_STATUSES, Ticket, WorkOrder
from bot.notify import notify_ticket
from bot.tickets import STATUS_LABELS, TRANSITIONS, record_event, transition
from routing.catalogue import Catalogue, default_catalogue
from routing.dispatch import choose_assignee
from routing.learning import LearnedRoutes
from routing.returns import RETURN_REASONS, reroute
from routing.roster import Roster, Staff, UnknownStaff

_CLOSED_ORDER_STATUSES = ("returned", "resolved", "cancelled")


class StaffActionError(Exception):
    """Base of staff action errors; nothing was changed and the message says what to do."""


class OrderNotFound(StaffActionError, LookupError):
    """No work order has this id."""


class UnknownStaffMember(StaffActionError, LookupError):
    """The staff id is not in the roster."""


class NotYourOrder(StaffActionError):
    """The order belongs to another department or person."""


class OrderAlreadyTaken(StaffActionError):
    """Someone accepted the order first (or it is no longer open)."""


class OrderClosed(StaffActionError):
    """The order or its ticket is finished or cancelled."""


class OrderStateError(StaffActionError):
    """The order is not in a state that allows this action (e.g. note before accepting)."""


class MissingReturnReason(StaffActionError, ValueError):
    """A return without a reason code."""


class UnknownReturnReason(StaffActionError, ValueError):
    """A return reason code that routing.returns.RETURN_REASONS does not know."""


class EmptyNote(StaffActionError, ValueError):
    """A progress note without text."""


@dataclass(frozen=True)
class ReturnOutcome:
    returned: WorkOrder
    new_order: WorkOrder | None  # the next lead order, None if the order did not move
    arbitration: bool
    reasons: tuple[str, ...]


def _reason_codes() -> str:
    return ", ".join(f"{code}（{label}）" for code, label in RETURN_REASONS.items())


def _actor(staff: Staff) -> str:
    return f"staff:{staff.id}"


def _load(
    session: Session, order_id: int, staff_id: str, roster: Roster
) -> tuple[WorkOrder, Ticket, Staff]:
    try:
        staff = roster.member(staff_id)
    except UnknownStaff as exc:
        raise UnknownStaffMember(str(exc)) from exc
    order = session.get(WorkOrder, order_id)
    if order is None:
        raise OrderNotFound(f"no work order {order_id}; list yours with `staff orders --staff`")
    return order, order.ticket, staff


def _require_live(order: WorkOrder, ticket: Ticket) -> None:
    if ticket.status in FINISHED_TICKET_STATUSES:
        raise OrderClosed(
            f"ticket {ticket.number} is {STATUS_LABELS[ticket.status]}; its orders take no "
            f"more actions (reopen the ticket first if work must continue)"
        )
    if order.status in _CLOSED_ORDER_STATUSES:
        raise OrderClosed(
            f"work order {order.id} is {ORDER_STATUS_LABELS[order.status]}; nothing to do on it"
        )


def _require_department(order: WorkOrder, staff: Staff) -> None:
    if staff.department != order.department:
        raise NotYourOrder(
            f"work order {order.id} belongs to {order.department}, and {staff.id} works for "
            f"{staff.department}; only its department can act on it"
        )


def _require_holder(order: WorkOrder, staff: Staff) -> None:
    _require_department(order, staff)
    if order.assignee is not None and order.assignee != staff.id:
        raise NotYourOrder(
            f"work order {order.id} is assigned to {order.assignee}, not {staff.id}; "
            f"ask them or the department head to hand it over"
        )


def _require_accepted(order: WorkOrder, staff: Staff, what: str) -> None:
    _require_holder(order, staff)
    if order.status == "open":
        raise OrderStateError(f"accept work order {order.id} before you {what}")


def _claim(
    session: Session, order: WorkOrder, staff: Staff, *, now: datetime, **values: Any
) -> bool:
    """Change an order still open and free (or held by staff); report whether this call won."""
    result = session.execute(
        update(WorkOrder)
        .where(
            WorkOrder.id == order.id,
            WorkOrder.status == "open",
            or_(WorkOrder.assignee.is_(None), WorkOrder.assignee == staff.id),
        )
        .values(updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(order)  # the loser sees the winner's committed row, not its stale copy
    return result.rowcount == 1


def _taken(order: WorkOrder, staff: Staff) -> StaffActionError:
    if order.status in _CLOSED_ORDER_STATUSES:
        return OrderClosed(
            f"work order {order.id} is {ORDER_STATUS_LABELS[order.status]}; nothing to do on it"
        )
    holder = "you" if order.assignee == staff.id else order.assignee or "someone"
    return OrderAlreadyTaken(
        f"work order {order.id} was already accepted by {holder}; refresh your order list"
    )


def accept_order(
    session: Session, *, order_id: int, staff_id: str, roster: Roster, now: datetime,
    catalogue: Catalogue | None = None,
) -> WorkOrder:
    """Accept an open order; of two concurrent accepts exactly one wins."""
    order, ticket, staff = _load(session, order_id, staff_id, roster)
    _require_live(order, ticket)
    _require_department(order, staff)
    if order.status != "open":
        raise _taken(order, staff)
    _require_holder(order, staff)
    if order.role == "lead" and "accepted" not in TRANSITIONS[ticket.status]:
        raise OrderStateError(
            f"ticket {ticket.number} is {STATUS_LABELS[ticket.status]} and cannot be accepted"
        )
    if not _claim(session, order, staff, now=now, status="accepted", assignee=staff.id):
        raise _taken(order, staff)
    event = record_event(
        session,
        ticket=ticket,
        kind="order_accepted",
        actor=_actor(staff),
        now=now,
        data={"order": order.id, "department": order.department, "role": order.role,
              "staff": staff.id},
    )
    if order.role == "lead":
        transition(session, ticket=ticket, to="accepted", actor=_actor(staff), now=now,
                   reason=f"{staff.name}签收")
        notify_ticket(session, ticket=ticket, update="accepted", event=event, now=now,
                      catalogue=catalogue or default_catalogue(), department=order.department)
    return order


def return_order(
    session: Session,
    *,
    order_id: int,
    staff_id: str,
    reason: str | None,
    note: str | None,
    roster: Roster,
    catalogue: Catalogue,
    now: datetime,
    learned: LearnedRoutes | None = None,
) -> ReturnOutcome:
    """Return an open order with a reason; a returned lead goes one hop on, or to arbitration."""
    reason = (reason or "").strip()
    if not reason:
        raise MissingReturnReason(f"say why you return the order: {_reason_codes()}")
    if reason not in RETURN_REASONS:
        raise UnknownReturnReason(f"unknown return reason {reason!r}; use one of {_reason_codes()}")
    order, ticket, staff = _load(session, order_id, staff_id, roster)
    _require_live(order, ticket)
    _require_holder(order, staff)
    if order.status != "open":
        raise OrderStateError(
            f"work order {order.id} is {ORDER_STATUS_LABELS[order.status]}; only an order not "
            f"yet accepted can be returned — ask the dispatcher to reassign it"
        )
    # Decide the next hop before writing anything, so a routing error changes nothing.
    decision = None
    assignee: str | None = None
    picked: tuple[str, ...] = ()
    if order.role == "lead":
        returned_by = [
            o.department for o in ticket.work_orders if o.role == "lead" and o.status == "returned"
        ] + [order.department]
        facts = ticket_facts(ticket, roster=roster, ranking=stored_ranking(ticket))
        decision = reroute(ticket=facts, returned_by=returned_by, reason=reason,
                           catalogue=catalogue, learned=learned)
        if decision.department is not None:
            open_load, assigned_total = order_load(session)
            assignee, picked = choose_assignee(
                department=decision.department, category=ticket.category,
                building=facts.building, roster=roster, open_load=open_load,
                assigned_total=assigned_total, now=now,
            )
    clean_note = note.strip() if note and note.strip() else None
    if not _claim(session, order, staff, now=now, status="returned", return_reason=reason):
        raise _taken(order, staff)
    actor = _actor(staff)
    record_event(
        session, ticket=ticket, kind="returned", actor=actor, now=now,
        data={"order": order.id, "department": order.department, "role": order.role,
              "reason": reason, "reason_label": RETURN_REASONS[reason], "note": clean_note,
              "staff": staff.id},
    )
    if decision is None:
        return ReturnOutcome(returned=order, new_order=None, arbitration=False, reasons=())
    if decision.department is None:
        record_event(
            session, ticket=ticket, kind="awaiting_agent", actor="bot", now=now,
            data={"order": order.id, "reason": reason, "arbitration": decision.arbitration,
                  "reasons": list(decision.reasons)},
        )
        return ReturnOutcome(order, None, decision.arbitration, decision.reasons)
    new_order = WorkOrder(
        department=decision.department, role="lead", assignee=assignee, status="open",
        attempt=order.attempt + 1, reasons=list(decision.reasons + picked),
        created_at=now, updated_at=now,
    )
    ticket.work_orders.append(new_order)
    session.add(new_order)
    session.flush()
    previous_lead = ticket.lead_department
    ticket.lead_department = decision.department
    rerouted = record_event(
        session, ticket=ticket, kind="arbitration" if decision.arbitration else "rerouted",
        actor="bot", now=now,
        data={"order": new_order.id, "from_order": order.id, "department": decision.department,
              "assignee": assignee, "attempt": new_order.attempt,
              "reasons": list(new_order.reasons),
              "lead_department": {"old": previous_lead, "new": decision.department}},
    )
    notify_ticket(session, ticket=ticket, update="dispatched", event=rerouted, now=now,
                  catalogue=catalogue, department=decision.department)
    return ReturnOutcome(order, new_order, decision.arbitration, tuple(new_order.reasons))


def add_progress(
    session: Session, *, order_id: int, staff_id: str, text: str, roster: Roster, now: datetime,
    catalogue: Catalogue | None = None,
) -> WorkOrder:
    """Record a progress note on an accepted order; the ticket is then in progress."""
    if not text or not text.strip():
        raise EmptyNote("the progress note is empty; say what was done, e.g. 已到现场查看")
    order, ticket, staff = _load(session, order_id, staff_id, roster)
    _require_live(order, ticket)
    _require_accepted(order, staff, "add progress notes")
    order.status = "in_progress"
    order.updated_at = now
    event = record_event(
        session, ticket=ticket, kind="progress_note", actor=_actor(staff), now=now,
        data={"order": order.id, "department": order.department, "text": text.strip(),
              "staff": staff.id},
    )
    notify_ticket(session, ticket=ticket, update="progress", event=event, now=now,
                  catalogue=catalogue or default_catalogue(), department=order.department,
                  note=text.strip())
    if ticket.status == "accepted":
        transition(session, ticket=ticket, to="in_progress", actor=_actor(staff), now=now,
                   reason="处理中")
    return order


def _resolution_path(ticket: Ticket) -> tuple[str, ...]:
    if ticket.status in ("accepted", "reopened"):
        return ("in_progress", "resolved")
    if ticket.status == "in_progress":
        return ("resolved",)
    raise OrderStateError(
        f"ticket {ticket.number} is {STATUS_LABELS[ticket.status]}; it cannot be resolved now"
    )


def resolve_order(
    session: Session,
    *,
    order_id: int,
    staff_id: str,
    note: str | None,
    roster: Roster,
    now: datetime,
    catalogue: Catalogue | None = None,
) -> WorkOrder:
    """Resolve an accepted order; resolving the lead order resolves the ticket."""
    order, ticket, staff = _load(session, order_id, staff_id, roster)
    _require_live(order, ticket)
    _require_accepted(order, staff, "resolve it")
    path = _resolution_path(ticket) if order.role == "lead" else ()
    order.status = "resolved"
    order.updated_at = now
    clean_note = note.strip() if note and note.strip() else None
    event = record_event(
        session, ticket=ticket, kind="order_resolved", actor=_actor(staff), now=now,
        data={"order": order.id, "department": order.department, "role": order.role,
              "note": clean_note, "staff": staff.id},
    )
    for status in path:
        transition(session, ticket=ticket, to=status, actor=_actor(staff), now=now,
                   reason=clean_note if status == "resolved" else "处理中")
    if path:
        notify_ticket(session, ticket=ticket, update="resolved", event=event, now=now,
                      catalogue=catalogue or default_catalogue(), department=order.department,
                      note=clean_note)
    return order


def list_orders(
    session: Session,
    *,
    roster: Roster,
    department: str | None = None,
    staff_id: str | None = None,
    statuses: Sequence[str] = ACTIVE_ORDER_STATUSES,
) -> list[WorkOrder]:
    """Return a department's orders, or a person's own plus their department's queue."""
    if (department is None) == (staff_id is None):
        raise StaffActionError("give exactly one of department or staff")
    query = (
        select(WorkOrder)
        .join(Ticket, Ticket.id == WorkOrder.ticket_id)
        .where(WorkOrder.status.in_(tuple(statuses)),
               Ticket.status.not_in(FINISHED_TICKET_STATUSES))
        .order_by(WorkOrder.created_at, WorkOrder.id)
    )
    if department is not None:
        query = query.where(WorkOrder.department == department)
    else:
        try:
            staff = roster.member(str(staff_id))
        except UnknownStaff as exc:
            raise UnknownStaffMember(str(exc)) from exc
        query = query.where(
            or_(
                WorkOrder.assignee == staff.id,
                (WorkOrder.assignee.is_(None)) & (WorkOrder.department == staff.department),
            )
        )
    return list(session.execute(query).scalars())
