"""The staff and supervisor console: the /console/staff page and /console/api/staff/… JSON.

Department staff work their orders from a phone: accept (接单), return with a reason
(退单), add a progress note the resident receives (进展), resolve with a note and a photo
(办结). The actions are bot.staff's own; this module decides who may see what (through
staff_service.load_order), reads uploads, turns refusals into 403/404/409 with Chinese
messages and audits every view and action in the same transaction.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web
from sqlalchemy.orm import Session

from bot.accounts import Principal
from bot.audit import audit
from bot.console import staff_service as svc
from bot.console.auth import HOME, current, error, json_response, page, read_json, require
from bot.db import session_scope
from bot.staff import (
    EmptyNote,
    MissingReturnReason,
    NotYourOrder,
    OrderAlreadyTaken,
    OrderClosed,
    OrderNotFound,
    OrderStateError,
    StaffActionError,
    UnknownReturnReason,
    UnknownStaffMember,
    accept_order,
    add_progress,
    resolve_order,
    return_order,
)
from bot.tickets import record_event
from bot.webkeys import APP, OUTBOX

ROLES = ("staff", "supervisor")
NOTE_MAX_CHARS = 500
_NOTE_MAX_BYTES = NOTE_MAX_CHARS * 4
_MULTIPART_SLACK = 64 * 1024
_T = TypeVar("_T")

_STATE_MESSAGES = {
    "accept": "这张工单现在不能接单，请刷新后再看。",
    "return": "已接单的工单不能退回；如确实不归本部门，请联系派单员改派。",
    "progress": "请先接单，再填写进展。",
    "resolve": "请先接单，再办结。",
}
_DONE_MESSAGES = {
    "accept": "已接单，居民会收到通知。",
    "progress": "进展已发送给居民。",
    "resolve": "已办结，居民会收到评价邀请。",
}


def _http(refused: svc.Refused) -> web.HTTPException:
    if refused.status == 413:
        return web.HTTPRequestEntityTooLarge(
            max_size=svc.MAX_PHOTO_BYTES, actual_size=svc.MAX_PHOTO_BYTES + 1,
            text=_error_text(refused.message), content_type="application/json")
    if refused.status == 415:
        return web.HTTPUnsupportedMediaType(text=_error_text(refused.message),
                                            content_type="application/json")
    return error(refused.status, refused.message)


def _error_text(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


async def _run(request: web.Request, who: Principal, work: Callable[[Session, datetime], _T],
               *, order_id: int | None = None) -> _T:
    """Run `work` in one transaction off the event loop; audit refused looks at an order."""
    app = request.app[APP]

    def run() -> _T:
        now = app.clock()
        try:
            with session_scope(app.sessions) as session:
                return work(session, now)
        except svc.Refused as refused:
            if order_id is not None and refused.status in (403, 404):
                with session_scope(app.sessions) as session:
                    audit(session, who=who, action="denied", now=now, order=order_id,
                          status=refused.status, path=request.path[:200])
            raise

    try:
        return await asyncio.to_thread(run)
    except svc.Refused as refused:
        raise _http(refused) from None


def _order_id(request: web.Request, key: str = "order_id") -> int:
    return int(request.match_info[key])  # the route pattern admits digits only


def _refusal(exc: StaffActionError, action: str, app: Any, order: Any) -> svc.Refused:
    """Say in Chinese why bot.staff refused; nothing was changed."""
    holder = svc.staff_name(app.roster, order.assignee)
    if isinstance(exc, OrderNotFound):
        return svc.Refused(404, "没有找到这张工单。")
    if isinstance(exc, UnknownStaffMember):
        return svc.Refused(403, "您的账号没有对应的值班人员，请联系管理员。")
    if isinstance(exc, NotYourOrder):
        if order.assignee and holder:
            return svc.Refused(403, f"这张工单已派给{holder}，请联系对方或部门负责人。")
        return svc.Refused(403, "这张工单不归您处理。")
    if isinstance(exc, OrderAlreadyTaken):
        return svc.Refused(409, f"这张工单已被{holder or '其他人'}接单，请刷新列表。")
    if isinstance(exc, OrderClosed):
        return svc.Refused(409, "这张工单已经结束，不能再操作了。")
    if isinstance(exc, OrderStateError):
        return svc.Refused(409, _STATE_MESSAGES.get(action, "现在不能这样操作，请刷新后再试。"))
    if isinstance(exc, MissingReturnReason):
        return svc.Refused(400, "请选择退单原因。")
    if isinstance(exc, UnknownReturnReason):
        return svc.Refused(400, "退单原因不对，请从列表里选择。")
    if isinstance(exc, EmptyNote):
        return svc.Refused(400, "请写一下进展内容。")
    return svc.Refused(409, "现在不能这样操作，请刷新后再试。")


def _clean(text: Any, *, required: str | None = None) -> str | None:
    value = text.strip() if isinstance(text, str) else ""
    if len(value) > NOTE_MAX_CHARS:
        raise svc.Refused(400, f"内容太长了，请控制在{NOTE_MAX_CHARS}字以内。")
    if not value and required:
        raise svc.Refused(400, required)
    return value or None


# --- pages and reads ------------------------------------------------------------------------


async def staff_page(request: web.Request) -> web.StreamResponse:
    who = await current(request)
    if who is None:
        raise web.HTTPFound("/console/login?next=/console/staff")
    if not who.can(*ROLES):
        raise web.HTTPFound(HOME[who.role])
    return await page("staff.html")(request)


async def list_view(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    app = request.app[APP]

    def work(session: Session, now: datetime) -> dict[str, Any]:
        body = svc.my_orders(session, who, app=app, now=now)
        audit(session, who=who, action="list_orders", now=now,
              orders=[o["id"] for o in body["mine"] + body["queue"]])
        return body

    return json_response(await _run(request, who, work))


async def order_view(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    app = request.app[APP]
    order_id = _order_id(request)

    def work(session: Session, now: datetime) -> dict[str, Any]:
        order = svc.load_order(session, who, order_id)
        body = svc.order_detail(session, who, order, app=app, now=now)
        audit(session, who=who, action="view_order", now=now, ticket_id=order.ticket_id,
              order=order.id, phone_visible=body["phone_visible"])
        return body

    return json_response(await _run(request, who, work, order_id=order_id))


async def department_view(request: web.Request) -> web.Response:
    who = await require(request, "supervisor")
    app = request.app[APP]
    department = request.query.get("department") or None

    def work(session: Session, now: datetime) -> dict[str, Any]:
        body = svc.department_view(session, who, department=department, app=app, now=now)
        audit(session, who=who, action="view_department", now=now,
              department=body["department"], orders=[o["id"] for o in body["orders"]])
        return body

    return json_response(await _run(request, who, work))


async def photo_view(request: web.Request) -> web.StreamResponse:
    who = await require(request, *ROLES)
    order_id = _order_id(request)
    attachment_id = _order_id(request, "attachment_id")
    root = svc.uploads_dir()

    def work(session: Session, now: datetime) -> tuple[Any, str]:
        order = svc.load_order(session, who, order_id)
        path, attachment = svc.photo_path(session, order, attachment_id, root=root)
        audit(session, who=who, action="view_photo", now=now, ticket_id=order.ticket_id,
              order=order.id, attachment=attachment.id)
        return path, attachment.content_type or "application/octet-stream"

    path, content_type = await _run(request, who, work, order_id=order_id)
    return web.FileResponse(path, headers={
        "Content-Type": content_type, "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff", "Content-Disposition": "inline"})


# --- actions --------------------------------------------------------------------------------


async def _act(request: web.Request, action: str, *, reason: str | None = None,
               note: str | None = None, photo: svc.Photo | None = None,
               who: Principal | None = None) -> web.Response:
    who = who or await require(request, *ROLES)
    app = request.app[APP]
    order_id = _order_id(request)
    root = svc.uploads_dir()
    written: list[Any] = []

    def work(session: Session, now: datetime) -> dict[str, Any]:
        order = svc.load_order(session, who, order_id)
        person = svc.member(app.roster, who.staff_id)
        if person is None:
            raise svc.Refused(403, "您的账号没有绑定值班人员，不能办理工单。")
        if photo is not None and order.ticket.conversation_id is None:
            raise svc.Refused(409, "这张工单没有居民会话记录，照片暂时无法保存；请只填写办结说明。")
        common = {"order_id": order.id, "staff_id": person.id, "roster": app.roster, "now": now}
        detail: dict[str, Any] = {"order": order.id}
        message = _DONE_MESSAGES.get(action, "")
        try:
            if action == "accept":
                accept_order(session, catalogue=app.catalogue, **common)
            elif action == "return":
                outcome = return_order(session, reason=reason, note=note,
                                       catalogue=app.catalogue, **common)
                detail.update(reason=reason, note=note,
                              new_order=outcome.new_order.id if outcome.new_order else None)
                message = _returned_message(outcome, app)
            elif action == "progress":
                add_progress(session, text=note or "", catalogue=app.catalogue, **common)
                detail["note"] = note
            else:
                resolve_order(session, note=note, catalogue=app.catalogue, **common)
                detail["note"] = note
        except StaffActionError as exc:
            raise _refusal(exc, action, app, order) from exc
        if photo is not None:
            attachment = svc.store_photo(session, ticket=order.ticket, photo=photo, root=root,
                                         now=now, written=written)
            record_event(session, ticket=order.ticket, kind="resolution_photo",
                         actor=f"staff:{person.id}", now=now,
                         data={"order": order.id, "attachment": attachment.id,
                               "staff": person.id})
            detail["attachment"] = attachment.id
        audit(session, who=who, action=action, now=now, ticket_id=order.ticket_id, **detail)
        session.flush()
        session.expire_all()
        fresh = svc.load_order(session, who, order_id)
        return {"ok": True, "message": message,
                "detail": svc.order_detail(session, who, fresh, app=app, now=now)}

    try:
        body = await _run(request, who, work, order_id=order_id)
    except BaseException:
        for path in written:  # the transaction rolled back: its photo must not linger
            path.unlink(missing_ok=True)
        raise
    outbox = request.app.get(OUTBOX)
    if outbox is not None:
        outbox.kick()  # the resident's update goes out now, not at the next poll
    return json_response(body)


def _returned_message(outcome: Any, app: Any) -> str:
    if outcome.new_order is None:
        return "已退单，坐席会跟进处理。"
    names = {d.id: d.name for d in app.catalogue.departments}
    name = names.get(outcome.new_order.department, outcome.new_order.department)
    verb = "转" if outcome.arbitration else "改派给"
    return f"已退单，工单已{verb}{name}。"


async def accept(request: web.Request) -> web.Response:
    return await _act(request, "accept")


async def return_(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    body = await read_json(request)
    reason = body.get("reason") if isinstance(body.get("reason"), str) else None
    try:
        note = _clean(body.get("note"))
    except svc.Refused as refused:
        raise _http(refused) from None
    return await _act(request, "return", reason=reason, note=note, who=who)


async def progress(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    body = await read_json(request)
    try:
        note = _clean(body.get("text"), required="请写一下进展内容。")
    except svc.Refused as refused:
        raise _http(refused) from None
    return await _act(request, "progress", note=note, who=who)


async def resolve(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    try:
        if request.content_type == "multipart/form-data":
            raw_note, photo = await _read_resolution(request)
        else:
            raw_note, photo = (await read_json(request)).get("note"), None
        note = _clean(raw_note, required="请写一下办结说明。")
    except svc.Refused as refused:
        raise _http(refused) from None
    return await _act(request, "resolve", note=note, photo=photo, who=who)


async def _read_part(part: BodyPartReader, limit: int, too_big: svc.Refused) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data.extend(chunk)
        if len(data) > limit:
            raise too_big
    return bytes(data)


async def _read_resolution(request: web.Request) -> tuple[str | None, svc.Photo | None]:
    """Read the note and the optional photo of a multipart resolve, checking type and size."""
    too_big = svc.Refused(413, "照片不能超过5MB，请换一张或压缩后再传。")
    if (request.content_length or 0) > svc.MAX_PHOTO_BYTES + _MULTIPART_SLACK:
        raise too_big
    note: str | None = None
    photo: svc.Photo | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise svc.Refused(400, "请求格式不对。")
            if part.name == "note":
                raw = await _read_part(part, _NOTE_MAX_BYTES,
                                       svc.Refused(400, f"内容太长了，请控制在{NOTE_MAX_CHARS}字以内。"))
                note = raw.decode("utf-8")
            elif part.name == "photo":
                data = await _read_part(part, svc.MAX_PHOTO_BYTES, too_big)
                if not data and not part.filename:
                    continue  # an empty file field: no photo chosen
                declared = (part.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                actual = svc.sniff_image(data[:16])
                if declared not in svc.PHOTO_TYPES or actual is None:
                    raise svc.Refused(415, "只能上传JPG、PNG或WebP格式的照片。")
                photo = svc.Photo(data=data, content_type=actual)
            else:
                await part.release()
    except (ValueError, UnicodeDecodeError, AssertionError) as exc:
        raise svc.Refused(400, "请求格式不对。") from exc
    return note, photo


def routes() -> list[web.RouteDef]:
    order = r"/console/api/staff/orders/{order_id:\d{1,10}}"
    return [
        web.get("/console/staff", staff_page),
        web.get("/console/api/staff/orders", list_view),
        web.get("/console/api/staff/department", department_view),
        web.get(order, order_view),
        web.post(order + "/accept", accept),
        web.post(order + "/return", return_),
        web.post(order + "/progress", progress),
        web.post(order + "/resolve", resolve),
        web.get(order + r"/photos/{attachment_id:\d{1,10}}", photo_view),
    ]
