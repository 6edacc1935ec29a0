"""Sandbox mode: try the WeChat and Twilio channels on one machine, with no accounts at all.

LOOPBACK DEMO ONLY. When `make run` finds no channel credentials, it generates throwaway
ones (var/sandbox-credentials.json, mode 0600), points the hub's outbound API bases at the
hub itself, and the routes below play WeChat's access-token and customer-service APIs and
Twilio's Messages API. Whatever a resident would have received is kept in memory, so
`python -m bot simulate` can show it. Nothing here reaches a real provider, and the routes
answer only loopback clients: never expose a sandbox hub to a network.

The fakes check credentials as the real APIs do (wrong secret, stale token, wrong account
or auth token all get the provider's own error), so the hub's senders are exercised on
their error paths too, not just the happy one.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import secrets
import string
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.conversations import InvalidPhone, normalize_phone
from bot.settings import Settings, credentials_file_values

SANDBOX_FILE = "sandbox-credentials.json"
PREFIX = "/sandbox"
MAX_RECORDED = 500
# Twilio's documented magic test number: valid as a From, never a real line.
TWILIO_TEST_FROM = "+15005550006"
TWILIO_MAX_BODY_CHARS = 1600
WECHAT_TOKEN_LIFETIME_S = 7200
# WeChat keeps the previous access token usable for five minutes after a refresh.
WECHAT_OLD_TOKEN_GRACE_S = 300
CREDENTIAL_NAMES = (
    "WECHAT_TOKEN", "WECHAT_APP_ID", "WECHAT_APP_SECRET", "WECHAT_AES_KEY",
    "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER",
)
_ALNUM = string.ascii_letters + string.digits


# --- credentials ------------------------------------------------------------------------


def real_credentials_configured(environ: Mapping[str, str]) -> bool:
    """Return whether any channel credential is set in the environment or credentials.yml.

    A credentials.yml that cannot be read counts as configured: Settings.from_env will
    report it, and a sandbox must never paper over an operator's broken configuration.
    """
    problems: list[str] = []
    values = {**credentials_file_values(environ, problems), **environ}
    return bool(problems) or any(values.get(name, "").strip() for name in CREDENTIAL_NAMES)


def generate_credentials() -> dict[str, str]:
    """Make a fresh set of throwaway credentials shaped like the providers' own."""
    return {
        "WECHAT_TOKEN": secrets.token_hex(16),
        "WECHAT_APP_ID": "wxsandbox" + secrets.token_hex(5)[:9],
        "WECHAT_APP_SECRET": secrets.token_hex(16),
        # The console's EncodingAESKey: 43 letters and digits, base64 of 32 bytes.
        "WECHAT_AES_KEY": "".join(secrets.choice(_ALNUM) for _ in range(43)),
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_FROM_NUMBER": TWILIO_TEST_FROM,
    }


def _valid(values: Any) -> bool:
    if not isinstance(values, dict):
        return False
    if not all(isinstance(values.get(name), str) and values[name] for name in CREDENTIAL_NAMES):
        return False
    try:
        key_ok = len(base64.b64decode(values["WECHAT_AES_KEY"] + "=")) == 32
    except (binascii.Error, ValueError):
        key_ok = False
    return (key_ok and len(values["WECHAT_AES_KEY"]) == 43
            and values["TWILIO_ACCOUNT_SID"].startswith("AC"))


def load_sandbox_credentials(var_dir: Path | str) -> dict[str, str] | None:
    """Return the stored sandbox credentials, or None if there are none (or they are broken)."""
    path = Path(var_dir) / SANDBOX_FILE
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not _valid(values):
        return None
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # someone widened it; these still sign requests
    return {name: values[name] for name in CREDENTIAL_NAMES}


def _store(var_dir: Path, values: dict[str, str]) -> dict[str, str]:
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / SANDBOX_FILE
    document = {
        "_note": "Throwaway credentials for Linli's loopback sandbox; not a real account.",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **values,
    }
    temporary = var_dir / f".{SANDBOX_FILE}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
        if path.exists():
            os.replace(temporary, path)  # the old file was unreadable: start over
            return values
        try:
            os.link(temporary, path)  # fails if a concurrent start wrote one first
        except FileExistsError:
            return load_sandbox_credentials(var_dir) or values
        return values
    finally:
        temporary.unlink(missing_ok=True)


