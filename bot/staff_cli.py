"""`python -m bot staff ...`: accept, return, note and resolve work orders; list open ones.

Every command prints one JSON object on stdout. A refused action (not your order, taken
already, unknown reason, ...) prints its message on stderr and exits with status 2, and
changes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from bot.app import App
from bot.db import session_scope
from bot.dispatch import order_as_dict
from bot.staff import (
    StaffActionError,
    accept_order,
    add_progress,
    list_orders,
    resolve_order,
    return_order,
)
from bot.tickets import STATUS_LABELS, TicketError
from routing.returns import RETURN_REASONS
from routing.roster import Roster

EXIT_REFUSED = 2


def register(subparsers: Any) -> None:
    """Add the `staff` command and its sub-commands to the CLI's subparsers."""
    staff = subparsers.add_parser("staff", help="act on work orders as a staff member")
    actions = staff.add_subparsers(dest="staff_command", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument("--order", type=int, required=True, help="work order id")
        parser.add_argument("--staff", required=True, help="your staff id in data/roster.yml")
        return parser

    action("accept", "accept (签收) an open order of your department")
    returning = action("return", "return (退单) an order that is not yours to handle")
    returning.add_argument(
        "--reason", help="one of: " + ", ".join(f"{k} {v}" for k, v in RETURN_REASONS.items())
    )
    returning.add_argument("--text", help="a note for the dispatcher")
    note = action("note", "add a progress note to an order you accepted")
    note.add_argument("--text", required=True, help="what was done")
    resolve = action("resolve", "resolve (办结) an order you accepted")
    resolve.add_argument("--text", help="how it was resolved")

    orders = actions.add_parser("orders", help="list open orders of a department or a person")
    who = orders.add_mutually_exclusive_group(required=True)
    who.add_argument("--department", help="department id, e.g. property")
    who.add_argument("--staff", help="staff id: their orders plus their department's queue")
    staff.set_defaults(func=run)


def _summary(order: Any, roster: Roster, app: App) -> dict[str, Any]:
    ticket = order.ticket
    return {
        "order": order_as_dict(order, roster=roster, catalogue=app.catalogue),
        "ticket": {
            "number": ticket.number,
            "status": ticket.status,
            "status_label": STATUS_LABELS[ticket.status],
            "lead_department": ticket.lead_department,
        },
    }


def execute(args: argparse.Namespace, *, app: App, roster: Roster | None = None) -> dict[str, Any]:
    """Run one staff sub-command in its own transaction and return its JSON result."""
    roster = roster or app.roster
    now = app.clock()
    command = args.staff_command
    with session_scope(app.sessions) as session:
        if command == "orders":
            found = list_orders(session, roster=roster, department=args.department,
                                staff_id=args.staff)
            return {"orders": [order_as_dict(o, roster=roster, catalogue=app.catalogue)
                               for o in found]}
        if command == "accept":
            order = accept_order(session, order_id=args.order, staff_id=args.staff,
                                 roster=roster, now=now, catalogue=app.catalogue)
            return _summary(order, roster, app)
        if command == "note":
            order = add_progress(session, order_id=args.order, staff_id=args.staff,
                                 text=args.text, roster=roster, now=now,
                                 catalogue=app.catalogue)
            return _summary(order, roster, app)
        if command == "resolve":
            order = resolve_order(session, order_id=args.order, staff_id=args.staff,
                                  note=args.text, roster=roster, now=now,
                                  catalogue=app.catalogue)
            return _summary(order, roster, app)
        if command == "return":
            outcome = return_order(session, order_id=args.order, staff_id=args.staff,
                                   reason=args.reason, note=args.text, roster=roster,
                                   catalogue=app.catalogue, now=now)
            result = _summary(outcome.returned, roster, app)
            result["new_order"] = (
                order_as_dict(outcome.new_order, roster=roster, catalogue=app.catalogue)
                if outcome.new_order is not None
                else None
            )
            result["arbitration"] = outcome.arbitration
            result["reasons"] = list(outcome.reasons)
            return result
    raise ValueError(f"unknown staff command {command!r}")


def run(
    args: argparse.Namespace,
    *,
    app: App | None = None,
    roster: Roster | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the parsed `staff` command, print JSON, and return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    if app is None:
        from bot.app import shared_app

        app = shared_app()
    try:
        result = execute(args, app=app, roster=roster)
    except (StaffActionError, TicketError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_REFUSED
    print(json.dumps(result, ensure_ascii=False, indent=2), file=out)
    return 0
