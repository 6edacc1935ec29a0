"""The Twilio SMS sender against a loopback stand-in for Twilio's Messages API.

The sender goes through twilio's own REST client; the stand-in records each create and
answers as the test says (success, Twilio errors, outage).
"""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from bot.app import utc_now
from bot.models import SmsOptOut
from bot.outbox import RetryLater, Undeliverable
from bot.senders.twilio_sms import TwilioSmsSender, e164
from bot.settings import Secret, TwilioSettings
from channels.twilio_sms import segment_count

pytestmark = pytest.mark.integration

TOKEN = "0123456789abcdef0123456789abcdef"
ACCOUNT = "AC" + "1" * 32
FROM_NUMBER = "+8657188001234"
PHONE = "+8613800001234"


# --- the sender -------------------------------------------------------------------------


@dataclass
class FakeTwilio:
    """Twilio's Messages API: records each create and answers as `reply` says."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    reply: tuple[int, dict[str, Any]] | None = None

    async def create(self, request: web.Request) -> web.Response:
        raw = (await request.read()).decode()
        fields = {key: values[0] for key, values in parse_qs(raw).items()}
        auth = base64.b64decode(request.headers["Authorization"].split()[1]).decode()
        self.requests.append({"sid": request.match_info["sid"], "auth": auth, **fields})
        if self.reply is not None:
            status, body = self.reply
            return web.json_response(body, status=status)
        sid = f"SM{len(self.requests):032d}"
        return web.json_response({"sid": sid, "status": "queued", "to": fields["To"],
                                  "body": fields["Body"], "account_sid": ACCOUNT}, status=201)


@pytest.fixture
async def twilio_api() -> AsyncIterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio()
    server_app = web.Application()
    server_app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", fake.create)
    server = TestServer(server_app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


def make_sender(api_base: str, sessions: sessionmaker) -> TwilioSmsSender:
    return TwilioSmsSender(
        TwilioSettings(account_sid=ACCOUNT, auth_token=Secret(TOKEN), from_number=FROM_NUMBER,
                       api_base=api_base),
        sessions,
    )


async def test_sender_posts_to_twilio_and_returns_the_sid(
        twilio_api: tuple[FakeTwilio, str], db_session_factory: sessionmaker) -> None:
    fake, base = twilio_api
    sender = make_sender(base, db_session_factory)
    assert sender.channel == "sms"
    sid = await sender.send("13800001234", "您的工单GD20261128-0007已派给物业维修部。")
    assert sid == "SM" + "1".zfill(32)
    assert fake.requests == [{
        "sid": ACCOUNT, "auth": f"{ACCOUNT}:{TOKEN}", "To": "+8613800001234",
        "From": FROM_NUMBER, "Body": "您的工单GD20261128-0007已派给物业维修部。"}]
    await sender.close()


async def test_sender_splits_a_long_text_and_returns_the_first_sid(
        twilio_api: tuple[FakeTwilio, str], db_session_factory: sessionmaker) -> None:
    fake, base = twilio_api
    text = "师傅明天上午九点到十一点上门，请家里留人。" * 9
    sid = await make_sender(base, db_session_factory).send("13800001234", text)
    assert sid == "SM" + "1".zfill(32)
    bodies = [request["Body"] for request in fake.requests]
    assert len(bodies) > 1
    assert all(segment_count(body) <= 2 for body in bodies)
    assert "".join(bodies) == text


@pytest.mark.parametrize(("status", "code", "error"), [
    (500, 20500, RetryLater),
    (503, 20503, RetryLater),
    (429, 20429, RetryLater),
    (400, 21610, Undeliverable),
    (400, 21211, Undeliverable),
    (400, 21614, Undeliverable),
    (401, 20003, Undeliverable),
])
async def test_sender_sorts_twilio_errors(
        twilio_api: tuple[FakeTwilio, str], db_session_factory: sessionmaker,
        status: int, code: int, error: type[Exception]) -> None:
    fake, base = twilio_api
    fake.reply = (status, {"code": code, "message": "refused", "status": status})
    with pytest.raises(error) as raised:
        await make_sender(base, db_session_factory).send("13800001234", "您好")
    assert len(fake.requests) == 1
    assert type(raised.value) is error
    assert "13800001234" not in str(raised.value)  # the number stays masked


async def test_sender_unreachable_twilio_is_retried_later(
        db_session_factory: sessionmaker) -> None:
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    closed = str(server.make_url("")).rstrip("/")
    await server.close()
    with pytest.raises(RetryLater):
        await make_sender(closed, db_session_factory).send("13800001234", "您好")


async def test_sender_refuses_an_opted_out_phone_without_calling_twilio(
        twilio_api: tuple[FakeTwilio, str], db_session_factory: sessionmaker) -> None:
    fake, base = twilio_api
    with db_session_factory() as session:
        session.add(SmsOptOut(phone="13800001234", opted_out_at=utc_now()))
        session.commit()
    sender = make_sender(base, db_session_factory)
    for address in ("13800001234", "+8613800001234"):
        with pytest.raises(Undeliverable):
            await sender.send(address, "您的工单已办结。")
    assert fake.requests == []
    # Another number is still served.
    await sender.send("13900001234", "您的工单已办结。")
    assert [request["To"] for request in fake.requests] == ["+8613900001234"]
    with db_session_factory() as session:
        assert session.scalar(select(func.count()).select_from(SmsOptOut)) == 1


@pytest.mark.parametrize(("address", "expected"), [
    ("13800001234", "+8613800001234"),
    ("+8613800001234", "+8613800001234"),
    ("008613800001234", "+8613800001234"),
    ("138 0000 1234", "+8613800001234"),
    ("057188001234", "+8657188001234"),
    ("+14155550100", "+14155550100"),
])
def test_e164(address: str, expected: str) -> None:
    assert e164(address) == expected


@pytest.mark.parametrize("address", ["12345", "+0123", "not a phone", ""])
def test_e164_refuses_what_is_not_a_phone(address: str) -> None:
    with pytest.raises(Undeliverable):
        e164(address)
