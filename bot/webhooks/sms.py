"""Twilio's messaging webhook: POST /twilio/sms, answered with TwiML."""
from __future__ import annotations

import logging

from aiohttp import web

from bot.webhooks.twilio_forms import BadForm, read_form, refuse_form, signed_by_twilio
from bot.webkeys import APP, HUB
from channels.twilio_sms import InvalidSms, parse_sms, render_sms

log = logging.getLogger(__name__)

PATH = "/twilio/sms"
# A Twilio messaging webhook is a few KB even with ten media URLs; 64 KB leaves room for
# long concatenated texts (1,600 characters, percent-encoded UTF-8 is ~15 KB).
MAX_BODY_BYTES = 64 * 1024
# Twilio sends about 20 fields plus 3 per media item; anything far beyond is not Twilio.
MAX_FIELDS = 200
BUSY = "系统忙，请稍后再试。"


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8")


def _twiml(replies: list[str]) -> web.Response:
    return web.Response(text=render_sms(replies), content_type="text/xml", charset="utf-8")


async def twilio_sms(request: web.Request) -> web.Response:
    """Verify, parse and answer one inbound SMS/MMS."""
    twilio = request.app[APP].settings.twilio
    if twilio is None:
        return _plain(404, "SMS is not configured on this server")
    try:
        form = await read_form(request, max_bytes=MAX_BODY_BYTES, max_fields=MAX_FIELDS)
    except BadForm as exc:
        return refuse_form(exc)
    if not signed_by_twilio(request, form):
        log.warning("refused an SMS webhook with a %s signature",
                    "forged" if request.headers.get("X-Twilio-Signature") else "missing")
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
