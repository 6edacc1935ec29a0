"""Twilio SMS/MMS: verify the webhook, parse it into an Inbound, render replies as TwiML.

Pure functions only; the aiohttp handler that calls them lives with the web app.
Chinese text always travels as UCS-2, so one SMS segment holds 70 UTF-16 units, or 67
when a message is split into concatenated segments (the rest is the concatenation
header). A long reply is cut, at Chinese punctuation, into bodies of at most two segments
each: a few short texts rather than one long concatenation that older handsets show
in pieces.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from bot.conversations import InvalidPhone, normalize_phone
from bot.inbound import Inbound
from channels.menus import MAX_MENU_OPTIONS, keyword, numbered_menu, read_menu_choice

CHANNEL = "sms"
SINGLE_SEGMENT_UNITS = 70
CONCAT_SEGMENT_UNITS = 67
# Twilio accepts at most 10 media items per MMS.
MAX_MEDIA = 10

# Twilio's default opt-out and opt-in keywords (Advanced Opt-Out guide,
# https://www.twilio.com/docs/messaging/tutorials/advanced-opt-out), plus the words
# Chinese carriers teach residents: "回复TD退订".
_STOP_WORDS = frozenset({
    "stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout",
    "td", "退订", "取消订阅", "退订短信", "退出订阅",
})
_START_WORDS = frozenset({"start", "yes", "unstop", "订阅", "重新订阅", "恢复订阅"})

_SENTENCE_END = frozenset("。！？!?；;…\n")
_CLAUSE_END = frozenset("，、,：:）)」』”’》】~～ \t\r\u3000")
_CLOSERS = frozenset("）)」』”’》】")
_TOKEN_CHAR = re.compile(r"[A-Za-z0-9\-]")



class InvalidSms(ValueError):
    """A webhook body that is not a Twilio inbound message; the message says what is missing."""


def verify(*, auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    """Check X-Twilio-Signature against the public URL Twilio called and the POSTed form.

    `url` must be what Twilio saw (scheme, host, path and query), not the address behind
    a proxy. An unset auth token fails closed: an empty HMAC key is one anyone can use.
    """
    if not signature or not auth_token:
        return False
    return bool(RequestValidator(auth_token).validate(url, params, signature))


def parse_sms(params: Mapping[str, str]) -> Inbound:
    """Turn a verified Twilio messaging webhook into an Inbound for the hub."""
    sender = (params.get("From") or "").strip()
    message_sid = (params.get("MessageSid") or "").strip()
    if not sender:
        raise InvalidSms("Twilio webhook has no From; point the number's messaging webhook here")
    if not message_sid:
        raise InvalidSms("Twilio webhook has no MessageSid; only inbound messages are accepted")
    phone = _chinese_phone(sender)
    media = _media(params)
    return Inbound(
        channel=CHANNEL,
        # Same key as the message API uses for this resident, so both share a conversation.
        sender_key=phone or sender,
        text=params.get("Body") or "",
        provider_message_id=message_sid,
        phone=phone,
        payload={"media": media} if media else None,
    )


def _chinese_phone(sender: str) -> str | None:
    # A foreign or short-code sender is still answered, just not linked to a resident.
    try:
        return normalize_phone(sender)
    except InvalidPhone:
        return None


def _media(params: Mapping[str, str]) -> list[dict[str, str]]:
    raw = (params.get("NumMedia") or "0").strip()
    if not raw.isdigit():
        raise InvalidSms(f"NumMedia must be a whole number, got {raw!r}")
    items: list[dict[str, str]] = []
    for index in range(min(int(raw), MAX_MEDIA)):
        url = params.get(f"MediaUrl{index}")
        if not url:
            continue
        content_type = params.get(f"MediaContentType{index}") or "application/octet-stream"
        items.append({"url": url, "content_type": content_type})
    return items


def is_stop(text: str) -> bool:
    """Return True when the whole message is an opt-out keyword (STOP, TD, 退订 ...)."""
    return keyword(text) in _STOP_WORDS


def is_start(text: str) -> bool:
    """Return True when the whole message is an opt-in keyword; act on it only if opted out."""
    return keyword(text) in _START_WORDS


def ucs2_units(text: str) -> int:
    """Count UTF-16 code units: what a UCS-2 SMS segment is measured in."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def ucs2_segments(text: str) -> list[str]:
    """Split text the way a carrier sends it: 70 units alone, else 67-unit parts, pairs whole."""
    if not text:
        return []
    if ucs2_units(text) <= SINGLE_SEGMENT_UNITS:
        return [text]
    segments: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        width = 2 if ord(ch) > 0xFFFF else 1
        if used + width > CONCAT_SEGMENT_UNITS:
            segments.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += width
    segments.append("".join(current))
    return segments


