"""The staff console's reads and actions: scoped order lists, order details, SLA state, photos.

Everything here runs inside the caller's transaction and never commits. Scoping is decided
once, in load_order(): staff and supervisors see their own department's orders only, admin
sees all; an order out of scope is "not found", never a hint of its contents. Phone numbers
stay masked for everyone but the order's assignee. Refusals are `Refused(status, 中文消息)`.
"""
from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from bot.accounts import Principal
from bot.app import App
from bot.dispatch import FINISHED_TICKET_STATUSES, order_as_dict, work_orders_view
from bot.metrics import service_metrics
from bot.models import ACTIVE_ORDER_STATUSES, Attachment, Ticket, WorkOrder
from bot.settings import REPO_ROOT
from bot.staff import list_orders
from bot.ticket_view import format_location, mask_phone, ticket_as_dict, ticket_timeline
from bot.tickets import LOCATION_FIELDS
from routing.catalogue import Catalogue
from routing.returns import RETURN_REASONS
from routing.roster import Roster, Staff, UnknownStaff
from routing.sla import deadlines, met_on_time, stage_met

STAGE_LABELS = {"dispatch": "派单", "first_response": "响应", "on_site": "到场", "resolve": "办结"}
URGENCY_ORDER = ("P1", "P2", "P3", "P4")
PHOTO_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}
MAX_PHOTO_BYTES = 5 * 1024 * 1024
PHOTO_KIND = "resolution_photo"
METRICS_WINDOW = timedelta(days=30)
_MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
_SAFE_FOLDER = re.compile(r"^[A-Za-z0-9-]{1,32}$")


class Refused(Exception):
    """A request the console turns down; status is the HTTP status, message is shown as is."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Photo:
    data: bytes
    content_type: str  # one of PHOTO_TYPES, from the bytes themselves


def uploads_dir() -> Path:
    """Return where staff photos are kept: $LINLI_UPLOADS, else the repository's var/uploads."""
    configured = os.environ.get("LINLI_UPLOADS", "").strip()
    return Path(configured) if configured else REPO_ROOT / "var" / "uploads"


def sniff_image(head: bytes) -> str | None:
    """Return the image type the bytes really are (JPEG, PNG, WebP), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def member(roster: Roster, staff_id: str | None) -> Staff | None:
    """Return the roster entry behind an account's staff id, or None."""
    if not staff_id:
        return None
    try:
        return roster.member(staff_id)
    except UnknownStaff:
        return None


def staff_name(roster: Roster, staff_id: str | None) -> str | None:
    person = member(roster, staff_id)
    return person.name if person else staff_id


def visible(who: Principal, order: WorkOrder) -> bool:
    """Tell whether the signed-in person may see this order at all."""
    return who.role == "admin" or (bool(who.department) and order.department == who.department)


def load_order(session: Session, who: Principal, order_id: int) -> WorkOrder:
    """Return an order the person may see; anything else is simply not found."""
    order = session.get(WorkOrder, order_id) if 0 < order_id < 2**31 else None
    if order is None or not visible(who, order):
        raise Refused(404, "没有找到这张工单，可能不属于您的部门。")
    return order


def is_assignee(who: Principal, order: WorkOrder) -> bool:
    return bool(who.staff_id) and order.assignee == who.staff_id


# --- SLA ----------------------------------------------------------------------------------


