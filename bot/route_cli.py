"""`python -m bot route`: ticket JSON lines in, the dispatch plan out, nothing written."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any, TextIO

from routing.catalogue import Catalogue
from routing.dispatch import TicketFacts, plan_dispatch
from routing.roster import Roster


class BadTicketLine(ValueError):
    """The line is not a ticket the engine can route; the message says what is missing."""


def facts_from(item: Any, catalogue: Catalogue) -> TicketFacts:
    """Read a ticket from a flat JSON object or from the ticket API's JSON."""
    if not isinstance(item, dict):
        raise BadTicketLine('each line must be a JSON object like {"category": "water_leak"}')
    category = item.get("category")
    if not isinstance(category, str) or not catalogue.has_category(category):
        raise BadTicketLine(f"unknown or missing category {category!r}; "
                            f"use one of {', '.join(catalogue.category_ids)}")
    location = item.get("location") if isinstance(item.get("location"), dict) else {}
    building = item.get("building", location.get("building"))
    urgency = item.get("urgency") or catalogue.category(category).urgency
    ranking = tuple((str(name), float(p)) for name, p in item.get("ranking") or ())
    return TicketFacts(number=str(item.get("number") or "-"), category=category,
                       urgency=str(urgency), building=str(building) if building else None,
                       ranking=ranking)


def route_lines(lines: TextIO, out: TextIO, *, catalogue: Catalogue, roster: Roster,
                open_load: dict[str, int], assigned_total: dict[str, int], now: datetime) -> int:
    """Print one plan (or one error) per input line; return how many lines failed."""
    failures = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            facts = facts_from(json.loads(line), catalogue)
            plan = plan_dispatch(ticket=facts, catalogue=catalogue, roster=roster,
                                 open_load=open_load, assigned_total=assigned_total, now=now)
            result: dict[str, Any] = {"ticket": plan.ticket,
                                      "orders": [asdict(order) for order in plan.orders]}
        except (ValueError, LookupError) as exc:
            failures += 1
            result = {"error": str(exc)}
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
        out.flush()
    return failures


def main() -> int:
    """Route stdin with the current catalogue, roster and staff load (read-only)."""
    from bot.app import build_app
    from bot.dispatch import order_load

    app = build_app()
    with app.sessions() as session:
        open_load, assigned_total = order_load(session)
    route_lines(sys.stdin, sys.stdout, catalogue=app.catalogue, roster=app.roster,
                open_load=open_load, assigned_total=assigned_total, now=app.clock())
    return 0