def segment_count(text: str) -> int:
    """Return how many SMS segments the text costs in UCS-2."""
    return len(ucs2_segments(text))


def _graphemes(text: str) -> list[str]:
    """Group code points a reader sees as one symbol: emoji sequences, flags, combining marks."""
    clusters: list[str] = []
    for ch in text:
        code = ord(ch)
        joins = clusters and (
            code == 0x200D
            or clusters[-1].endswith("\u200d")
            or 0xFE00 <= code <= 0xFE0F
            or 0x1F3FB <= code <= 0x1F3FF
            or 0xE0020 <= code <= 0xE007F
            or unicodedata.category(ch).startswith("M")
            or (_is_regional(code) and _open_flag(clusters[-1]))
        )
        if joins:
            clusters[-1] += ch
        else:
            clusters.append(ch)
    return clusters


def _is_regional(code: int) -> bool:
    return 0x1F1E6 <= code <= 0x1F1FF


def _open_flag(cluster: str) -> bool:
    return len(cluster) == 1 and _is_regional(ord(cluster))


def fit_segments(text: str, max_segments: int = 2) -> list[str]:
    """Split text into SMS bodies of at most max_segments UCS-2 segments each.

    Cuts prefer the end of a sentence, then a comma or space, and never fall inside a
    surrogate pair, an emoji sequence or a number such as a ticket number. Whitespace
    at a cut is dropped, as is whitespace around the whole text.
    """
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    text = text.strip()
    if not text:
        return []
    if segment_count(text) <= max_segments:
        return [text]
    clusters = _graphemes(text)
    bodies: list[str] = []
    start = 0
    while start < len(clusters):
        end = _cut(clusters, start, max_segments)
        body = "".join(clusters[start:end]).strip()
        if body:
            bodies.extend(_split_oversized(body, max_segments))
        start = end
        while start < len(clusters) and clusters[start].isspace():
            start += 1
    return bodies


def _cut(clusters: list[str], start: int, max_segments: int) -> int:
    """Return the cluster index where the body starting at `start` should end."""
    limit = start
    while limit < len(clusters) and segment_count(
        "".join(clusters[start:limit + 1]).strip()
    ) <= max_segments:
        limit += 1
    if limit == len(clusters):
        return limit
    if limit == start:
        return start + 1  # one cluster longer than a body: _split_oversized handles it
    shortest = start + max(1, (limit - start) // 3)
    for wanted in (_ends_sentence, _ends_clause, _between_tokens):
        for end in range(limit, shortest - 1, -1):
            if wanted(clusters, end):
                return end
    return limit


def _ends_sentence(clusters: list[str], end: int) -> bool:
    last = clusters[end - 1]
    if last in _SENTENCE_END:
        return True
    return last in _CLOSERS and end >= 2 and clusters[end - 2] in _SENTENCE_END


def _ends_clause(clusters: list[str], end: int) -> bool:
    return clusters[end - 1] in _CLAUSE_END or clusters[end].isspace()


def _between_tokens(clusters: list[str], end: int) -> bool:
    return not (_TOKEN_CHAR.fullmatch(clusters[end - 1]) and _TOKEN_CHAR.fullmatch(clusters[end]))


def _split_oversized(body: str, max_segments: int) -> list[str]:
    # Only a single absurd emoji sequence gets here; cut it by code point as a last resort.
    if segment_count(body) <= max_segments:
        return [body]
    parts: list[str] = []
    current = ""
    for ch in body:
        if segment_count(current + ch) > max_segments:
            parts.append(current)
            current = ""
        current += ch
    return [*parts, current] if current else parts


def render_sms(replies: list[str]) -> str:
    """Render the bot's replies as a TwiML MessagingResponse, each body at most two segments."""
    response = MessagingResponse()
    for reply in replies:
        for body in fit_segments(reply, max_segments=2):
            response.message(body)
    return str(response)


__all__ = ["MAX_MENU_OPTIONS", "numbered_menu", "read_menu_choice"]
