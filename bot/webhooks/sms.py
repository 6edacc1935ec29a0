"""Twilio's messaging webhook: POST /twilio/sms, answered with TwiML.

Order matters: size and content type first (cheap, before any parsing of untrusted
bytes), then the signature, and only then does anything reach the hub and the
database. A forged request is refused before a row is written.
"""
from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict

from bot.webkeys import APP, HUB
from channels.twilio_sms import InvalidSms, parse_sms, render_sms, verify

log = logging.getLogger(__name__)

PATH = "/twilio/sms"
# A Twilio messaging webhook is a few KB even with ten media URLs; 64 KB leaves room for
# long concatenated texts (1,600 characters, percent-encoded UTF-8 is ~15 KB).
MAX_BODY_BYTES = 64 * 1024
# Twilio sends about 20 fields plus 3 per media item; anything far beyond is not Twilio.
MAX_FIELDS = 200
FORM = "application/x-www-form-urlencoded"
BUSY = "系统忙，请稍后再试。"


class BadForm(ValueError):
    """The body is not a form Twilio would send; the message says what is wrong."""


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8")


def _twiml(replies: list[str]) -> web.Response:
    return web.Response(text=render_sms(replies), content_type="text/xml", charset="utf-8")


async def read_form(request: web.Request) -> MultiDict[str]:
    """Read a capped urlencoded body into a MultiDict, keeping repeated keys and blank values.

    Repeated keys are kept as a MultiDict because twilio's RequestValidator reads them
    with getall() and signs every distinct value; collapsing them to one would make a
    genuine request fail (or let a second value ride along unsigned).
    """
    if request.content_type != FORM:
        raise BadForm(f"send {FORM}, as Twilio does; got {request.content_type or 'nothing'}")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise BadForm(f"the form must be UTF-8, got charset {charset}")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadForm(f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadForm(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        pairs = parse_qsl(bytes(body).decode("utf-8"), keep_blank_values=True,
                          encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError as exc:
        raise BadForm("the form is not valid UTF-8") from exc
    except ValueError as exc:  # more than MAX_FIELDS fields
        raise BadForm(f"the form has more than {MAX_FIELDS} fields") from exc
    return MultiDict(pairs)


def public_url(request: web.Request) -> str:
    """Return the URL Twilio called: the public base URL plus the path and query as sent.

    Behind a reverse proxy the hub sees http://127.0.0.1:8000/..., but Twilio signed
    https://linli.example.org/...; raw_path keeps the query's encoding byte for byte.
    """
    base = request.app[APP].settings.public_base_url.rstrip("/")
    if not base:
        base = f"{request.scheme}://{request.host}"
    return base + request.raw_path


async def twilio_sms(request: web.Request) -> web.Response:
    """Verify, parse and answer one inbound SMS/MMS."""
    twilio = request.app[APP].settings.twilio
    if twilio is None:
        return _plain(404, "SMS is not configured on this server")
    try:
        form = await read_form(request)
    except BadForm as exc:
        refused = _plain(400, str(exc))
        refused.force_close()  # the unread rest of the body must not become a request
        return refused
    signature = request.headers.get("X-Twilio-Signature")
    if not verify(auth_token=twilio.auth_token.reveal(), url=public_url(request),
                  params=form, signature=signature):
        log.warning("refused an SMS webhook with a %s signature",
                    "forged" if signature else "missing")
        return _plain(403, "invalid X-Twilio-Signature")
    try:
        inbound = parse_sms(form)
    except InvalidSms as exc:
        return _plain(400, str(exc))
    try:
        outcome = await request.app[HUB].handle(inbound)
    except Exception:
        # The resident must never see an error page, and Twilio would only show them
        # nothing; a short apology asks them to try again.
        log.exception("SMS %s could not be handled", inbound.provider_message_id)
        return _twiml([BUSY])
    if outcome.duplicate:
        # Twilio retried a message already answered: the first answer stands.
        return _twiml([])
    try:
        return _twiml(list(outcome.replies))
    except Exception:
        log.exception("replies to SMS %s could not be rendered", inbound.provider_message_id)
        return _twiml([BUSY])


def routes() -> list[web.RouteDef]:
    """Return the SMS webhook route; web.py adds it when Twilio credentials are set."""
    return [web.post(PATH, twilio_sms)]
