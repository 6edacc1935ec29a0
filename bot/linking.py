"""One resident across channels: a WeChat follower proves a phone number with an SMS code.

Once linked, "我的工单" in WeChat finds the orders made by SMS or on the hotline, because
those orders are moved onto the WeChat resident. The hub calls `handle` for every message
before the bot sees it, so the common case (not a linking command) must cost a few regex
matches and no query.

Codes are 6 digits, so any fast hash of one is brute-forced offline in a second; scrypt
with a per-row salt makes a leaked row cost hours, far longer than the code lives. Codes
and full phone numbers never reach the logs.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import unicodedata
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.conversations import InvalidPhone, normalize_phone
from bot.models import Conversation, LinkCode, OutboxMessage, Resident, Ticket
from bot.outbox import enqueue
from bot.ticket_view import mask_phone

log = logging.getLogger(__name__)

CODE_TTL = timedelta(minutes=10)
MAX_ATTEMPTS = 5
CODES_PER_HOUR = 3
CODE_INTERVAL = timedelta(minutes=1)
# Several WeChat accounts must not be able to flood one phone with codes either.
PHONE_CODES_PER_HOUR = 5
# Digits sent this soon after a code expired are answered ("expired"); later they are
# ordinary digits for the bot again.
EXPIRED_GRACE = timedelta(minutes=30)

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 24}  # 16 MiB, tens of milliseconds
_SALT_BYTES = 16
_HASH_SCHEME = "scrypt"

_TRAILING = "\\s。.!！~～"
_BIND = re.compile(
    rf"^(?:请|我要|我想)?(?:帮我)?(?:绑定|关联)(?:手机|电话)(?:号码|号)?[\s:：,，]*(?P<number>.*?)[{_TRAILING}]*$"
)
_UNBIND = re.compile(
    rf"^(?:(?:解除|取消)(?:手机|电话)?(?:号码|号)?绑定|解绑)(?:手机|电话)?(?:号码|号)?[{_TRAILING}]*$"
)
_CODE = re.compile(rf"^(?:验证码)?[\s:：是为]*(?P<code>\d{{6}})[{_TRAILING}]*$")
_MOBILE = re.compile(r"1[3-9]\d{9}")

SMS_TEXT = "【邻里】您的验证码是{code}，10分钟内有效。如非本人操作，请忽略。"
CODE_SENT = "验证码已发到尾号{last4}的手机，请把6位验证码发给我。"
WECHAT_ONLY = "绑定手机号请在“邻里”微信公众号里办理：发送“绑定手机”加上您的手机号就可以了。"
UNBIND_WECHAT_ONLY = "解除绑定请在“邻里”微信公众号里发送“解除绑定”。"
ASK_MOBILE = "请发送“绑定手机”加上您的11位手机号，例如：绑定手机 13812345678"
SMS_DOWN = "抱歉，现在发不了短信验证码，请稍后再试。着急的话请拨打社区热线{hotline}。"
SMS_DOWN_NO_HOTLINE = "抱歉，现在发不了短信验证码，请稍后再试，着急的话请拨打社区热线。"
TOO_SOON = "验证码刚刚发过了，请等一分钟再试。"
TOO_MANY = "验证码已经发了好几次了，请一小时后再试。"
ALREADY_LINKED = "这个手机号已经绑定好了，不用再绑定。"
WRONG_CODE = "验证码不对，请再核对一下。还可以试{left}次。"
CODE_VOID = "验证码输错次数太多，已经作废了。需要的话请重新发送“绑定手机”加手机号，我再发一个新的。"
CODE_EXPIRED = "验证码已经过期了。请重新发送“绑定手机”加手机号，我再发一个新的。"
LINKED = "绑定成功。以后用微信或短信、电话都能查到您的工单。"
OTHER_WECHAT = (
    "这个手机号已经绑定了另一个微信号。请先在那个微信里发送“解除绑定”，"
    "或者拨打社区热线请工作人员帮忙。"
)
TRY_AGAIN = "抱歉，刚才没有绑定成功，请把验证码再发一次。"
NOT_IDENTIFIED = "抱歉，暂时没法绑定，请稍后再试。"
UNLINKED = "已为您解除手机号绑定。以前的工单都还在，在微信里随时能查。"
NOT_LINKED = "您还没有绑定手机号。需要的话请发送“绑定手机”加上您的手机号。"


def handle(
    session: Session,
    *,
    resident_id: int | None,
    channel: str,
    text: str,
    now: datetime,
    sms_available: bool,
    hotline: str | None = None,
) -> str | None:
    """Answer a linking command or a pending code; None for any other message."""
    cleaned = unicodedata.normalize("NFKC", text or "").strip()
    if not cleaned or len(cleaned) > 40:
        return None
    if bind := _BIND.match(cleaned):
        if channel != "wechat":
            return WECHAT_ONLY
        if resident_id is None:
            return NOT_IDENTIFIED
        return _send_code(session, resident_id=resident_id, number=bind.group("number"),
                          now=now, sms_available=sms_available, hotline=hotline)
    if _UNBIND.match(cleaned):
        if channel != "wechat":
            return UNBIND_WECHAT_ONLY
        if resident_id is None:
            return NOT_IDENTIFIED
        return _unlink(session, resident_id=resident_id)
    # Codes are only handed out in WeChat, so digits from any other channel are the bot's.
    if channel == "wechat" and resident_id is not None and (code := _CODE.match(cleaned)):
        reply = _check_code(session, resident_id=resident_id, digits=code.group("code"), now=now)
        if reply is not None:
            session.flush()  # a database error shows here, not at the hub's commit
        return reply
    return None


# --- sending a code -------------------------------------------------------------------------


def _send_code(session: Session, *, resident_id: int, number: str, now: datetime,
               sms_available: bool, hotline: str | None) -> str:
    try:
        phone = normalize_phone(number) if number else ""
    except InvalidPhone:
        phone = ""
    if not _MOBILE.fullmatch(phone):  # a landline cannot receive the code
        return ASK_MOBILE
    resident = session.get(Resident, resident_id)
    if resident is None:
        return NOT_IDENTIFIED
    if resident.phone == phone:
        return ALREADY_LINKED
    if not sms_available:
        return SMS_DOWN.format(hotline=hotline) if hotline else SMS_DOWN_NO_HOTLINE

    hour_ago = now - timedelta(hours=1)
    recent = list(session.execute(
        select(LinkCode.created_at).where(LinkCode.resident_id == resident_id,
                                          LinkCode.created_at > hour_ago)
    ).scalars())
    if recent and max(recent) > now - CODE_INTERVAL:
        return TOO_SOON
    to_phone = session.execute(
        select(func.count(LinkCode.id)).where(LinkCode.phone == phone,
                                              LinkCode.created_at > hour_ago)
    ).scalar_one()
    if len(recent) >= CODES_PER_HOUR or to_phone >= PHONE_CODES_PER_HOUR:
        log.info("link code refused for resident %s to %s: rate limit", resident_id,
                 mask_phone(phone))
        return TOO_MANY

    code = f"{secrets.randbelow(10**6):06d}"
    session.add(LinkCode(resident_id=resident_id, phone=phone, code_hash=hash_code(code),
                         attempts=0, created_at=now, expires_at=now + CODE_TTL))
    enqueue(session, channel="sms", address=phone, kind="code",
            text=SMS_TEXT.format(code=code), now=now, resident_id=resident_id)
    log.info("link code sent for resident %s to %s", resident_id, mask_phone(phone))
    return CODE_SENT.format(last4=phone[-4:])


def hash_code(code: str, *, salt: bytes | None = None) -> str:
    """Return 'scrypt$<salt>$<digest>' for a code, with a fresh random salt by default."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(code.encode("ascii"), salt=salt, **_SCRYPT)
    return f"{_HASH_SCHEME}${_b64(salt)}${_b64(digest)}"


