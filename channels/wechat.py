"""WeChat Official Account channel: verify, parse and answer pushes; no network, no I/O.

The web handler passes the raw body and query parameters in, gets a hub-ready
`WeChatInbound` back, and renders a passive reply (or answers `SUCCESS` and sends
later through the customer-service API, within the `ServiceWindow`).
"""
from __future__ import annotations

import asyncio
import binascii
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_et
from defusedxml import DefusedXmlException
from wechatpy.crypto import WeChatCrypto
from wechatpy.events import EVENT_TYPES
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.messages import MESSAGE_TYPES, UnknownMessage
from wechatpy.replies import TextReply
from wechatpy.utils import WeChatSigner

from bot.inbound import Inbound

CHANNEL = "wechat"
SUCCESS = "success"  # an empty-handed answer inside 5 s stops WeChat's retries
MAX_BODY_BYTES = 64 * 1024
MAX_XML_DEPTH = 6
MAX_CLOCK_SKEW = timedelta(minutes=5)
SERVICE_WINDOW = timedelta(hours=48)
SERVICE_WINDOW_QUOTA = 5
TOKEN_URL = "https://api.weixin.qq.com/cgi-bin/token"
CUSTOMER_SERVICE_URL = "https://api.weixin.qq.com/cgi-bin/message/custom/send"
# errcodes of the WeChat API: the token is no longer valid / the service window is closed.
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
WINDOW_ERRCODES = frozenset({45015, 45047})

# Custom menu: button key -> what the resident is taken to have said. The menu must be
# created with exactly these keys (see menu_definition()).
MENU_KEYS: dict[str, str] = {
    "LINLI_REPORT": "报修",
    "LINLI_PROGRESS": "查询进度",
    "LINLI_HUMAN": "转人工",
}

# Domain responses the lead answers with directly, without asking the bot.
REPLY_WELCOME = "utter_greet"
REPLY_VOICE_UNCLEAR = "utter_voice_unclear"
REPLY_UNSUPPORTED = "utter_unsupported_message"

Kind = Literal[
    "text", "voice", "image", "location", "subscribe", "unsubscribe", "click",
    "ignored", "unsupported",
]
_HUB_KINDS = frozenset({"text", "voice", "image", "location", "click"})
# Events the resident did not address to us (menu links, periodic location, job reports).
_SILENT_EVENTS = frozenset({"view", "location", "scan", "templatesendjobfinish",
                            "masssendjobfinish", "view_miniprogram"})
_IDENTIFIER = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_CDATA = re.compile(r"<!\[CDATA\[.*?\]\]>", re.S)
_DECLARATION = re.compile(r"<!\s*[A-Za-z]")
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class WeChatError(Exception):
    """Base of every error raised by the WeChat channel."""


class InvalidSignature(WeChatError):
    """The request is not signed with our token; answer HTTP 403 and drop it."""


class StaleRequest(InvalidSignature):
    """The signed timestamp is too far from our clock; a replay, or fix the server clock."""


class MalformedMessage(WeChatError):
    """The body is not a WeChat message we can read; answer HTTP 400."""


class UnsafeXml(MalformedMessage):
    """The body declares a DOCTYPE or entities; WeChat never does, so it is an attack."""


class MessageTooLarge(MalformedMessage):
    """The body exceeds MAX_BODY_BYTES; answer HTTP 413 and cap the request size earlier."""


class WeChatConfigError(WeChatError):
    """The WeChat settings are wrong; fix the token, app id or EncodingAESKey."""


class ServiceWindowClosed(WeChatError):
    """The customer-service window is closed for this resident; send by SMS instead."""


class TokenFetchError(WeChatError):
    """WeChat refused to issue an access token; check app id, secret and IP allow-list."""


# --- signatures -------------------------------------------------------------------------


