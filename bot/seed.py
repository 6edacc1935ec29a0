"""Seed the demo community: a few residents and orders to look at (idempotent)."""
from __future__ import annotations

from sqlalchemy import func, select

from bot.accounts_cli import DEMO_PASSWORD, seed_demo_accounts
from bot.app import build_app
from bot.conversations import find_or_create_resident
from bot.db import session_scope
from bot.dispatch import active_lead, dispatch_ticket
from bot.models import Ticket
from bot.staff import accept_order, add_progress, resolve_order
from bot.tickets import create_ticket

DEMO_RESIDENTS = (
    ("13800000001", "王阿姨", ("5", "2", "501")),
    ("13800000002", "李大爷", ("3", "1", "302")),
    ("13800000003", "张女士", ("12", "3", "1802")),
)


def seed_demo() -> str:
    """Create the demo residents and two example orders unless the database has orders."""
    app = build_app()
    now = app.clock()
    with session_scope(app.sessions) as session:
        accounts = seed_demo_accounts(session, app=app)
        logins = (f"; console logins {', '.join(accounts[:3])}, staff by roster id (wy02 …), "
                  f"password {DEMO_PASSWORD}" if accounts else "")
        existing = session.execute(select(func.count()).select_from(Ticket)).scalar_one()
        residents = [
            find_or_create_resident(session, now=now, phone=phone, display_name=name)
            for phone, name, _ in DEMO_RESIDENTS
        ]
        if existing:
            return (f"demo community {app.community.name}: {existing} orders already present"
                    + logins)
        building, unit, room = DEMO_RESIDENTS[0][2]
        open_order = create_ticket(
            session, now=now, category="water_leak", description="卫生间天花板往下滴水",
            channel="sms", resident=residents[0], building=building, unit=unit, room=room,
            contact_phone=residents[0].phone, time_window="明天上午", catalogue=app.catalogue,
        )
        dispatch_ticket(session, ticket=open_order, catalogue=app.catalogue, roster=app.roster,
                        now=now)
        building, unit, _ = DEMO_RESIDENTS[1][2]
        done = create_ticket(
            session, now=now, category="public_facility", description="楼道灯不亮",
            channel="voice", resident=residents[1], building=building, unit=unit,
            contact_phone=residents[1].phone, catalogue=app.catalogue,
        )
        plan = dispatch_ticket(session, ticket=done, catalogue=app.catalogue,
                               roster=app.roster, now=now)
        lead = active_lead(done)
        worker = plan.lead.assignee or app.roster.members(plan.lead.department)[0].id
        accept_order(session, order_id=lead.id, staff_id=worker, roster=app.roster, now=now)
        add_progress(session, order_id=lead.id, staff_id=worker, text="已到现场，更换灯泡",
                     roster=app.roster, now=now)
        resolve_order(session, order_id=lead.id, staff_id=worker, note="楼道灯已修好",
                      roster=app.roster, now=now)
        return (f"seeded demo community {app.community.name}: {len(residents)} residents, "
                f"orders {open_order.number} and {done.number}" + logins)