def code_matches(code: str, stored: str) -> bool:
    """Compare a code with its stored hash in constant time."""
    try:
        scheme, salt, digest = stored.split("$")
        expected = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
        salt_bytes = base64.urlsafe_b64decode(salt + "=" * (-len(salt) % 4))
    except ValueError:
        return False
    if scheme != _HASH_SCHEME:
        return False
    actual = hashlib.scrypt(code.encode("ascii"), salt=salt_bytes, **_SCRYPT)
    return hmac.compare_digest(actual, expected)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


# --- checking a code ------------------------------------------------------------------------


def _check_code(session: Session, *, resident_id: int, digits: str, now: datetime) -> str | None:
    # Only the newest code counts: asking again replaces the one before. The row lock keeps
    # two guesses arriving together from both being counted as the same attempt.
    code = session.execute(
        select(LinkCode).where(LinkCode.resident_id == resident_id)
        .order_by(LinkCode.id.desc()).limit(1).with_for_update()
    ).scalar_one_or_none()
    if code is None or code.used_at is not None or code.attempts >= MAX_ATTEMPTS:
        return None
    if code.expires_at <= now:
        if now - code.expires_at > EXPIRED_GRACE:
            return None
        code.attempts = MAX_ATTEMPTS  # spent: the next 6 digits go to the bot again
        return CODE_EXPIRED
    code.attempts += 1
    if not code_matches(digits, code.code_hash):
        left = MAX_ATTEMPTS - code.attempts
        log.info("wrong link code for resident %s (%s left)", resident_id, left)
        return WRONG_CODE.format(left=left) if left > 0 else CODE_VOID
    return _link(session, resident_id=resident_id, code=code, now=now)


