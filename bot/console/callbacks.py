"""Call-back tasks in the agent console: hotline callers the line could not keep.

A caller who hung up mid-report, or whom nobody could be put through to, leaves a task
with what they said and what the bot gathered. Agents see the open ones, reveal the
number to ring (audited), and close the task with a note.
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.accounts import Principal
from bot.audit import audit
from bot.console.auth import error, json_response, read_json, require
from bot.db import read_scope, session_scope
from bot.models import CallbackTask
from bot.ticket_view import mask_phone
from bot.webkeys import APP

ROLES = ("agent", "supervisor")
REASONS = {"hangup": "通话中途挂断", "no_answer": "转接没人接", "no_input": "没听清，已转人工",
           "no_agent": "没有人工可转", "error": "系统出错"}
SLOT_LABELS = {"report_category": "类别", "report_building": "楼", "report_unit": "单元",
               "report_room": "房号", "report_description": "问题", "report_time_window": "时间"}
NOTE_MAX_CHARS = 300


def _summary(draft: dict[str, Any]) -> str:
    slots = draft.get("slots") or {}
    parts = [f"{label}：{slots[name]}" for name, label in SLOT_LABELS.items() if slots.get(name)]
    said = [turn.get("text", "") for turn in draft.get("transcript") or ()
            if turn.get("direction") == "in" and turn.get("text")]
    if said:
        parts.append("来电说：" + "；".join(said[-3:])[:120])
    return "，".join(parts) or "没有留下内容"


def open_tasks(session: Session) -> list[dict[str, Any]]:
    tasks = session.execute(select(CallbackTask).where(CallbackTask.status == "open")
                            .order_by(CallbackTask.created_at, CallbackTask.id)).scalars()
    return [{"id": task.id, "reason": REASONS.get(task.reason, task.reason),
             "phone": mask_phone(task.phone) if task.phone else "未显示号码",
             "has_phone": bool(task.phone), "at": task.created_at.isoformat(),
             "summary": _summary(task.draft or {}),
             "conversation_id": task.conversation_id} for task in tasks]


def _task(session: Session, task_id: int) -> CallbackTask:
    task = session.get(CallbackTask, task_id)
    if task is None:
        raise error(404, "没有这个回访任务。")
    return task


def reveal(session: Session, *, task_id: int, who: Principal, now: datetime) -> dict[str, Any]:
    task = _task(session, task_id)
    if task.status != "open":
        raise error(409, "这个回访任务已经完成了。")
    audit(session, who=who, action="view_callback_phone", now=now,
          conversation_id=task.conversation_id, task=task.id)
    return {"id": task.id, "phone": task.phone}


def finish(session: Session, *, task_id: int, who: Principal, note: str,
           now: datetime) -> dict[str, Any]:
    task = _task(session, task_id)
    if task.status != "open":
        raise error(409, "这个回访任务已经完成了。")
    task.status, task.done_at = "done", now
    audit(session, who=who, action="callback_done", now=now,
          conversation_id=task.conversation_id, task=task.id, note=note)
    return {"id": task.id, "status": task.status}


def _task_id(request: web.Request) -> int:
    raw = request.match_info["task"]
    if not raw.isdigit() or len(raw) > 12:
        raise error(404, "没有这个回访任务。")
    return int(raw)


async def list_tasks(request: web.Request) -> web.Response:
    await require(request, *ROLES)
    app = request.app[APP]

    def read() -> list[dict[str, Any]]:
        with read_scope(app.sessions) as session:
            return open_tasks(session)

    return json_response({"tasks": await asyncio.to_thread(read)})


async def reveal_phone(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    task_id, app = _task_id(request), request.app[APP]

    def work() -> dict[str, Any]:
        with session_scope(app.sessions) as session:
            return reveal(session, task_id=task_id, who=who, now=app.clock())

    return json_response(await asyncio.to_thread(work))


async def done(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    task_id, app = _task_id(request), request.app[APP]
    note = str((await read_json(request, 8_000)).get("note", "")).strip()[:NOTE_MAX_CHARS]

    def work() -> dict[str, Any]:
        with session_scope(app.sessions) as session:
            return finish(session, task_id=task_id, who=who, note=note, now=app.clock())

    return json_response(await asyncio.to_thread(work))


def routes() -> list[web.RouteDef]:
    base = "/console/api/agent/callbacks"
    return [web.get(base, list_tasks), web.post(base + "/{task}/phone", reveal_phone),
            web.post(base + "/{task}/done", done)]
