"""The staff console's JSON API in-process, on SQLite and PostgreSQL.

A real create_web_app() (no scheduler, no outbox worker) on the test database; people sign
in through /console/api/login and act with their own cookie and CSRF token. Every check
reads the stored rows back: work orders, ticket events, outbox messages, audit entries,
attachments and the files on disk.
"""
from __future__ import annotations

import base64
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import DummyCookieJar, FormData
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from bot.accounts import create_account
from bot.app import App
from bot.community import load_community
from bot.conversations import find_or_create_resident, open_conversation
from bot.db import session_scope
from bot.dispatch import dispatch_ticket
from bot.models import Attachment, AuditEntry, OutboxMessage, Ticket, WorkOrder
from bot.scheduler import check_sla
from bot.settings import Settings
from bot.tickets import create_ticket
from bot.web import create_web_app

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai: day shifts on
PASSWORD = "staff-console-2026"
PHONE = "13900001111"


def tiny_png() -> bytes:
    """A valid 1x1 PNG, built by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    header = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    pixels = zlib.compress(b"\x00\x1f\x7a\x4d")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


GIF = base64.b64decode("R0lGODlhAQABAAAAACwAAAAAAQABAAACAkQBADs=")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Person:
    username: str
    token: str
    csrf: str
    staff_id: str | None


@dataclass(frozen=True)
class Stored:
    status: str
    assignee: str | None
    return_reason: str | None
    ticket_status: str


@dataclass
class Console:
    client: TestClient
    sessions: sessionmaker
    clock: Clock
    uploads: Path
    ticket_id: int
    order_id: int  # the lead order of a water leak, assigned to `assignee`
    queued_order_id: int  # a property order nobody holds yet
    people: dict[str, Person]

    def headers(self, who: str, *, csrf: bool = True) -> dict[str, str]:
        person = self.people[who]
        headers = {"Cookie": f"linli_session={person.token}"}
        if csrf:
            headers["X-CSRF-Token"] = person.csrf
        return headers

    async def get(self, who: str, path: str) -> tuple[int, Any]:
        response = await self.client.get(path, headers=self.headers(who))
        return response.status, await _body(response)

    async def post(self, who: str, path: str, body: Any = None, *, csrf: bool = True,
                   data: Any = None) -> tuple[int, Any]:
        response = await self.client.post(path, headers=self.headers(who, csrf=csrf),
                                          json=body if data is None else None, data=data)
        return response.status, await _body(response)

    def order(self, order_id: int | None = None) -> Stored:
        with self.sessions() as session:
            order = session.get(WorkOrder, order_id or self.order_id)
            return Stored(order.status, order.assignee, order.return_reason, order.ticket.status)

    def audits(self, action: str) -> list[AuditEntry]:
        with self.sessions() as session:
            return list(session.execute(select(AuditEntry).where(AuditEntry.action == action)
                                        .order_by(AuditEntry.id)).scalars())

    def outbox(self) -> list[OutboxMessage]:
        with self.sessions() as session:
            return list(session.execute(select(OutboxMessage).where(
                OutboxMessage.ticket_id == self.ticket_id).order_by(OutboxMessage.id)).scalars())


async def _body(response: Any) -> Any:
    if response.content_type == "application/json":
        return await response.json()
    return await response.read()


def _order_url(order_id: int, action: str = "") -> str:
    return f"/console/api/staff/orders/{order_id}" + (f"/{action}" if action else "")


@pytest.fixture
async def console(db_engine: Engine, db_session_factory: sessionmaker, catalogue: Any,
                  roster: Any, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Console]:
    uploads = tmp_path / "uploads"
    monkeypatch.setenv("LINLI_UPLOADS", str(uploads))
    clock = Clock(NOW)
    app = App(settings=Settings(), engine=db_engine, sessions=db_session_factory,
              catalogue=catalogue, community=load_community(), roster=roster, clock=clock)
    with session_scope(db_session_factory) as session:
        resident = find_or_create_resident(session, now=NOW, phone=PHONE)
        conversation = open_conversation(session, channel="sms", sender_key=PHONE, now=NOW,
                                         resident=resident)
        ticket = create_ticket(session, now=NOW, catalogue=catalogue, category="water_leak",
                               description=f"卫生间漏水，电话{PHONE}", channel="sms",
                               resident=resident, conversation=conversation, building="5",
                               unit="2", room="501", contact_phone=PHONE)
        dispatch_ticket(session, ticket=ticket, catalogue=catalogue, roster=roster, now=NOW)
        lead = next(o for o in ticket.work_orders if o.role == "lead")
        assert lead.department == "property" and lead.assignee is not None
        other = create_ticket(session, now=NOW - timedelta(minutes=5), catalogue=catalogue,
                              category="public_facility", description="楼道灯不亮",
                              channel="web", building="3", unit="1", urgency="P2")
        dispatch_ticket(session, ticket=other, catalogue=catalogue, roster=roster, now=NOW)
        queued = next(o for o in other.work_orders if o.role == "lead")
        assert queued.department == "property"
        queued.assignee = None  # nobody on shift could take it: the department's queue
        assignee = lead.assignee
        colleague = next(m.id for m in roster.members("property")
                         if m.id != assignee and m.role == "worker")
        accounts = {
            "assignee": ("staff", "property", assignee),
            "colleague": ("staff", "property", colleague),
            "elevator": ("staff", "elevator_maintenance", "dt02"),
            "head": ("supervisor", "property", "wy01"),
            "agent": ("agent", None, None),
            "admin": ("admin", None, None),
        }
        for name, (role, department, staff_id) in accounts.items():
            create_account(session, username=f"t-{name}", password=PASSWORD, role=role,
                           display_name=name, department=department, staff_id=staff_id, now=NOW)
        ids = (ticket.id, lead.id, queued.id)
    client = TestClient(TestServer(create_web_app(app, with_scheduler=False, with_outbox=False),
                                   host="127.0.0.1"), cookie_jar=DummyCookieJar())
    await client.start_server()
    people = {}
    for name, (_role, _dept, staff_id) in accounts.items():
        response = await client.post("/console/api/login",
                                     json={"username": f"t-{name}", "password": PASSWORD})
        assert response.status == 200, await response.text()
        body = await response.json()
        people[name] = Person(f"t-{name}", response.cookies["linli_session"].value,
                              body["csrf_token"], staff_id)
    yield Console(client, db_session_factory, clock, uploads, *ids, people)
    await client.close()


# --- scoping and masking --------------------------------------------------------------------


async def test_staff_see_their_orders_and_their_departments_queue_only(console: Console) -> None:
    status, body = await console.get("assignee", "/console/api/staff/orders")
    assert status == 200
    assert [o["id"] for o in body["mine"]] == [console.order_id]
    assert [o["id"] for o in body["queue"]] == [console.queued_order_id]
    row = body["mine"][0]
    assert row["category_name"] == "漏水渗水、水管爆裂" and row["location"] == "5号楼2单元501"
    assert row["status_label"] == "待签收" and row["sla"]["stage"] == "first_response"
    assert row["sla"]["state"] == "ok" and row["sla"]["minutes_left"] == 30
    assert PHONE not in str(body)

    status, body = await console.get("elevator", "/console/api/staff/orders")
    assert status == 200 and body["mine"] == [] and body["queue"] == []
    status, body = await console.get("colleague", "/console/api/staff/orders")
    assert [o["id"] for o in body["queue"]] == [console.queued_order_id] and body["mine"] == []
    status, body = await console.get("admin", "/console/api/staff/orders")
    shown = {o["id"] for o in body["queue"]}
    assert {console.order_id, console.queued_order_id} <= shown
    assert len(console.audits("list_orders")) == 4


async def test_another_departments_order_is_not_found_and_the_attempt_is_audited(
        console: Console) -> None:
    for path in (_order_url(console.order_id), _order_url(console.order_id, "accept")):
        request = console.get if path.endswith(str(console.order_id)) else console.post
        status, body = await request("elevator", path)
        assert status == 404, body
        assert set(body) == {"error"} and "GD" not in body["error"]
    assert console.order().status == "open"
    denied = console.audits("denied")
    assert [d.detail["order"] for d in denied] == [console.order_id] * 2
    assert console.audits("view_order") == [] and console.audits("accept") == []
    status, _ = await console.get("elevator", _order_url(987654))
    assert status == 404
    status, _ = await console.get("elevator", "/console/api/staff/orders/99999999999")
    assert status == 404


async def test_phone_is_masked_for_all_but_the_orders_assignee(console: Console) -> None:
    for who in ("colleague", "head", "admin"):
        status, body = await console.get(who, _order_url(console.order_id))
        assert status == 200, body
        assert body["phone_visible"] is False
        assert body["ticket"]["contact_phone"] == "139****1111"
        assert PHONE not in str(body), who  # nor in the description or the event log
        assert not any(body["actions"].values()), who  # the order is someone else's
    status, body = await console.get("assignee", _order_url(console.order_id))
    assert body["phone_visible"] is True and body["ticket"]["contact_phone"] == PHONE
    assert body["actions"] == {"accept": True, "return": True, "progress": False,
                               "resolve": False}
    assert [r["label"] for r in body["return_reasons"]] == ["职能不符", "属地不符", "信息不全",
                                                            "重复"]
    views = console.audits("view_order")
    assert [v.detail["phone_visible"] for v in views] == [False, False, False, True]
    assert all(v.ticket_id == console.ticket_id for v in views)


# --- actions --------------------------------------------------------------------------------


async def test_accept_progress_resolve_change_the_order_and_reach_the_resident(
        console: Console) -> None:
    status, body = await console.post("assignee", _order_url(console.order_id, "accept"))
    assert status == 200, body
    assert body["detail"]["order"]["status"] == "accepted"
    assert body["detail"]["actions"]["progress"] and body["detail"]["actions"]["resolve"]
    order = console.order()
    assert (order.status, order.assignee) == ("accepted", console.people["assignee"].staff_id)
    assert order.ticket_status == "accepted"

    status, body = await console.post("colleague", _order_url(console.order_id, "progress"),
                                      {"text": "我来看看"})
    assert status == 403 and "已派给" in body["error"]
    status, body = await console.post("assignee", _order_url(console.order_id, "progress"),
                                      {"text": "   "})
    assert status == 400 and body["error"] == "请写一下进展内容。"
    status, body = await console.post("assignee", _order_url(console.order_id, "progress"),
                                      {"text": "已到现场，正在换水管接头"})
    assert status == 200, body
    assert console.order().status == "in_progress"
    sent = console.outbox()
    assert [(m.channel, m.address) for m in sent] == [("sms", PHONE)] * 2
    assert "接单" in sent[0].text and "已到现场，正在换水管接头" in sent[1].text

    status, body = await console.post("assignee", _order_url(console.order_id, "resolve"),
                                      {"note": ""})
    assert status == 400 and "办结说明" in body["error"]
    status, body = await console.post("assignee", _order_url(console.order_id, "resolve"),
                                      {"note": "接头已更换，不再漏水"})
    assert status == 200, body
    order = console.order()
    assert order.status == "resolved" and order.ticket_status == "resolved"
    rating = console.outbox()[-1]
    assert rating.kind == "rating" and "打分" in rating.text and "5" in rating.text
    status, body = await console.post("assignee", _order_url(console.order_id, "accept"))
    assert status == 409 and "结束" in body["error"]
    actions = [a.action for a in console.audits("accept") + console.audits("progress")
               + console.audits("resolve")]
    assert actions == ["accept", "progress", "resolve"]
    assert console.audits("progress")[0].detail["note"] == "已到现场，正在换水管接头"


async def test_return_reroutes_and_refuses_bad_reasons(console: Console) -> None:
    url = _order_url(console.order_id, "return")
    status, body = await console.post("assignee", url, {"note": "不是我们的"})
    assert status == 400 and body["error"] == "请选择退单原因。"
    status, body = await console.post("assignee", url, {"reason": "lazy"})
    assert status == 400 and "退单原因" in body["error"]
    assert console.order().status == "open" and console.audits("return") == []

    status, body = await console.post("assignee", url, {"reason": "not_our_function",
                                                        "note": "是市政供水管"})
    assert status == 200, body
    assert "改派给" in body["message"]
    order = console.order()
    assert (order.status, order.return_reason) == ("returned", "not_our_function")
    with console.sessions() as session:
        ticket = session.get(Ticket, console.ticket_id)
        leads = [(o.department, o.status) for o in ticket.work_orders if o.role == "lead"]
        returned = next(e for e in ticket.events if e.kind == "returned")
    assert leads == [("property", "returned"), ("utilities_water", "open")]
    assert returned.data["note"] == "是市政供水管"
    assert console.audits("return")[0].detail["reason"] == "not_our_function"
    assert "改派" in console.outbox()[-1].text
    # The returned order stays visible to its department, with nothing left to do.
    status, body = await console.get("assignee", _order_url(console.order_id))
    assert status == 200 and not any(body["actions"].values())


async def test_an_accepted_order_cannot_be_returned_or_accepted_twice(console: Console) -> None:
    status, _ = await console.post("assignee", _order_url(console.order_id, "accept"))
    assert status == 200
    status, body = await console.post("assignee", _order_url(console.order_id, "return"),
                                      {"reason": "not_our_function"})
    assert status == 409 and "改派" in body["error"]
    status, body = await console.post("assignee", _order_url(console.order_id, "accept"))
    assert status == 409 and "接单" in body["error"]
    assert console.order().status == "accepted"
    status, body = await console.post("colleague", _order_url(console.queued_order_id, "accept"))
    assert status == 200 and console.order(console.queued_order_id).assignee == \
        console.people["colleague"].staff_id


# --- photos ---------------------------------------------------------------------------------


def _photo_form(note: str, data: bytes, content_type: str, name: str) -> FormData:
    form = FormData()
    form.add_field("note", note)
    form.add_field("photo", data, content_type=content_type, filename=name)
    return form


async def test_resolve_with_a_photo_stores_it_and_shows_it_only_to_the_department(
        console: Console) -> None:
    await console.post("assignee", _order_url(console.order_id, "accept"))
    png = tiny_png()
    status, body = await console.post("assignee", _order_url(console.order_id, "resolve"),
                                      data=_photo_form("已修好", png, "image/png", "a.png"))
    assert status == 200, body
    with console.sessions() as session:
        photos = session.execute(select(Attachment).where(
            Attachment.ticket_id == console.ticket_id)).scalars().all()
        number = session.get(Ticket, console.ticket_id).number
    assert [(p.kind, p.content_type) for p in photos] == [("resolution_photo", "image/png")]
    stored = console.uploads / photos[0].url
    assert stored.parent == console.uploads / number and stored.suffix == ".png"
    assert stored.read_bytes() == png
    href = body["detail"]["attachments"][0]["href"]
    assert href == _order_url(console.order_id) + f"/photos/{photos[0].id}"

    response = await console.client.get(href, headers=console.headers("colleague"))
    assert response.status == 200 and await response.read() == png
    assert response.headers["Content-Type"] == "image/png"
    status, _ = await console.get("elevator", href)
    assert status == 404
    response = await console.client.get(href)
    assert response.status == 401
    assert [a.detail["attachment"] for a in console.audits("view_photo")] == [photos[0].id]
    assert console.audits("resolve")[0].detail["attachment"] == photos[0].id


@pytest.mark.parametrize("case", ["gif", "disguised", "too_big", "octet"])
async def test_upload_type_and_size_are_checked_before_anything_changes(
        console: Console, case: str) -> None:
    await console.post("assignee", _order_url(console.order_id, "accept"))
    forms = {
        "gif": (GIF, "image/gif", "a.gif", 415),
        "disguised": (b"<html>not an image</html>", "image/png", "a.png", 415),
        "too_big": (tiny_png() + b"\0" * (5 * 1024 * 1024), "image/png", "big.png", 413),
        "octet": (tiny_png(), "application/octet-stream", "a.bin", 415),
    }
    data, content_type, name, expected = forms[case]
    status, body = await console.post("assignee", _order_url(console.order_id, "resolve"),
                                      data=_photo_form("已修好", data, content_type, name))
    assert status == expected, body
    assert body["error"] in ("只能上传JPG、PNG或WebP格式的照片。",
                             "照片不能超过5MB，请换一张或压缩后再传。")
    assert console.order().status == "accepted"
    with console.sessions() as session:
        assert session.execute(select(Attachment)).scalars().all() == []
    assert not console.uploads.exists() or not any(console.uploads.rglob("*.*"))
    assert console.audits("resolve") == []


# --- sessions, roles, CSRF ------------------------------------------------------------------


async def test_expired_session_wrong_role_and_missing_csrf_are_refused(console: Console) -> None:
    status, body = await console.get("agent", "/console/api/staff/orders")
    assert status == 403 and body["error"] == "您的账号没有这个权限。"
    status, body = await console.post("assignee", _order_url(console.order_id, "accept"),
                                      csrf=False)
    assert status == 403 and "刷新" in body["error"]
    response = await console.client.post(
        _order_url(console.order_id, "accept"),
        headers={**console.headers("assignee"), "X-CSRF-Token": "forged"})
    assert response.status == 403
    assert console.order().status == "open"
    status, body = await console.get("colleague", "/console/api/staff/department")
    assert status == 403
    console.clock.now = NOW + timedelta(hours=13)
    status, body = await console.get("assignee", "/console/api/staff/orders")
    assert status == 401 and "登录" in body["error"]
    response = await console.client.get("/console/staff", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"].startswith("/console/login")


async def test_staff_page_is_served_to_staff(console: Console) -> None:
    response = await console.client.get("/console/staff", headers=console.headers("assignee"))
    assert response.status == 200 and "我的工单" in await response.text()
    response = await console.client.get("/console/staff", headers=console.headers("agent"),
                                        allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/console/agent"


# --- supervisors ----------------------------------------------------------------------------


async def test_supervisor_sees_the_whole_queue_and_breaches(console: Console,
                                                           db_session_factory: sessionmaker,
                                                           catalogue: Any, roster: Any) -> None:
    status, body = await console.get("head", "/console/api/staff/department")
    assert status == 200, body
    rows = {o["id"]: o for o in body["orders"]}
    assert {console.order_id, console.queued_order_id} <= set(rows)
    assert rows[console.order_id]["assignee"]["id"] == console.people["assignee"].staff_id
    assert rows[console.queued_order_id]["assignee"] is None
    assert body["breaches"] == [] and body["department_name"] == "物业服务中心"
    status, _ = await console.get("head", "/console/api/staff/department?department=police")
    assert status == 403

    later = NOW + timedelta(minutes=45)  # P2 first response is due after 30 minutes
    console.clock.now = later
    with session_scope(db_session_factory) as session:
        number = session.get(Ticket, console.ticket_id).number
        outcome = check_sla(session, ticket_number=number, stage="first_response", kind="due",
                            now=later, catalogue=catalogue, roster=roster)
    assert outcome == "breached"
    status, body = await console.get("head", "/console/api/staff/department")
    breach = next(b for b in body["breaches"] if b["order"] == console.order_id)
    assert breach["stage_label"] == "响应" and breach["pending"] and breach["recorded"]
    assert breach["overdue_minutes"] == 15
    assert breach["escalated_to"]["rung"] == "department_head"
    assert any(b["order"] == console.queued_order_id and not b["recorded"]
               for b in body["breaches"])  # computed from the catalogue, not yet recorded
    row = next(o for o in body["orders"] if o["id"] == console.order_id)
    assert row["sla"]["state"] == "overdue" and row["sla"]["breached"] == ["first_response"]
    assert body["metrics"]["count"] >= 2
    audit = console.audits("view_department")[-1]
    assert audit.detail["department"] == "property"
    status, body = await console.get("admin",
                                     "/console/api/staff/department?department=property")
    assert status == 200 and body["departments"]


async def test_an_order_moved_to_another_department_disappears_at_once(console: Console,
                                                           db_session_factory: sessionmaker
                                                           ) -> None:
    # Scope is read from the stored order on every request, never from a cache.
    with session_scope(db_session_factory) as session:
        session.execute(update(WorkOrder).where(WorkOrder.id == console.queued_order_id)
                        .values(department="grid"))
    status, body = await console.get("assignee", "/console/api/staff/orders")
    assert status == 200 and body["queue"] == []
    status, _ = await console.get("assignee", _order_url(console.queued_order_id))
    assert status == 404
