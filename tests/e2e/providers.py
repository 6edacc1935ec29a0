"""Loopback stand-ins for WeChat's and Twilio's REST APIs, so outbound sends are real HTTP.

The stack is pointed at this server through WECHAT_API_BASE / TWILIO_API_BASE. Every
request is recorded; `fail_next(n)` makes the next n sends answer HTTP 503, as a provider
outage would.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from tests.loopback import serve_in_thread

# Credentials the e2e stack runs with (fake, loopback only).
WECHAT_TOKEN = "linlitesttoken"
WECHAT_APP_ID = "wx0123456789abcdef"
WECHAT_APP_SECRET = "test-app-secret"
WECHAT_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 characters
WECHAT_ACCOUNT = "gh_linli_demo"
TWILIO_ACCOUNT_SID = "AC" + "0" * 32
TWILIO_AUTH_TOKEN = "test-twilio-auth-token"
TWILIO_FROM_NUMBER = "+8657188001234"
TWILIO_TRANSFER_NUMBER = "+8613900000000"
# What providers "see": a reverse proxy in front of the hub. Signatures are computed
# over this URL, so the hub must validate against it, not its loopback address.
PUBLIC_BASE_URL = "https://linli.example.test"


@dataclass
class Sent:
    provider: str  # "wechat" or "twilio"
    to: str
    text: str
    at: float


@dataclass
class FakeProviders:
    base_url: str = ""
    sent: list[Sent] = field(default_factory=list)
    token_fetches: int = 0
    failures_left: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, count: int) -> None:
        with self.lock:
            self.failures_left = count

    def _should_fail(self) -> bool:
        with self.lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                return True
            return False

    def messages_to(self, address: str) -> list[str]:
        with self.lock:
            return [item.text for item in self.sent if item.to == address]

    def wait_for(self, address: str, count: int = 1, timeout_s: float = 30.0) -> list[str]:
        """Wait until `count` messages reached `address`; return them all."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            texts = self.messages_to(address)
            if len(texts) >= count:
                return texts
            time.sleep(0.1)
        raise AssertionError(f"{address} got {self.messages_to(address)!r}, wanted {count}")

    # --- handlers ----------------------------------------------------------------------

    async def wechat_token(self, request: web.Request) -> web.Response:
        if request.query.get("appid") != WECHAT_APP_ID or \
                request.query.get("secret") != WECHAT_APP_SECRET:
            return web.json_response({"errcode": 40013, "errmsg": "invalid appid"})
        with self.lock:
            self.token_fetches += 1
            token = f"token-{self.token_fetches}"
        return web.json_response({"access_token": token, "expires_in": 7200})

    async def wechat_send(self, request: web.Request) -> web.Response:
        if self._should_fail():
            return web.Response(status=503, text="service unavailable")
        expected = f"token-{self.token_fetches}"
        if request.query.get("access_token") != expected:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        body = json.loads(await request.read())
        with self.lock:
            self.sent.append(Sent("wechat", body["touser"], body["text"]["content"],
                                  time.monotonic()))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def twilio_messages(self, request: web.Request) -> web.Response:
        if self._should_fail():
            return web.json_response({"code": 20500, "message": "Internal Server Error",
                                      "status": 500}, status=500)
        if request.match_info["sid"] != TWILIO_ACCOUNT_SID:
            return web.json_response({"code": 20404, "message": "not found", "status": 404},
                                     status=404)
        form = parse_qs((await request.read()).decode())
        to, body = form["To"][0], form["Body"][0]
        with self.lock:
            self.sent.append(Sent("twilio", to, body, time.monotonic()))
            sid = f"SM{len(self.sent):032d}"
        return web.json_response({"sid": sid, "status": "queued", "to": to, "body": body,
                                  "account_sid": TWILIO_ACCOUNT_SID}, status=201)


def start_fake_providers(port: int) -> FakeProviders:
    """Serve the fake APIs on 127.0.0.1:port from a daemon thread."""
    fake = FakeProviders(base_url=f"http://127.0.0.1:{port}")
    app = web.Application()
    app.add_routes([
        web.get("/cgi-bin/token", fake.wechat_token),
        web.post("/cgi-bin/message/custom/send", fake.wechat_send),
        web.post("/2010-04-01/Accounts/{sid}/Messages.json", fake.twilio_messages),
    ])
    serve_in_thread(app, port)
    return fake


def stack_env(fake: FakeProviders) -> dict[str, Any]:
    """Environment that switches every channel on against the fake providers."""
    return {
        "WECHAT_TOKEN": WECHAT_TOKEN,
        "WECHAT_APP_ID": WECHAT_APP_ID,
        "WECHAT_APP_SECRET": WECHAT_APP_SECRET,
        "WECHAT_AES_KEY": WECHAT_AES_KEY,
        "WECHAT_API_BASE": fake.base_url,
        "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": TWILIO_FROM_NUMBER,
        "TWILIO_TRANSFER_NUMBER": TWILIO_TRANSFER_NUMBER,
        "TWILIO_API_BASE": fake.base_url,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "LINLI_OUTBOX_POLL_S": "0.2",
    }