def _signature(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


def _same(expected: str, given: str | None) -> bool:
    # Constant-time, and bytes so that a non-ASCII forgery cannot raise TypeError.
    return bool(given) and hmac.compare_digest(expected.encode(), given.encode("utf-8"))


def check_signature(*, token: str, signature: str | None, timestamp: str | None,
                    nonce: str | None) -> bool:
    """Return whether `signature` is WeChat's SHA-1 of token, timestamp and nonce."""
    if not token or not timestamp or not nonce:
        return False
    return _same(_signature(token, timestamp, nonce), signature)


def verify_url(*, token: str, signature: str | None, timestamp: str | None,
               nonce: str | None, echostr: str | None) -> str:
    """Answer WeChat's server-URL check: return echostr if the request is signed by us."""
    if not echostr or not check_signature(
        token=token, signature=signature, timestamp=timestamp, nonce=nonce
    ):
        raise InvalidSignature("URL check not signed with our token; compare the console token")
    return echostr


def make_crypto(*, token: str, aes_key: str, app_id: str) -> WeChatCrypto:
    """Build the safe-mode cipher from the console's 43-character EncodingAESKey."""
    if len(aes_key) != 43:
        raise WeChatConfigError("EncodingAESKey must be the 43 characters shown in the console")
    try:
        return WeChatCrypto(token, aes_key, app_id)
    except (binascii.Error, ValueError, AssertionError) as exc:
        raise WeChatConfigError("EncodingAESKey is not valid base64; copy it again") from exc


def _check_fresh(timestamp: str, now: datetime | None, max_skew: timedelta) -> None:
    if now is None:
        return
    try:
        signed_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidSignature("timestamp is not a Unix time") from exc
    if abs(_aware(now) - signed_at) > max_skew:
        raise StaleRequest(f"signed at {signed_at.isoformat()}, more than {max_skew} away")


# --- safe XML ---------------------------------------------------------------------------


def _to_value(element: Element, depth: int) -> Any:
    if depth > MAX_XML_DEPTH:
        raise MalformedMessage("XML nested too deeply for a WeChat message")
    children = list(element)
    if not children:
        return element.text or ""
    nested: dict[str, Any] = {}
    for child in children:
        value = _to_value(child, depth + 1)
        if child.tag not in nested:
            nested[child.tag] = value
        elif isinstance(nested[child.tag], list):
            nested[child.tag].append(value)
        else:
            nested[child.tag] = [nested[child.tag], value]
    return nested


def parse_xml(body: bytes | str) -> dict[str, Any]:
    """Parse one WeChat XML document into a dict, refusing anything a parser could abuse."""
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if len(raw) > MAX_BODY_BYTES:
        raise MessageTooLarge(f"body has {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        text = raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise MalformedMessage("body is not UTF-8 text") from exc
    if not text.strip():
        raise MalformedMessage("body is empty")
    # Rejected before any parser runs: a DOCTYPE is the door to entity bombs and XXE.
    if _DECLARATION.search(_CDATA.sub("", text)):
        raise UnsafeXml("XML declarations (DOCTYPE, ENTITY) are not accepted")
    try:
        root = safe_et.fromstring(text, forbid_dtd=True, forbid_entities=True,
                                  forbid_external=True)
    except DefusedXmlException as exc:
        raise UnsafeXml("XML declarations (DOCTYPE, ENTITY) are not accepted") from exc
    except (ParseError, ValueError) as exc:
        raise MalformedMessage(f"body is not well-formed XML: {exc}") from exc
    if root.tag != "xml":
        raise MalformedMessage(f"root element is <{root.tag}>, expected <xml>")
    fields: dict[str, Any] = {}
    for child in root:
        if child.tag in fields:
            # Two FromUserName fields could be read differently by two readers.
            raise MalformedMessage(f"field {child.tag} appears twice")
        fields[child.tag] = _to_value(child, 1)
    return fields


# --- inbound messages -------------------------------------------------------------------


@dataclass(frozen=True)
class WeChatInbound:
    """A verified WeChat push: the hub's Inbound plus what the handler needs to answer it."""

    kind: Kind
    inbound: Inbound
    account: str  # our official account (ToUserName): the sender of any passive reply
    created_at: datetime
    msg_type: str
    event: str | None = None
    encrypted: bool = False  # safe mode: the passive reply must be encrypted too
    reply_hint: str | None = None  # domain response to answer with instead of the bot

    @property
    def openid(self) -> str:
        return self.inbound.sender_key

    @property
    def for_hub(self) -> bool:
        """Return whether the resident said something the conversation hub should handle."""
        return self.kind in _HUB_KINDS and self.reply_hint is None


def parse_message(
    body: bytes | str,
    *,
    token: str,
    app_id: str,
    aes_key: str | None = None,
    signature: str | None = None,
    msg_signature: str | None = None,
    timestamp: str | None,
    nonce: str | None,
    now: datetime | None = None,
    max_skew: timedelta = MAX_CLOCK_SKEW,
) -> WeChatInbound:
    """Verify and parse one push; safe mode (aes_key set) decrypts and checks msg_signature.

    Pass the query parameters as WeChat sent them; with `now`, pushes signed more than
    `max_skew` away are refused, which stops replays of captured requests.
    """
    if not timestamp or not nonce:
        raise InvalidSignature("timestamp and nonce are required")
    if aes_key is None:
        # The plaintext signature does not cover the body: check it before parsing anything.
        if not check_signature(token=token, signature=signature, timestamp=timestamp,
                               nonce=nonce):
            raise InvalidSignature("push not signed with our token")
        _check_fresh(timestamp, now, max_skew)
        fields = parse_xml(body)
        if "MsgType" not in fields:
            raise MalformedMessage("encrypted push but no aes_key configured; set it")
        return _interpret(fields, encrypted=False)

    outer = parse_xml(body)
    encrypt = outer.get("Encrypt")
    if not isinstance(encrypt, str) or not encrypt:
        raise MalformedMessage("expected a safe-mode push with <Encrypt>; check the console mode")
    if not _same(_signature(token, timestamp, nonce, encrypt), msg_signature):
        raise InvalidSignature("msg_signature does not match the encrypted body")
    _check_fresh(timestamp, now, max_skew)
    crypto = make_crypto(token=token, aes_key=aes_key, app_id=app_id)
    try:
        plain = crypto.decrypt_message({"Encrypt": encrypt}, msg_signature, timestamp, nonce)
    except (InvalidAppIdException, InvalidSignatureException) as exc:
        raise InvalidSignature("encrypted push is for another app id") from exc
    except Exception as exc:  # noqa: BLE001 - bad base64, padding or length: all "garbage"
        raise MalformedMessage("encrypted body cannot be decrypted with our key") from exc
    return _interpret(parse_xml(plain), encrypted=True)


def _field(fields: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = fields.get(name, "")
    if not isinstance(value, str):
        raise MalformedMessage(f"field {name} must be text")
    if required and not value.strip():
        raise MalformedMessage(f"field {name} is missing")
    return value.strip() if required else value


def _identifier(fields: Mapping[str, Any], name: str) -> str:
    value = _field(fields, name, required=True)
    if not _IDENTIFIER.fullmatch(value):
        raise MalformedMessage(f"field {name} is not a WeChat id")
    return value


def _interpret(fields: dict[str, Any], *, encrypted: bool) -> WeChatInbound:
    openid = _identifier(fields, "FromUserName")
    account = _identifier(fields, "ToUserName")
    msg_type = _field(fields, "MsgType", required=True).lower()
    create_time = _field(fields, "CreateTime", required=True)
    try:
        created_at = datetime.fromtimestamp(int(create_time), tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise MalformedMessage("CreateTime is not a Unix time") from exc

    event = _field(fields, "Event", required=True).lower() if msg_type == "event" else None
    if event is None and any(not isinstance(value, str) for value in fields.values()):
        raise MalformedMessage("message fields must be text")
    message = (EVENT_TYPES if event else MESSAGE_TYPES).get(event or msg_type, UnknownMessage)(
        fields
    )
    msg_id = _field(fields, "MsgId").strip()
    # WeChat retries a push with the same MsgId; events have none, so their documented
    # de-duplication key is sender + CreateTime (the event name keeps two apart).
    provider_id = msg_id if msg_id.isdigit() else f"{openid}:{create_time}:{event or msg_type}"

    def build(kind: Kind, text: str = "", payload: dict[str, Any] | None = None,
              hint: str | None = None) -> WeChatInbound:
        inbound = Inbound(channel=CHANNEL, sender_key=openid, text=text,
                          provider_message_id=provider_id, wechat_openid=openid,
                          payload=payload)
        return WeChatInbound(kind=kind, inbound=inbound, account=account,
                             created_at=created_at, msg_type=msg_type, event=event,
                             encrypted=encrypted, reply_hint=hint)

    if msg_type == "text":
        return build("text", _field(fields, "Content"))
    if msg_type == "voice":
        heard = (message.recognition or "").strip()
        voice = {"media_id": message.media_id, "format": message.format,
                 "recognized": any(ch.isalnum() for ch in heard)}
        if not voice["recognized"]:
            return build("voice", "", {"voice": voice}, REPLY_VOICE_UNCLEAR)
        return build("voice", heard, {"voice": voice})
    if msg_type == "image":
        return build("image", "", {"image": {"url": message.image, "media_id": message.media_id}})
    if msg_type == "location":
        return build("location", *_location(message.location_x, message.location_y,
                                            message.label, message.scale))
    if event == "subscribe":
        key = message.key or ""
        scene = key[len("qrscene_"):] if key.startswith("qrscene_") else None
        return build("subscribe", "", {"event": "subscribe", "scene": scene}, REPLY_WELCOME)
    if event == "unsubscribe":
        return build("unsubscribe", "", {"event": "unsubscribe"})
    if event == "click":
        key = (message.key or "").strip()
        if key in MENU_KEYS:
            return build("click", MENU_KEYS[key], {"event": "click", "key": key})
        return build("unsupported", "", {"event": "click", "key": key}, REPLY_UNSUPPORTED)
    if event is not None and event in _SILENT_EVENTS:
        return build("ignored", "", {"event": event})
    return build("unsupported", "", {"msg_type": msg_type, "event": event}, REPLY_UNSUPPORTED)


def _location(lat_raw: str | None, lng_raw: str | None, label: str | None,
              scale: str | None) -> tuple[str, dict[str, Any]]:
    try:
        lat, lng = float(lat_raw or ""), float(lng_raw or "")
    except ValueError as exc:
        raise MalformedMessage("Location_X/Location_Y are not numbers") from exc
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        raise MalformedMessage("location is outside the globe")
    label = (label or "").strip()
    location = {"lat": lat, "lng": lng, "label": label, "scale": scale or None}
    return label, {"location": location}


# --- replies ----------------------------------------------------------------------------


def _clean_reply(text: str) -> str:
    # Characters XML 1.0 forbids would make WeChat drop the whole reply.
    cleaned = _XML_ILLEGAL.sub("", text).strip()
    if not cleaned:
        raise ValueError("reply text is empty; send SUCCESS instead of an empty reply")
    return cleaned


def render_text_reply(*, to_user: str, from_user: str, text: str, now: datetime,
                      crypto: WeChatCrypto | None = None, nonce: str | None = None) -> str:
    """Render a passive text reply (to_user = resident openid, from_user = our account)."""
    for name, value in (("to_user", to_user), ("from_user", from_user)):
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"{name} must be a WeChat id, got {value!r}")
    # wechatpy writes Content as raw CDATA; a "]]>" in the text would end it early.
    content = _clean_reply(text).replace("]]>", "]]]]><![CDATA[>")
    created = int(_aware(now).timestamp())
    xml = TextReply(source=from_user, target=to_user, content=content, time=created).render()
    if crypto is None:
        return xml
    if not nonce:
        raise ValueError("pass the request's nonce to encrypt a safe-mode reply")
    return crypto.encrypt_message(xml, nonce, str(created))


def customer_service_payload(openid: str, text: str) -> dict[str, Any]:
    """Build the JSON body of a customer-service text message (POST CUSTOMER_SERVICE_URL)."""
    if not _IDENTIFIER.fullmatch(openid):
        raise ValueError(f"openid must be a WeChat id, got {openid!r}")
    return {"touser": openid, "msgtype": "text", "text": {"content": _clean_reply(text)}}


def menu_definition() -> dict[str, Any]:
    """Build the custom-menu body (POST cgi-bin/menu/create) whose keys parse_message knows."""
    return {"button": [{"type": "click", "name": label, "key": key}
                       for key, label in MENU_KEYS.items()]}


def api_error_kind(body: Mapping[str, Any]) -> Literal["ok", "token", "window", "other"]:
    """Classify a WeChat API answer: retry once with a fresh token, or fall back to SMS."""
    code = body.get("errcode", 0)
    if code == 0:
        return "ok"
    if code in TOKEN_ERRCODES:
        return "token"
    return "window" if code in WINDOW_ERRCODES else "other"


# --- customer-service window -------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("pass a timezone-aware datetime")
    return moment


@dataclass
class ServiceWindow:
    """Track one resident's customer-service window: 5 messages within 48 h of their last.

    Each resident message resets the quota to 5 (quotas do not add up). Menu clicks and
    subscriptions grant only 3 messages for 1 minute, which a passive reply covers; do not
    record them here.
    """

    last_inbound_at: datetime | None = None
    sent_since_inbound: int = 0

    def record_inbound(self, at: datetime) -> None:
        """Open a fresh window at the resident's message; an older, late message is ignored."""
        at = _aware(at)
        if self.last_inbound_at is not None and at <= self.last_inbound_at:
            return
        self.last_inbound_at = at
        self.sent_since_inbound = 0

    def expires_at(self) -> datetime | None:
        """Return when the window closes, or None if the resident never wrote."""
        return None if self.last_inbound_at is None else self.last_inbound_at + SERVICE_WINDOW

    def remaining(self, now: datetime) -> int:
        """Return how many messages may still be sent at `now`."""
        closes = self.expires_at()
        if closes is None or not (self.last_inbound_at <= _aware(now) < closes):
            return 0
        return max(SERVICE_WINDOW_QUOTA - self.sent_since_inbound, 0)

    def can_send(self, now: datetime) -> bool:
        """Return whether a customer-service message may be sent at `now`."""
        return self.remaining(now) > 0

    def record_sent(self, at: datetime) -> None:
        """Count one message sent at `at`; refuse if the window was closed."""
        if not self.can_send(at):
            raise ServiceWindowClosed("customer-service window closed; send this by SMS")
        self.sent_since_inbound += 1


# --- access token -----------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedToken:
    """An access token as WeChat issued it."""

    value: str
    expires_in: int  # seconds, 7200 today


TokenFetcher = Callable[[], Awaitable[FetchedToken]]


async def fetch_usable(fetcher: TokenFetcher, margin: timedelta) -> tuple[str, timedelta]:
    """Fetch a token; return it and how long to use it before fetching the next one.

    Refresh a margin early; a short-lived token still gets half its life.
    """
    fetched = await fetcher()
    if not fetched.value or fetched.expires_in <= 0:
        raise TokenFetchError("fetcher returned an empty or expired token")
    lifetime = timedelta(seconds=fetched.expires_in)
    return fetched.value, max(lifetime - margin, lifetime / 2)


def parse_token_response(body: Mapping[str, Any]) -> FetchedToken:
    """Read the JSON answer of TOKEN_URL; raise TokenFetchError on an errcode."""
    if body.get("errcode"):
        raise TokenFetchError(f"WeChat errcode {body.get('errcode')}: {body.get('errmsg')}")
    value, expires_in = body.get("access_token"), body.get("expires_in")
    if not isinstance(value, str) or not value or not isinstance(expires_in, int):
        raise TokenFetchError("token answer lacks access_token/expires_in")
    return FetchedToken(value, expires_in)


class AccessTokenCache(Protocol):
    """One access token shared by every sender of an app id.

    WeChat invalidates the previous token whenever a new one is fetched, so exactly one
    component may fetch. A Redis implementation keeps the token under one key with a TTL,
    takes a SET NX lock to refresh, and implements `refresh(stale=...)` as compare-then-fetch.
    """

    async def get(self) -> str:
        """Return a valid token, fetching one if there is none or it is about to expire."""
        ...

    async def refresh(self, *, stale: str | None = None) -> str:
        """Fetch a new token unless `stale` was already replaced; None forces a fetch."""
        ...


class InProcessAccessTokenCache:
    """AccessTokenCache for a single process; concurrent callers share one fetch."""

    def __init__(self, *, fetcher: TokenFetcher, clock: Callable[[], datetime],
                 margin: timedelta = timedelta(minutes=5)) -> None:
        self._fetcher = fetcher
        self._clock = clock
        self._margin = margin
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at: datetime | None = None

    def _current(self) -> str | None:
        if self._token is None or self._refresh_at is None:
            return None
        return self._token if _aware(self._clock()) < self._refresh_at else None

    async def get(self) -> str:
        """Return a valid token, fetching one if there is none or it is about to expire."""
        token = self._current()
        if token is not None:
            return token
        async with self._lock:
            # Another caller may have fetched while this one waited for the lock.
            return self._current() or await self._fetch()

    async def refresh(self, *, stale: str | None = None) -> str:
        """Fetch a new token unless `stale` was already replaced; None forces a fetch."""
        async with self._lock:
            current = self._current()
            if stale is not None and current is not None and current != stale:
                return current
            self._token = self._refresh_at = None  # never hand out a rejected token again
            return await self._fetch()

    async def _fetch(self) -> str:
        token, usable = await fetch_usable(self._fetcher, self._margin)
        self._token, self._refresh_at = token, _aware(self._clock()) + usable
        return token