def _link(session: Session, *, resident_id: int, code: LinkCode, now: datetime) -> str:
    resident = session.get(Resident, resident_id)
    if resident is None:
        return NOT_IDENTIFIED
    phone = code.phone
    owner = session.execute(select(Resident).where(Resident.phone == phone)).scalar_one_or_none()
    if owner is not None and owner.id == resident.id:
        code.used_at = now
        return LINKED
    if owner is not None and owner.wechat_openid:
        # Merging would hand another WeChat account's orders to this one; a person decides.
        code.used_at = now
        log.info("resident %s proved %s, which resident %s's WeChat holds", resident.id,
                 mask_phone(phone), owner.id)
        return OTHER_WECHAT
    try:
        with session.begin_nested():
            if owner is not None:
                _merge(session, source=owner, target=resident)
            resident.phone = phone
            code.used_at = now
            session.flush()
    except IntegrityError:
        # Someone else took the number between our check and the write: nothing moved.
        log.warning("linking %s to resident %s collided; rolled back", mask_phone(phone),
                    resident.id)
        return TRY_AGAIN
    log.info("resident %s linked %s%s", resident.id, mask_phone(phone),
             f", merged resident {owner.id}" if owner is not None else "")
    return LINKED


def _merge(session: Session, *, source: Resident, target: Resident) -> None:
    """Move the phone resident's orders, conversations and messages owed onto target."""
    for table in (Ticket, Conversation, OutboxMessage):
        session.execute(
            update(table).where(table.resident_id == source.id)
            .values(resident_id=target.id)
            .execution_options(synchronize_session="fetch")
        )
    if not target.display_name and source.display_name:
        target.display_name = source.display_name
    source.phone = None
    session.flush()  # free the unique phone before target takes it
    session.expire(source, ["tickets", "conversations"])
    session.expire(target, ["tickets", "conversations"])


# --- unlinking ------------------------------------------------------------------------------


def _unlink(session: Session, *, resident_id: int) -> str:
    resident = session.get(Resident, resident_id)
    if resident is None:
        return NOT_IDENTIFIED
    if resident.phone is None:
        return NOT_LINKED
    log.info("resident %s unlinked %s", resident.id, mask_phone(resident.phone))
    resident.phone = None
    session.flush()
    return UNLINKED
