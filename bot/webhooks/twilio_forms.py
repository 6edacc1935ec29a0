"""What Twilio's SMS and voice webhooks share: a capped form body and the signed URL.

Order matters: size and content type first (cheap, before any parsing of untrusted
bytes), then the signature, and only then does anything reach the hub and the
database. A forged request is refused before a row is written.
"""
from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict

from bot.webkeys import APP
from channels.twilio_sms import verify

FORM = "application/x-www-form-urlencoded"


class BadForm(ValueError):
    """The body is not a form Twilio would send; the message says what is wrong."""


async def read_form(request: web.Request, *, max_bytes: int, max_fields: int) -> MultiDict[str]:
    """Read a capped urlencoded body into a MultiDict, keeping repeated keys and blank values.

    Repeated keys are kept because twilio's RequestValidator reads them with getall() and
    signs every distinct value; collapsing them to one would make a genuine request fail
    (or let a second value ride along unsigned).
    """
    if request.content_type != FORM:
        raise BadForm(f"send {FORM}, as Twilio does; got {request.content_type or 'nothing'}")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise BadForm(f"the form must be UTF-8, got charset {charset}")
    if request.content_length is not None and request.content_length > max_bytes:
        raise BadForm(f"the body is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > max_bytes:
            raise BadForm(f"the body is larger than {max_bytes} bytes")
    try:
        pairs = parse_qsl(bytes(body).decode("utf-8"), keep_blank_values=True,
                          encoding="utf-8", errors="strict", max_num_fields=max_fields)
    except UnicodeDecodeError as exc:
        raise BadForm("the form is not valid UTF-8") from exc
    except ValueError as exc:  # more than max_fields fields
        raise BadForm(f"the form has more than {max_fields} fields") from exc
    return MultiDict(pairs)


def refuse_form(error: BadForm) -> web.Response:
    """Answer 400 and close the connection: the unread rest of the body is not a request."""
    refused = web.Response(status=400, text=str(error), content_type="text/plain",
                           charset="utf-8")
    refused.force_close()
    return refused


def public_url(request: web.Request) -> str:
    """Return the URL Twilio called: the public base URL plus the path and query as sent.

    Behind a reverse proxy the hub sees http://127.0.0.1:8000/..., but Twilio signed
    https://linli.example.org/...; raw_path keeps the query's encoding byte for byte.
    """
    base = request.app[APP].settings.public_base_url.rstrip("/")
    if not base:
        base = f"{request.scheme}://{request.host}"
    return base + request.raw_path


def signed_by_twilio(request: web.Request, form: MultiDict[str]) -> bool:
    """Check X-Twilio-Signature with our auth token (False when Twilio is not configured)."""
    twilio = request.app[APP].settings.twilio
    if twilio is None:
        return False
    return verify(auth_token=twilio.auth_token.reveal(), url=public_url(request), params=form,
                  signature=request.headers.get("X-Twilio-Signature"))