def sla_state(ticket: Ticket, *, catalogue: Catalogue, now: datetime) -> dict[str, Any]:
    """Return the next deadline still open and how it stands: ok, soon, overdue or met."""
    breached = sorted({str(e.data.get("stage")) for e in ticket.events
                       if e.kind == "sla_breached" and e.data.get("stage")})
    state: dict[str, Any] = {"state": "met", "stage": None, "stage_label": None, "due": None,
                             "minutes_left": None, "breached": breached}
    if ticket.status in FINISHED_TICKET_STATUSES:
        return state
    timeline = ticket_timeline(ticket)
    for deadline in deadlines(urgency=ticket.urgency, created_at=ticket.created_at,
                              catalogue=catalogue):
        if stage_met(deadline.stage, timeline):
            continue
        level = ("overdue" if now > deadline.due
                 else "soon" if now >= deadline.remind_at else "ok")
        state.update(state=level, stage=deadline.stage, stage_label=STAGE_LABELS[deadline.stage],
                     due=deadline.due.isoformat(),
                     minutes_left=int((deadline.due - now).total_seconds() // 60))
        break
    return state


def breaches(order: WorkOrder, *, catalogue: Catalogue, roster: Roster,
             now: datetime) -> list[dict[str, Any]]:
    """List the deadlines a lead order's ticket missed, computed and as the scheduler recorded."""
    ticket = order.ticket
    timeline = ticket_timeline(ticket)
    recorded = {str(e.data.get("stage")): e for e in ticket.events if e.kind == "sla_breached"}
    escalated = {str(e.data.get("stage")): e for e in ticket.events if e.kind == "escalated"}
    found = []
    for deadline in deadlines(urgency=ticket.urgency, created_at=ticket.created_at,
                              catalogue=catalogue):
        missed = met_on_time(deadline=deadline, timeline=timeline, now=now) is False
        if not missed and deadline.stage not in recorded:
            continue
        rung = escalated.get(deadline.stage)
        found.append({
            "order": order.id, "ticket": ticket.number, "stage": deadline.stage,
            "stage_label": STAGE_LABELS[deadline.stage], "due": deadline.due.isoformat(),
            "overdue_minutes": int((now - deadline.due).total_seconds() // 60),
            "pending": not stage_met(deadline.stage, timeline),
            "recorded": deadline.stage in recorded,
            "escalated_to": ({"rung": rung.data.get("rung"),
                              "staff": staff_name(roster, rung.data.get("staff"))}
                             if rung is not None else None),
            "assignee": staff_name(roster, order.assignee),
        })
    return found


# --- reading ------------------------------------------------------------------------------


def order_summary(order: WorkOrder, *, app: App, now: datetime) -> dict[str, Any]:
    """Return what a list row shows: category, place, deadline, status, holder."""
    ticket = order.ticket
    catalogue = app.catalogue
    body = order_as_dict(order, roster=app.roster, catalogue=catalogue)
    category = catalogue.category(ticket.category) if catalogue.has_category(ticket.category) \
        else None
    body.update(
        category=ticket.category,
        category_name=category.name if category else ticket.category,
        category_short_name=category.short_name if category else ticket.category,
        location=format_location(**{name: getattr(ticket, name) for name in LOCATION_FIELDS}),
        urgency=ticket.urgency,
        urgency_label=catalogue.sla(ticket.urgency).label,
        ticket_status=ticket.status,
        age_minutes=int((now - order.created_at).total_seconds() // 60),
        sla=sla_state(ticket, catalogue=catalogue, now=now),
    )
    return body


def _most_urgent_first(orders: Iterable[WorkOrder]) -> list[WorkOrder]:
    ordered = sorted(orders, key=lambda o: o.created_at, reverse=True)
    return sorted(ordered, key=lambda o: URGENCY_ORDER.index(o.ticket.urgency)
                  if o.ticket.urgency in URGENCY_ORDER else len(URGENCY_ORDER))


def _active_orders(session: Session, department: str | None) -> list[WorkOrder]:
    query = (
        select(WorkOrder).join(Ticket, Ticket.id == WorkOrder.ticket_id)
        .where(WorkOrder.status.in_(ACTIVE_ORDER_STATUSES),
               Ticket.status.not_in(FINISHED_TICKET_STATUSES))
        .options(selectinload(WorkOrder.ticket).selectinload(Ticket.events))
        .order_by(WorkOrder.id)
    )
    if department is not None:
        query = query.where(WorkOrder.department == department)
    return list(session.execute(query).scalars())


def my_orders(session: Session, who: Principal, *, app: App, now: datetime) -> dict[str, Any]:
    """Return the person's own orders and their department's unassigned queue (admin: all)."""
    person = member(app.roster, who.staff_id)
    if who.role == "admin":
        orders = _active_orders(session, None)
    elif person is not None:
        orders = list_orders(session, roster=app.roster, staff_id=person.id)
    elif who.department:
        orders = list_orders(session, roster=app.roster, department=who.department)
    else:
        orders = []
    orders = [o for o in orders if visible(who, o)]
    mine = [o for o in orders if person is not None and o.assignee == person.id]
    queue = [o for o in orders if o not in mine and (who.role == "admin" or o.assignee is None)]
    return {
        "me": _me(who, app=app, person=person),
        "mine": [order_summary(o, app=app, now=now) for o in _most_urgent_first(mine)],
        "queue": [order_summary(o, app=app, now=now) for o in _most_urgent_first(queue)],
    }


def _me(who: Principal, *, app: App, person: Staff | None) -> dict[str, Any]:
    names = {d.id: d.name for d in app.catalogue.departments}
    return {"display_name": who.display_name, "role": who.role, "department": who.department,
            "department_name": names.get(who.department or "", who.department),
            "staff_id": person.id if person else None, "can_act": person is not None,
            "supervisor": who.can("supervisor")}


def _scrub(value: Any) -> Any:
    """Mask mobile numbers written into free text (descriptions, notes)."""
    if isinstance(value, str):
        return _MOBILE.sub(lambda m: mask_phone(m.group(0)) or "", value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def allowed_actions(who: Principal, order: WorkOrder, roster: Roster) -> dict[str, bool]:
    """Say which buttons make sense for this person; bot.staff still has the last word."""
    person = member(roster, who.staff_id)
    live = (order.ticket.status not in FINISHED_TICKET_STATUSES
            and order.status in ACTIVE_ORDER_STATUSES)
    ours = live and person is not None and person.department == order.department
    free = ours and order.status == "open" and order.assignee in (None, who.staff_id)
    held = ours and order.status in ("accepted", "in_progress") and is_assignee(who, order)
    return {"accept": free, "return": free, "progress": held, "resolve": held}


def order_detail(session: Session, who: Principal, order: WorkOrder, *, app: App,
                 now: datetime) -> dict[str, Any]:
    """Return one order with its ticket, timeline, hops and photos, masked for this viewer."""
    ticket = order.ticket
    body = ticket_as_dict(ticket, catalogue=app.catalogue)
    assignee = is_assignee(who, order)
    if assignee:
        body["contact_phone"] = ticket.contact_phone
    else:
        body = _scrub(body)
    routing = work_orders_view(ticket, roster=app.roster, catalogue=app.catalogue)
    attachments = session.execute(
        select(Attachment).where(Attachment.ticket_id == ticket.id).order_by(Attachment.id)
    ).scalars()
    return {
        "order": order_summary(order, app=app, now=now),
        "ticket": body,
        "phone_visible": assignee,
        "hops": routing["hops"],
        "work_orders": routing["orders"],
        "attachments": [_attachment(a, order) for a in attachments],
        "actions": allowed_actions(who, order, app.roster),
        "return_reasons": [{"code": c, "label": label} for c, label in RETURN_REASONS.items()],
    }


def _attachment(attachment: Attachment, order: WorkOrder) -> dict[str, Any]:
    ours = attachment.kind == PHOTO_KIND
    url = attachment.url or ""
    href = (f"/console/api/staff/orders/{order.id}/photos/{attachment.id}" if ours
            else url if url.startswith(("https://", "http://")) else None)
    return {"id": attachment.id, "kind": attachment.kind,
            "kind_label": "办结照片" if ours else "居民照片",
            "content_type": attachment.content_type, "href": href,
            "created_at": attachment.created_at.isoformat()}


def department_view(session: Session, who: Principal, *, department: str | None, app: App,
                    now: datetime) -> dict[str, Any]:
    """Return a department's whole active queue, its SLA breaches and its recent metrics."""
    if who.role != "admin":
        if department not in (None, who.department) or not who.department:
            raise Refused(403, "您只能查看本部门的工单。")
        department = who.department
    elif department is not None and department not in {d.id for d in app.catalogue.departments}:
        raise Refused(404, "没有这个部门。")
    orders = _most_urgent_first(_active_orders(session, department))
    missed = [b for o in orders if o.role == "lead"
              for b in breaches(o, catalogue=app.catalogue, roster=app.roster, now=now)]
    missed.sort(key=lambda b: (not b["pending"], -b["overdue_minutes"]))
    report = service_metrics(session, catalogue=app.catalogue, roster=app.roster, now=now,
                             by="department", since=now - METRICS_WINDOW)
    summary = report["groups"].get(department) if department else report["overall"]
    names = {d.id: d.name for d in app.catalogue.departments}
    return {
        "department": department,
        "department_name": names.get(department or "", "全部部门"),
        "departments": [{"id": d.id, "name": d.name} for d in app.catalogue.departments]
        if who.role == "admin" else [],
        "orders": [order_summary(o, app=app, now=now) for o in orders],
        "breaches": missed,
        "metrics": _compact(summary),
    }


def _compact(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if not summary:
        return None
    return {
        "count": summary["count"],
        "first_time_right": summary["first_time_right"],
        "hops_mean": summary["hops"]["mean"],
        "first_response_p50": summary["minutes_to_first_response"]["p50"],
        "resolution_p50": summary["minutes_to_resolution"]["p50"],
        "sla": {stage: {"label": STAGE_LABELS.get(stage, stage), **numbers}
                for stage, numbers in summary["sla"].items()},
    }


# --- photos -------------------------------------------------------------------------------


def store_photo(session: Session, *, ticket: Ticket, photo: Photo, root: Path,
                now: datetime, written: list[Path]) -> Attachment:
    """Write the photo under root/<ticket>/<random>.ext and record it as an Attachment."""
    if ticket.conversation_id is None:
        raise Refused(409, "这张工单没有居民会话记录，照片暂时无法保存；请只填写办结说明。")
    folder_name = ticket.number if _SAFE_FOLDER.match(ticket.number) else str(ticket.id)
    folder = root / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    name = secrets.token_urlsafe(18) + PHOTO_TYPES[photo.content_type]
    path = folder / name
    with open(path, "xb") as handle:  # never overwrite: the name is random
        written.append(path)
        handle.write(photo.data)
    attachment = Attachment(conversation_id=ticket.conversation_id, ticket_id=ticket.id,
                            kind=PHOTO_KIND, url=f"{folder_name}/{name}",
                            content_type=photo.content_type, created_at=now)
    session.add(attachment)
    session.flush()
    return attachment


def photo_path(session: Session, order: WorkOrder, attachment_id: int,
               *, root: Path) -> tuple[Path, Attachment]:
    """Return the stored file of a staff photo on this order's ticket, or refuse with 404."""
    attachment = session.get(Attachment, attachment_id) if 0 < attachment_id < 2**31 else None
    if (attachment is None or attachment.ticket_id != order.ticket_id
            or attachment.kind != PHOTO_KIND or not attachment.url):
        raise Refused(404, "没有找到这张照片。")
    base = root.resolve()
    path = (base / attachment.url).resolve()
    if base not in path.parents or not path.is_file():
        raise Refused(404, "照片文件已不在了。")
    return path, attachment