def sandbox_environment(values: Mapping[str, str],
                        environ: Mapping[str, str]) -> dict[str, str]:
    """Return the credentials plus the API bases that point the hub at its own sandbox."""
    host = environ.get("LINLI_HOST", "").strip() or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # the hub calls itself; a wildcard bind address is not a target
    elif ":" in host:
        host = f"[{host}]"
    port = environ.get("LINLI_PORT", "").strip() or "8000"
    base = f"http://{host}:{port}{PREFIX}"
    return {**{name: values[name] for name in CREDENTIAL_NAMES},
            "WECHAT_API_BASE": base, "TWILIO_API_BASE": base, "LINLI_SANDBOX": "1"}


def ensure_sandbox_credentials(var_dir: Path | str,
                               environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return sandbox environment variables, generating credentials once; {} if not wanted.

    Nothing is generated when any real credential is configured (environment or
    credentials.yml) or LINLI_SANDBOX=0: a half-real, half-fake setup would be a trap.
    """
    environ = os.environ if environ is None else environ
    if environ.get("LINLI_SANDBOX", "").strip() == "0" or real_credentials_configured(environ):
        return {}
    values = load_sandbox_credentials(var_dir) or _store(Path(var_dir), generate_credentials())
    return sandbox_environment(values, environ)


def load_sandbox_environment(var_dir: Path | str,
                             environ: Mapping[str, str]) -> dict[str, str]:
    """Return the sandbox environment if credentials were generated before; never create any."""
    values = load_sandbox_credentials(var_dir)
    return sandbox_environment(values, environ) if values else {}


# --- the fake APIs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    """One message the resident would have received."""

    id: int
    channel: str  # "wechat" or "sms"
    to: str
    text: str
    at: str  # ISO 8601, UTC


def address_key(address: str) -> str:
    """Fold an address so +8613800000000 and 13800000000 are the same resident."""
    try:
        return normalize_phone(address)
    except InvalidPhone:
        return address.strip()


def _is_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address((request.remote or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def _wechat_error(code: int, message: str) -> web.Response:
    # WeChat answers API errors with HTTP 200 and an errcode.
    return web.json_response({"errcode": code, "errmsg": f"{message} rid: sandbox"})


def _twilio_error(status: int, code: int, message: str) -> web.Response:
    body = {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}
    headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


class Sandbox:
    """The fake provider APIs of one hub process, and what they delivered."""

    def __init__(self, settings: Settings | None = None, *, max_recorded: int = MAX_RECORDED,
                 clock: Any = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self.delivered: deque[Delivered] = deque(maxlen=max_recorded)
        self._next_id = 1
        self._tokens: dict[str, float] = {}  # access token -> valid until (clock seconds)

    def settings(self, request: web.Request) -> Settings:
        if self._settings is None:
            from bot.webkeys import APP

            app = request.app.get(APP)
            self._settings = app.settings if app is not None else Settings.from_env()
        return self._settings

    def record(self, channel: str, to: str, text: str) -> Delivered:
        item = Delivered(self._next_id, channel, to, text,
                         datetime.fromtimestamp(self._clock(), UTC).isoformat())
        self._next_id += 1
        self.delivered.append(item)
        return item

    # WeChat ------------------------------------------------------------------------------

    async def wechat_token(self, request: web.Request) -> web.Response:
        wechat = self.settings(request).wechat
        query = request.query
        if query.get("grant_type") != "client_credential":
            return _wechat_error(40002, "invalid grant_type")
        if wechat is None or query.get("appid") != wechat.app_id:
            return _wechat_error(40013, "invalid appid")
        if not secrets.compare_digest(query.get("secret", "").encode(),
                                      wechat.app_secret.reveal().encode()):
            return _wechat_error(40125, "invalid appsecret")
        now = self._clock()
        self._tokens = {token: min(until, now + WECHAT_OLD_TOKEN_GRACE_S)
                        for token, until in self._tokens.items() if until > now}
        token = "sandbox_" + secrets.token_urlsafe(48)
        self._tokens[token] = now + WECHAT_TOKEN_LIFETIME_S
        return web.json_response({"access_token": token, "expires_in": WECHAT_TOKEN_LIFETIME_S})

    async def wechat_send(self, request: web.Request) -> web.Response:
        token = request.query.get("access_token", "")
        if not token:
            return _wechat_error(41001, "access_token missing")
        until = self._tokens.get(token)
        if until is None:
            return _wechat_error(40001, "invalid credential, access_token is invalid or not latest")
        if until <= self._clock():
            return _wechat_error(42001, "access_token expired")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _wechat_error(47001, "data format error")
        if not isinstance(body, dict):
            return _wechat_error(47001, "data format error")
        touser, msgtype = body.get("touser"), body.get("msgtype")
        if not isinstance(touser, str) or not touser.strip():
            return _wechat_error(40003, "invalid openid")
        if msgtype == "text":
            content = body.get("text")
            text = content.get("content") if isinstance(content, dict) else None
            if not isinstance(text, str) or not text.strip():
                return _wechat_error(47001, "data format error")
        elif isinstance(msgtype, str) and msgtype:
            text = f"[{msgtype}]"
        else:
            return _wechat_error(40008, "invalid message type")
        self.record("wechat", touser, text)
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    # Twilio ------------------------------------------------------------------------------

    def _twilio_auth_ok(self, request: web.Request, sid: str, token: str) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == sid and secrets.compare_digest(password.encode(), token.encode())

    async def twilio_messages(self, request: web.Request) -> web.Response:
        twilio = self.settings(request).twilio
        if twilio is None or not self._twilio_auth_ok(request, twilio.account_sid,
                                                      twilio.auth_token.reveal()):
            return _twilio_error(401, 20003, "Authenticate")
        if request.match_info["sid"] != twilio.account_sid:
            return _twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        form = await request.post()
        to, sender = str(form.get("To", "")).strip(), str(form.get("From", "")).strip()
        text = str(form.get("Body", ""))
        media = [str(url) for url in form.getall("MediaUrl", [])]
        if not to:
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        if not sender:
            return _twilio_error(400, 21603, "A 'From' phone number is required.")
        if sender != twilio.from_number:
            return _twilio_error(400, 21606, f"The From phone number {sender} is not a valid, "
                                             f"SMS-capable inbound phone number for your account.")
        if not text.strip() and not media:
            return _twilio_error(400, 21602, "Message body is required.")
        if len(text) > TWILIO_MAX_BODY_CHARS:
            return _twilio_error(400, 21617, "The concatenated message body exceeds the "
                                             f"{TWILIO_MAX_BODY_CHARS} character limit.")
        item = self.record("sms", to, text if text.strip() else " ".join(media))
        sid = "SM" + secrets.token_hex(16)
        created = format_datetime(datetime.fromtimestamp(self._clock(), UTC), usegmt=True)
        return web.json_response({
            "sid": sid, "account_sid": twilio.account_sid, "to": to, "from": sender,
            "body": text, "status": "queued", "direction": "outbound-api",
            "num_media": str(len(media)), "api_version": "2010-04-01",
            "date_created": created, "date_updated": created, "date_sent": None,
            "error_code": None, "error_message": None, "price": None,
            "uri": f"/2010-04-01/Accounts/{twilio.account_sid}/Messages/{sid}.json",
            "sandbox_id": item.id,
        }, status=201)

    # The resident's inbox ----------------------------------------------------------------

    async def messages(self, request: web.Request) -> web.Response:
        raw_after = request.query.get("after", "0").strip() or "0"
        if not raw_after.isdigit():
            return web.json_response({"error": "after must be a message id, e.g. after=0"},
                                     status=400)
        after = int(raw_after)
        to = request.query.get("to", "").strip()
        wanted = address_key(to) if to else None
        items = [asdict(item) for item in self.delivered
                 if item.id > after and (wanted is None or address_key(item.to) == wanted)]
        return web.json_response(items, dumps=lambda value: json.dumps(value, ensure_ascii=False))

    def routes(self) -> list[web.RouteDef]:
        def local(handler: Any) -> Any:
            async def guarded(request: web.Request) -> web.StreamResponse:
                if not _is_loopback(request):
                    return web.json_response({"error": "the sandbox answers loopback only"},
                                             status=403)
                return await handler(request)
            return guarded

        return [
            web.get(f"{PREFIX}/cgi-bin/token", local(self.wechat_token)),
            web.post(f"{PREFIX}/cgi-bin/message/custom/send", local(self.wechat_send)),
            web.post(f"{PREFIX}/2010-04-01/Accounts/{{sid}}/Messages.json",
                     local(self.twilio_messages)),
            web.get(f"{PREFIX}/messages", local(self.messages)),
        ]


def routes(settings: Settings | None = None) -> list[web.RouteDef]:
    """Return the sandbox routes; web.py registers them only when LINLI_SANDBOX=1."""
    return Sandbox(settings).routes()
