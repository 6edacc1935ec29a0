"""Dispatch and staff actions on real databases: work orders, returns, hops, races, the CLI.

Runs on SQLite (file) and PostgreSQL through tests/conftest.py. The accept race commits
for real on its own ticket day and deletes what it wrote.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.app import App
from bot.community import load_community
from bot.db import make_session_factory, session_scope
from bot.dispatch import (
    DispatchError,
    cancel_open_orders,
    dispatch_ticket,
    hop_count,
    load_learned_routes,
    order_load,
    work_orders_view,
)
from bot.models import Ticket, TicketEvent, WorkOrder
from bot.settings import Settings
from bot.staff import (
    EmptyNote,
    MissingReturnReason,
    NotYourOrder,
    OrderAlreadyTaken,
    OrderClosed,
    OrderStateError,
    UnknownReturnReason,
    UnknownStaffMember,
    accept_order,
    add_progress,
    list_orders,
    resolve_order,
    return_order,
)
from bot.staff_cli import register
from bot.tickets import cancel_ticket, create_ticket, transition
from routing.catalogue import Catalogue
from routing.roster import Roster
from tests.cleanup import purge_day

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai: day shifts on
NIGHT = datetime(2026, 11, 29, 19, 0, tzinfo=UTC)  # Monday 03:00 in Shanghai: offices closed


def _ticket(
    session: Session, catalogue: Catalogue, category: str, *, now: datetime = NOW,
    building: str = "5",
) -> Ticket:
    return create_ticket(
        session, now=now, catalogue=catalogue, category=category, description="测试工单",
        channel="web", building=building, unit="1", room="101",
    )


def _dispatched(
    session: Session, catalogue: Catalogue, roster: Roster, category: str, *,
    now: datetime = NOW, **extra: Any,
) -> Ticket:
    ticket = _ticket(session, catalogue, category, now=now)
    dispatch_ticket(session, ticket=ticket, catalogue=catalogue, roster=roster, now=now, **extra)
    return ticket


def _lead(ticket: Ticket) -> WorkOrder:
    return next(o for o in reversed(ticket.work_orders) if o.role == "lead")


def _snapshot(session: Session, ticket: Ticket) -> tuple[Any, ...]:
    """Read the ticket and its orders back from the database, after flushing everything."""
    session.flush()
    session.expire_all()
    stored = session.execute(select(Ticket).where(Ticket.id == ticket.id)).scalar_one()
    orders = session.execute(
        select(WorkOrder.id, WorkOrder.status, WorkOrder.assignee, WorkOrder.return_reason)
        .where(WorkOrder.ticket_id == ticket.id)
        .order_by(WorkOrder.id)
    ).all()
    events = session.execute(
        select(TicketEvent.kind).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id)
    ).scalars().all()
    return stored.status, stored.lead_department, [tuple(o) for o in orders], list(events)


def _kinds(ticket: Ticket) -> list[str]:
    return [e.kind for e in ticket.events]


# --- dispatch ------------------------------------------------------------------------------


def test_dispatch_writes_lead_assist_and_verify_orders_at_once(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _ticket(db_session, catalogue, "parking")
    plan = dispatch_ticket(
        db_session, ticket=ticket, catalogue=catalogue, roster=roster, now=NOW,
        ranking=(("parking", 0.8), ("fire_hazard", 0.1)),
    )
    state = _snapshot(db_session, ticket)
    orders = db_session.execute(
        select(WorkOrder).where(WorkOrder.ticket_id == ticket.id).order_by(WorkOrder.id)
    ).scalars().all()
    assert [(o.department, o.role) for o in orders] == [
        ("property", "lead"), ("police", "assist"), ("grid", "verify"),
    ]
    assert [(a.department, a.role) for a in plan.orders] == [(o.department, o.role) for o in orders]
    assert {o.status for o in orders} == {"open"} and {o.attempt for o in orders} == {1}
    assert all(o.reasons for o in orders)
    # Building 5 is in grid 2: the verification goes to one of its workers on shift.
    assert orders[2].assignee in {"wg21", "wg22"}
    assert all(o.assignee in {s.id for s in roster.members(o.department)} for o in orders)
    assert state[0] == "dispatched"
    assert state[3] == ["created", "dispatched", "status_changed"]
    dispatched = next(e for e in ticket.events if e.kind == "dispatched")
    assert dispatched.data["attempt"] == 1
    assert [o["order"] for o in dispatched.data["orders"]] == [o.id for o in orders]
    assert dispatched.data["grid"] == "grid2"
    assert dispatched.data["ranking"] == [["parking", 0.8], ["fire_hazard", 0.1]]
    assert dispatched.data["reasons"] == list(orders[0].reasons)
    assert hop_count(ticket) == 1


def test_dispatching_twice_is_refused_and_changes_nothing(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "water_leak")
    before = _snapshot(db_session, ticket)
    with pytest.raises(DispatchError, match="only new or reopened"):
        dispatch_ticket(db_session, ticket=ticket, catalogue=catalogue, roster=roster, now=NOW)
    assert _snapshot(db_session, ticket) == before


def test_a_reopened_ticket_is_dispatched_again_in_a_new_round(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "water_leak")
    lead = _lead(ticket)
    accept_order(db_session, order_id=lead.id, staff_id=lead.assignee, roster=roster, now=NOW)
    resolve_order(db_session, order_id=lead.id, staff_id=lead.assignee, note=None,
                  roster=roster, now=NOW)
    transition(db_session, ticket=ticket, to="reopened", actor="agent:li", now=NOW)
    dispatch_ticket(db_session, ticket=ticket, catalogue=catalogue, roster=roster, now=NOW)
    again = _lead(ticket)
    assert again.id != lead.id and (again.attempt, again.status) == (2, "open")
    assert ticket.status == "dispatched" and _kinds(ticket).count("dispatched") == 2
    assert hop_count(ticket) == 1  # a new round, not a re-route


def test_load_counts_open_orders_of_live_tickets_only(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    open_before, total_before = order_load(db_session)
    first = _dispatched(db_session, catalogue, roster, "water_leak")
    second = _dispatched(db_session, catalogue, roster, "water_leak")
    worker = _lead(first).assignee
    assert worker is not None and _lead(second).assignee == worker  # the only plumber on shift
    open_load, total = order_load(db_session)
    assert open_load[worker] == open_before.get(worker, 0) + 2
    cancel_ticket(db_session, ticket=second, actor="agent:li", now=NOW)
    cancelled = cancel_open_orders(db_session, ticket=second, actor="agent:li", now=NOW)
    assert [o.status for o in cancelled] == ["cancelled"]
    open_load, total_after = order_load(db_session)
    assert open_load[worker] == open_before.get(worker, 0) + 1
    assert total_after[worker] == total_before.get(worker, 0) + 2  # fairness remembers both


def test_nobody_on_shift_sends_orders_to_the_department_queue(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "elderly_care", now=NIGHT)
    lead = _lead(ticket)
    assert lead.department == "civil_affairs" and lead.assignee is None
    assert "无人在岗，进入部门队列" in lead.reasons
    queue = list_orders(db_session, roster=roster, staff_id="mz02")
    assert lead.id in [o.id for o in queue]
    accept_order(db_session, order_id=lead.id, staff_id="mz02", roster=roster, now=NIGHT)
    assert (lead.status, lead.assignee, ticket.status) == ("accepted", "mz02", "accepted")


def test_work_orders_view_names_departments_and_people(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "parking")
    view = work_orders_view(ticket, roster=roster, catalogue=catalogue)
    json.dumps(view, ensure_ascii=False)  # JSON-ready
    assert view["number"] == ticket.number and view["hops"] == 1
    lead = view["orders"][0]
    assert lead["id"] == view["lead_order"]
    assert (lead["department"], lead["department_name"], lead["role"]) == (
        "property", "物业服务中心", "lead",
    )
    assert lead["assignee"]["name"] == roster.member(lead["assignee"]["id"]).name
    assert lead["status"] == "open" and lead["attempt"] == 1 and lead["reasons"]
    assert [o["role"] for o in view["orders"]] == ["lead", "assist", "verify"]


def test_learned_routes_come_from_finished_tickets_and_steer_dispatch(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    for _ in range(3):
        ticket = _dispatched(db_session, catalogue, roster, "water_leak")
        outcome = return_order(
            db_session, order_id=_lead(ticket).id, staff_id=_lead(ticket).assignee,
            reason="not_our_function", note=None, roster=roster, catalogue=catalogue, now=NOW,
        )
        assert outcome.new_order is not None and outcome.new_order.department == "utilities_water"
        order = outcome.new_order
        accept_order(db_session, order_id=order.id, staff_id="gs01", roster=roster, now=NOW)
        resolve_order(db_session, order_id=order.id, staff_id="gs01", note="阀门已换",
                      roster=roster, now=NOW)
        assert ticket.status == "resolved"
    learned = load_learned_routes(db_session, roster=roster)
    department, support, share = learned.suggest("water_leak", "grid2")
    assert department == "utilities_water" and support >= 3 and share >= 0.6

    ticket = _dispatched(db_session, catalogue, roster, "water_leak", learned=learned)
    assert _lead(ticket).department == "utilities_water"
    assert ticket.lead_department == "utilities_water"
    dispatched = next(e for e in ticket.events if e.kind == "dispatched")
    assert dispatched.data["lead_department"] == {"old": "property", "new": "utilities_water"}


# --- accept ---------------------------------------------------------------------------------


def test_accepting_the_lead_accepts_the_ticket(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "parking")
    lead = _lead(ticket)
    assist = next(o for o in ticket.work_orders if o.role == "assist")
    accept_order(db_session, order_id=assist.id, staff_id=assist.assignee, roster=roster, now=NOW)
    assert ticket.status == "dispatched"  # an assisting order does not move the ticket
    accept_order(db_session, order_id=lead.id, staff_id=lead.assignee, roster=roster, now=NOW)
    assert (lead.status, ticket.status) == ("accepted", "accepted")
    assert _kinds(ticket)[-3:] == ["order_accepted", "order_accepted", "status_changed"]


@pytest.mark.parametrize(
    ("staff", "error"),
    [("jc02", NotYourOrder), ("wy08", NotYourOrder), ("nobody", UnknownStaffMember)],
)
def test_refused_accepts_change_nothing(
    db_session: Session, catalogue: Catalogue, roster: Roster, staff: str, error: type
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "water_leak")
    lead = _lead(ticket)
    assert lead.assignee not in (staff, None)  # wy08 is property too, but not the assignee
    before = _snapshot(db_session, ticket)
    with pytest.raises(error):
        accept_order(db_session, order_id=lead.id, staff_id=staff, roster=roster, now=NOW)
    assert _snapshot(db_session, ticket) == before


def test_second_accept_is_told_the_order_is_taken(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "elderly_care", now=NIGHT)
    lead = _lead(ticket)
    accept_order(db_session, order_id=lead.id, staff_id="mz01", roster=roster, now=NIGHT)
    before = _snapshot(db_session, ticket)
    with pytest.raises(OrderAlreadyTaken, match="mz01"):
        accept_order(db_session, order_id=lead.id, staff_id="mz02", roster=roster, now=NIGHT)
    assert _snapshot(db_session, ticket) == before


def test_concurrent_accepts_exactly_one_wins(
    db_engine: Engine, catalogue: Catalogue, roster: Roster
) -> None:
    night = datetime(2031, 2, 2, 19, 0, tzinfo=UTC)  # Monday 03:00 in Shanghai, a day of its own
    day = "20310203"
    factory = make_session_factory(db_engine)
    in_transaction = db_engine.dialect.name == "postgresql"
    try:
        with session_scope(factory) as session:
            ticket = _dispatched(session, catalogue, roster, "elderly_care", now=night)
            order_id, number = _lead(ticket).id, ticket.number
        ready = threading.Barrier(2)
        won: list[str] = []
        lost: list[BaseException] = []

        def worker(staff_id: str) -> None:
            try:
                if not in_transaction:
                    ready.wait(timeout=10)
                with session_scope(factory) as session:
                    if in_transaction:
                        # Both have read the order as open before either writes: only the
                        # conditional UPDATE can tell them apart.
                        assert session.get(WorkOrder, order_id).status == "open"
                        ready.wait(timeout=10)
                    accept_order(session, order_id=order_id, staff_id=staff_id, roster=roster,
                                 now=night)
                    won.append(staff_id)
                    time.sleep(0.3)  # hold the row so the other UPDATE has to wait for us
            except BaseException as exc:  # reported by the main thread
                lost.append(exc)

        threads = [threading.Thread(target=worker, args=(s,)) for s in ("mz01", "mz02")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(won) == 1 and len(lost) == 1, (won, lost)
        assert isinstance(lost[0], OrderAlreadyTaken), lost
        with session_scope(factory) as session:
            order = session.get(WorkOrder, order_id)
            stored = session.execute(select(Ticket).where(Ticket.number == number)).scalar_one()
            assert (order.status, order.assignee) == ("accepted", won[0])
            assert stored.status == "accepted"
            assert _kinds(stored).count("order_accepted") == 1
    finally:
        purge_day(db_engine, day)


# --- returns and hops ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "reason", "error"),
    [
        ("jc02", "not_our_function", NotYourOrder),  # another department
        ("wy08", "not_our_function", NotYourOrder),  # same department, not the assignee
        ("holder", None, MissingReturnReason),
        ("holder", "  ", MissingReturnReason),
        ("holder", "too_busy", UnknownReturnReason),
    ],
)
def test_refused_returns_change_nothing(
    db_session: Session, catalogue: Catalogue, roster: Roster, who: str, reason: str | None,
    error: type,
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "water_leak")
    lead = _lead(ticket)
    staff = lead.assignee if who == "holder" else who
    before = _snapshot(db_session, ticket)
    with pytest.raises(error) as raised:
        return_order(db_session, order_id=lead.id, staff_id=staff, reason=reason, note="不归我们",
                     roster=roster, catalogue=catalogue, now=NOW)
    if error is not NotYourOrder:
        assert "not_our_function" in str(raised.value)  # the message lists the valid codes
    assert _snapshot(db_session, ticket) == before


def test_two_returns_go_to_arbitration_and_count_hops(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "water_leak")
    first = _lead(ticket)
    assert first.department == "property"

    one = return_order(db_session, order_id=first.id, staff_id=first.assignee,
                       reason="not_our_function", note="是市政管网", roster=roster,
                       catalogue=catalogue, now=NOW)
    assert (first.status, first.return_reason) == ("returned", "not_our_function")
    second = one.new_order
    assert second is not None and not one.arbitration
    assert (second.department, second.role, second.attempt) == ("utilities_water", "lead", 2)
    assert ticket.lead_department == "utilities_water" and ticket.status == "dispatched"
    assert hop_count(ticket) == 2

    two = return_order(db_session, order_id=second.id, staff_id=second.assignee,
                       reason="not_our_area", note=None, roster=roster, catalogue=catalogue,
                       now=NOW)
    third = two.new_order
    assert two.arbitration and third is not None
    assert (third.department, third.attempt) == ("residents_committee", 3)
    assert any("兜底" in r for r in third.reasons)
    assert hop_count(ticket) == 3
    assert [k for k in _kinds(ticket) if k in ("returned", "rerouted", "arbitration")] == [
        "returned", "rerouted", "returned", "arbitration",
    ]
    returned = [e for e in ticket.events if e.kind == "returned"]
    assert returned[0].data["note"] == "是市政管网" and returned[0].actor == f"staff:{first.assignee}"
    view = work_orders_view(ticket, roster=roster, catalogue=catalogue)
    assert view["hops"] == 3 and view["lead_order"] == third.id
    assert [o["status"] for o in view["orders"]] == ["returned", "returned", "open"]


def test_incomplete_return_keeps_the_order_for_an_agent(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "water_leak")
    lead = _lead(ticket)
    outcome = return_order(db_session, order_id=lead.id, staff_id=lead.assignee,
                           reason="incomplete", note="没有门牌号", roster=roster,
                           catalogue=catalogue, now=NOW)
    assert outcome.new_order is None and not outcome.arbitration
    assert _kinds(ticket)[-2:] == ["returned", "awaiting_agent"]
    assert hop_count(ticket) == 1 and ticket.lead_department == "property"


def test_returning_an_assisting_order_does_not_reroute_the_ticket(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "parking")
    assist = next(o for o in ticket.work_orders if o.role == "assist")
    outcome = return_order(db_session, order_id=assist.id, staff_id=assist.assignee,
                           reason="not_our_function", note=None, roster=roster,
                           catalogue=catalogue, now=NOW)
    assert outcome.new_order is None and assist.status == "returned"
    assert len(ticket.work_orders) == 3 and hop_count(ticket) == 1


def test_an_accepted_order_cannot_be_returned(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "water_leak")
    lead = _lead(ticket)
    accept_order(db_session, order_id=lead.id, staff_id=lead.assignee, roster=roster, now=NOW)
    before = _snapshot(db_session, ticket)
    with pytest.raises(OrderStateError, match="not yet accepted"):
        return_order(db_session, order_id=lead.id, staff_id=lead.assignee,
                     reason="not_our_function", note=None, roster=roster, catalogue=catalogue,
                     now=NOW)
    assert _snapshot(db_session, ticket) == before


# --- progress and resolution ----------------------------------------------------------------


def test_progress_then_resolve_moves_the_ticket_through_in_progress(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "parking")
    lead = _lead(ticket)
    staff = lead.assignee
    with pytest.raises(OrderStateError, match="accept"):
        add_progress(db_session, order_id=lead.id, staff_id=staff, text="到了", roster=roster,
                     now=NOW)
    accept_order(db_session, order_id=lead.id, staff_id=staff, roster=roster, now=NOW)
    with pytest.raises(EmptyNote):
        add_progress(db_session, order_id=lead.id, staff_id=staff, text=" ", roster=roster,
                     now=NOW)
    add_progress(db_session, order_id=lead.id, staff_id=staff, text="已到现场，联系车主挪车",
                 roster=roster, now=NOW)
    assert (lead.status, ticket.status) == ("in_progress", "in_progress")
    note = next(e for e in ticket.events if e.kind == "progress_note")
    assert note.data["text"] == "已到现场，联系车主挪车"
    resolve_order(db_session, order_id=lead.id, staff_id=staff, note="车已挪走",
                  roster=roster, now=NOW)
    assert (lead.status, ticket.status) == ("resolved", "resolved")


def test_resolving_the_accepted_lead_goes_via_in_progress(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "water_leak")
    lead = _lead(ticket)
    accept_order(db_session, order_id=lead.id, staff_id=lead.assignee, roster=roster, now=NOW)
    resolve_order(db_session, order_id=lead.id, staff_id=lead.assignee, note=None,
                  roster=roster, now=NOW)
    moves = [(e.data["from"], e.data["to"]) for e in ticket.events if e.kind == "status_changed"]
    assert moves[-2:] == [("accepted", "in_progress"), ("in_progress", "resolved")]


def test_actions_on_a_cancelled_ticket_are_refused_and_change_nothing(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "parking")
    lead = _lead(ticket)
    verify = next(o for o in ticket.work_orders if o.role == "verify")
    accept_order(db_session, order_id=lead.id, staff_id=lead.assignee, roster=roster, now=NOW)
    transition(db_session, ticket=ticket, to="cancelled", actor="agent:li", now=NOW)
    before = _snapshot(db_session, ticket)
    with pytest.raises(OrderClosed, match="已取消"):
        resolve_order(db_session, order_id=lead.id, staff_id=lead.assignee, note=None,
                      roster=roster, now=NOW)
    with pytest.raises(OrderClosed):
        accept_order(db_session, order_id=verify.id, staff_id=verify.assignee, roster=roster,
                     now=NOW)
    with pytest.raises(OrderClosed):
        return_order(db_session, order_id=verify.id, staff_id=verify.assignee,
                     reason="duplicate", note=None, roster=roster, catalogue=catalogue, now=NOW)
    assert _snapshot(db_session, ticket) == before


def test_a_cancelled_order_takes_no_actions(
    db_session: Session, catalogue: Catalogue, roster: Roster
) -> None:
    ticket = _dispatched(db_session, catalogue, roster, "water_leak")
    lead = _lead(ticket)
    db_session.execute(update(WorkOrder).where(WorkOrder.id == lead.id).values(status="cancelled"))
    db_session.refresh(lead)
    before = _snapshot(db_session, ticket)
    with pytest.raises(OrderClosed, match="已取消"):
        accept_order(db_session, order_id=lead.id, staff_id=lead.assignee, roster=roster, now=NOW)
    assert _snapshot(db_session, ticket) == before


# --- the staff CLI --------------------------------------------------------------------------


def _cli(app: App, roster: Roster, *argv: str) -> tuple[int, Any, str]:
    parser = argparse.ArgumentParser(prog="bot")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, app=app, roster=roster, out=out, err=err)
    return code, json.loads(out.getvalue()) if out.getvalue() else None, err.getvalue()


def test_staff_cli_accepts_lists_and_refuses(
    db_engine: Engine, db_session_factory: sessionmaker, catalogue: Catalogue, roster: Roster
) -> None:
    app = App(settings=Settings(), engine=db_engine, sessions=db_session_factory,
              catalogue=catalogue, community=load_community(), roster=roster,
              clock=lambda: NOW)
    with session_scope(db_session_factory) as session:
        ticket = _dispatched(session, catalogue, roster, "water_leak")
        order_id, worker, number = _lead(ticket).id, _lead(ticket).assignee, ticket.number

    code, listed, _ = _cli(app, roster, "staff", "orders", "--staff", worker)
    assert code == 0 and order_id in [o["id"] for o in listed["orders"]]

    code, result, _ = _cli(app, roster, "staff", "return", "--order", str(order_id),
                           "--staff", worker)
    assert (code, result) == (2, None)
    code, _, message = _cli(app, roster, "staff", "return", "--order", str(order_id),
                            "--staff", worker, "--reason", "busy")
    assert code == 2 and "not_our_function" in message

    code, result, _ = _cli(app, roster, "staff", "accept", "--order", str(order_id),
                           "--staff", worker)
    assert code == 0
    assert result["order"]["status"] == "accepted" and result["ticket"]["number"] == number
    assert result["ticket"]["status"] == "accepted"
    code, _, message = _cli(app, roster, "staff", "accept", "--order", str(order_id),
                            "--staff", "wy08")
    assert code == 2 and "already accepted" in message

    code, result, _ = _cli(app, roster, "staff", "note", "--order", str(order_id),
                           "--staff", worker, "--text", "已关阀")
    assert code == 0 and result["ticket"]["status"] == "in_progress"
    code, result, _ = _cli(app, roster, "staff", "resolve", "--order", str(order_id),
                           "--staff", worker, "--text", "已修好")
    assert code == 0 and result["ticket"]["status"] == "resolved"
    code, listed, _ = _cli(app, roster, "staff", "orders", "--department", "property")
    assert order_id not in [o["id"] for o in listed["orders"]]
