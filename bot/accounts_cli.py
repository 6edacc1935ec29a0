"""`python -m bot accounts …`: create, list and disable console accounts."""
from __future__ import annotations

import argparse
import getpass
import json
import sys

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.accounts import AccountError, create_account
from bot.app import App, build_app
from bot.db import session_scope
from bot.models import ROLES, Account, WebSession

DEMO_PASSWORD = "linli-demo-2026"
DEMO_AGENTS = (("agent1", "王小梅"), ("agent2", "陈志远"))


def register(commands: argparse._SubParsersAction) -> None:
    accounts = commands.add_parser("accounts", help="console accounts: add, list, disable")
    verbs = accounts.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="add an account (the password is asked for)")
    add.add_argument("--username", required=True)
    add.add_argument("--name", required=True, help="display name, e.g. 王小梅")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--department", help="for staff and supervisors, a catalogue department")
    add.add_argument("--staff-id", help="for staff: the roster id, e.g. wy02")
    add.add_argument("--phone", help="for agents: where hotline calls are put through")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    verbs.add_parser("list", help="list accounts")
    disable = verbs.add_parser("disable", help="disable an account and end its sessions")
    disable.add_argument("--username", required=True)
    accounts.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    app = build_app()
    try:
        with session_scope(app.sessions) as session:
            if args.verb == "add":
                password = (sys.stdin.readline().rstrip("\n") if args.password_stdin
                            else getpass.getpass("password: "))
                departments = {d.id for d in app.catalogue.departments}
                if args.department and args.department not in departments:
                    raise AccountError(f"unknown department {args.department!r}")
                account = create_account(
                    session, username=args.username, password=password, role=args.role,
                    display_name=args.name, department=args.department,
                    staff_id=args.staff_id, phone=args.phone, now=app.clock())
                session.flush()
                print(json.dumps({"id": account.id, "username": account.username,
                                  "role": account.role}, ensure_ascii=False))
            elif args.verb == "list":
                for account in session.execute(select(Account).order_by(Account.id)).scalars():
                    print(json.dumps({"username": account.username, "name": account.display_name,
                                      "role": account.role, "department": account.department,
                                      "active": account.active}, ensure_ascii=False))
            else:
                account = session.execute(select(Account).where(
                    Account.username == args.username)).scalar_one_or_none()
                if account is None:
                    raise AccountError(f"no account {args.username!r}")
                account.active = False
                session.query(WebSession).filter(WebSession.account_id == account.id).delete()
                print(f"disabled {account.username}")
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def seed_demo_accounts(session: Session, *, app: App) -> list[str]:
    """Demo logins for the console, one per role, plus every roster member as staff."""
    if session.execute(select(Account.id).limit(1)).first() is not None:
        return []
    now = app.clock()
    made = []
    for username, name in DEMO_AGENTS:
        create_account(session, username=username, password=DEMO_PASSWORD, role="agent",
                       display_name=name, phone="13900000000", now=now)
        made.append(username)
    create_account(session, username="admin", password=DEMO_PASSWORD, role="admin",
                   display_name="系统管理员", now=now)
    made.append("admin")
    for member in app.roster.staff:
        role = "supervisor" if member.role in ("head", "director") else "staff"
        create_account(session, username=member.id, password=DEMO_PASSWORD, role=role,
                       display_name=member.name, department=member.department,
                       staff_id=member.id, phone=member.phone, now=now)
        made.append(member.id)
    return made
