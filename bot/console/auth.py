"""Console sign-in: the session cookie, roles, CSRF, and the login/logout endpoints.

Every console handler starts with `who = await require(request, "agent")` (or other
roles); it answers 401 for a missing or expired session, 403 for a wrong role or a
state-changing request without the session's CSRF token. Errors are JSON with a
Chinese message the page can show.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.accounts import Principal, lookup, record_visit, sign_in, sign_out
from bot.audit import audit
from bot.db import read_scope, session_scope
from bot.webkeys import APP

COOKIE = "linli_session"
CSRF_HEADER = "X-CSRF-Token"
STATIC = Path(__file__).resolve().parent.parent / "static" / "console"
HOME = {"agent": "/console/agent", "supervisor": "/console/staff", "staff": "/console/staff",
        "admin": "/console/agent"}
# Sign-in attempts per username and per client address in a sliding minute.
MAX_ATTEMPTS_PER_MINUTE = 5
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_attempts: dict[str, deque[float]] = {}


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status,
                             dumps=lambda value: json.dumps(value, ensure_ascii=False,
                                                            default=str))


def error(status: int, message: str, **extra: Any) -> web.HTTPException:
    """An HTTP error with a JSON body {"error": message, **extra} the console shows as is."""
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
           404: web.HTTPNotFound, 409: web.HTTPConflict}[status]
    return cls(text=json.dumps({"error": message, **extra}, ensure_ascii=False),
               content_type="application/json")


async def current(request: web.Request) -> Principal | None:
    """Return the signed-in person, or None."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    app = request.app[APP]

    def find() -> Principal | None:
        now = app.clock()
        with read_scope(app.sessions) as session:
            principal, write = lookup(session, token=token, now=now)
        if write is not None:  # at most once a minute per session: a short write
            with session_scope(app.sessions) as session:
                record_visit(session, token=token, now=now, end=write == "end")
        return principal

    return await asyncio.to_thread(find)


async def require(request: web.Request, *roles: str) -> Principal:
    """Return the signed-in person if their role is allowed; raise 401/403 otherwise."""
    who = await current(request)
    if who is None:
        raise error(401, "登录已过期，请重新登录。")
    if roles and not who.can(*roles):
        raise error(403, "您的账号没有这个权限。")
    if request.method not in _SAFE_METHODS:
        given = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode(), who.csrf_token.encode()):
            raise error(403, "页面已过期，请刷新后再试。")
    return who


async def read_json(request: web.Request, max_bytes: int = 64_000) -> dict[str, Any]:
    """Read a JSON object body or raise 400."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise error(400, "内容太长了。")
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise error(400, "内容太长了。")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(400, "请求格式不对。") from exc
    if not isinstance(body, dict):
        raise error(400, "请求格式不对。")
    return body


def _too_many(key: str) -> bool:
    now = time.monotonic()
    window = _attempts.setdefault(key, deque())
    while window and now - window[0] > 60:
        window.popleft()
    return len(window) >= MAX_ATTEMPTS_PER_MINUTE


def _count(key: str) -> None:
    _attempts.setdefault(key, deque()).append(time.monotonic())


async def login(request: web.Request) -> web.Response:
    body = await read_json(request, 4096)
    username = str(body.get("username", "")).strip()[:64]
    password = str(body.get("password", ""))[:256]
    keys = (f"user:{username.lower()}", f"addr:{request.remote}")
    if any(_too_many(key) for key in keys):
        raise error(403, "尝试次数太多，请一分钟后再试。")
    app = request.app[APP]

    def attempt() -> tuple[str, Principal] | None:
        with session_scope(app.sessions) as session:
            result = sign_in(session, username=username, password=password, now=app.clock())
            audit(session, who=result[1] if result else None,
                  action="login" if result else "login_failed", now=app.clock(),
                  username=username)
            return result

    result = await asyncio.to_thread(attempt)
    if result is None:
        for key in keys:
            _count(key)
        raise error(401, "用户名或密码不对。")
    token, who = result
    response = json_response({"display_name": who.display_name, "role": who.role,
                              "csrf_token": who.csrf_token, "home": HOME[who.role]})
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/console",
                        secure=request.secure, max_age=12 * 3600)
    return response


async def logout(request: web.Request) -> web.Response:
    who = await require(request)
    app = request.app[APP]

    def leave() -> None:
        with session_scope(app.sessions) as session:
            sign_out(session, token=request.cookies.get(COOKIE))
            audit(session, who=who, action="logout", now=app.clock())

    await asyncio.to_thread(leave)
    response = json_response({"ok": True})
    response.del_cookie(COOKIE, path="/console")
    return response


async def me(request: web.Request) -> web.Response:
    who = await require(request)
    return json_response({"account_id": who.account_id, "username": who.username,
                          "display_name": who.display_name, "role": who.role,
                          "department": who.department, "staff_id": who.staff_id,
                          "csrf_token": who.csrf_token, "home": HOME[who.role]})


async def home(request: web.Request) -> web.Response:
    who = await current(request)
    raise web.HTTPFound(HOME[who.role] if who else "/console/login")


def page(name: str) -> Any:
    """Serve a console page; the page itself asks /console/api/me and sends to login."""
    async def handler(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / name, headers={
            "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
            "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
        })
    return handler


def routes() -> list[web.RouteDef]:
    return [
        web.get("/console", home),
        web.get("/console/login", page("login.html")),
        web.post("/console/api/login", login),
        web.post("/console/api/logout", logout),
        web.get("/console/api/me", me),
        web.static("/console/static", STATIC, show_index=False),
    ]
