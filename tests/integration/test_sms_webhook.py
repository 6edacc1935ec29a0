"""The Twilio SMS webhook and sender over real HTTP, on the real database and hub.

The webhook runs in an in-process aiohttp app with the real Hub; Rasa is a loopback
server whose answers each test controls. Requests are signed with twilio's own
RequestValidator over the public URL. The sender talks to a loopback stand-in for
Twilio's Messages API through twilio's own REST client.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import MultiDict
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from twilio.request_validator import RequestValidator

from bot.app import App
from bot.community import load_community
from bot.hub import Hub, RasaClient, clean_text
from bot.models import Conversation, Message
from bot.settings import Secret, Settings, TwilioSettings
from bot.texts import text as domain_text
from bot.webhooks import sms as sms_webhook
from bot.webkeys import APP, HUB
from channels.twilio_sms import segment_count

pytestmark = pytest.mark.integration

TOKEN = "0123456789abcdef0123456789abcdef"
ACCOUNT = "AC" + "1" * 32
FROM_NUMBER = "+8657188001234"
PUBLIC = "https://linli.example.org"
PHONE = "+8613800001234"


def form(**overrides: str) -> dict[str, str]:
    params = {
        "MessageSid": "SM" + "a" * 32,
        "AccountSid": ACCOUNT,
        "From": PHONE,
        "To": FROM_NUMBER,
        "Body": "3号楼电梯坏了",
        "NumMedia": "0",
    }
    params.update(overrides)
    return params


def sign(params: Any, path: str = "/twilio/sms", base: str = PUBLIC,
         token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(base + path, params)


def encode(params: Any) -> bytes:
    items = params.items() if hasattr(params, "items") else params
    return urlencode(list(items)).encode()


# --- fixtures ---------------------------------------------------------------------------


@dataclass
class FakeRasa:
    """Rasa's REST channel: records each turn and answers with `answer(message)`."""

    turns: list[dict[str, Any]] = field(default_factory=list)
    answer: Callable[[str], list[dict[str, Any]]] = lambda message: [
        {"text": f"收到：{message}"}]

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.turns.append(body)
        return web.json_response(self.answer(body["message"]))


@pytest.fixture
async def rasa() -> AsyncIterator[tuple[FakeRasa, str]]:
    fake = FakeRasa()
    server_app = web.Application()
    server_app.router.add_post("/webhooks/rest/webhook", fake.webhook)
    server = TestServer(server_app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
def settings() -> Settings:
    return Settings(
        public_base_url=PUBLIC,
        twilio=TwilioSettings(account_sid=ACCOUNT, auth_token=Secret(TOKEN),
                              from_number=FROM_NUMBER),
    )


@pytest.fixture
async def client(rasa: tuple[FakeRasa, str], settings: Settings, db_engine: Engine,
                 db_session_factory: sessionmaker, catalogue: Any,
                 roster: Any) -> AsyncIterator[TestClient]:
    _fake, rasa_url = rasa
    app = App(settings=settings, engine=db_engine, sessions=db_session_factory,
              catalogue=catalogue, community=load_community(), roster=roster)
    hub = Hub(app, RasaClient(rasa_url, timeout_s=5))
    server = web.Application()
    server[APP] = app
    server[HUB] = hub
    server.add_routes(sms_webhook.routes())
    test_client = TestClient(TestServer(server, host="127.0.0.1"))
    await test_client.start_server()
    yield test_client
    await test_client.close()
    await hub.close()


async def post(client: TestClient, params: Any, *, signature: str | None = "auto",
               path: str = "/twilio/sms",
               content_type: str = "application/x-www-form-urlencoded",
               body: bytes | None = None) -> tuple[int, str, str]:
    headers = {"Content-Type": content_type}
    if signature == "auto":
        signature = sign(params, path)
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    response = await client.post(path, data=body if body is not None else encode(params),
                                 headers=headers)
    return response.status, response.headers.get("Content-Type", ""), await response.text()


def messages(sessions: sessionmaker, direction: str | None = None) -> list[Message]:
    with sessions() as session:
        query = select(Message).order_by(Message.id)
        if direction:
            query = query.where(Message.direction == direction)
        return list(session.scalars(query))


def twiml_bodies(xml: str) -> list[str]:
    root = ElementTree.fromstring(xml.encode())
    assert root.tag == "Response"
    return [element.text or "" for element in root.findall("Message")]


# --- the webhook ------------------------------------------------------------------------


async def test_signed_sms_is_stored_sent_to_rasa_and_answered_in_twiml(
        client: TestClient, rasa: tuple[FakeRasa, str],
        db_session_factory: sessionmaker) -> None:
    status, content_type, xml = await post(client, form())
    assert status == 200, xml
    assert content_type == "text/xml; charset=utf-8"
    assert twiml_bodies(xml) == ["收到：3号楼电梯坏了"]
    fake, _ = rasa
    assert [turn["message"] for turn in fake.turns] == ["3号楼电梯坏了"]
    assert fake.turns[0]["metadata"]["channel"] == "sms"
    assert fake.turns[0]["metadata"]["phone"] == "13800001234"
    stored = messages(db_session_factory)
    assert [(m.direction, m.channel, m.text) for m in stored] == [
        ("in", "sms", "3号楼电梯坏了"), ("out", "sms", "收到：3号楼电梯坏了")]
    assert stored[0].provider_message_id == "SM" + "a" * 32
    with db_session_factory() as session:
        conversation = session.get(Conversation, stored[0].conversation_id)
        assert conversation is not None
        assert (conversation.channel, conversation.sender_key) == ("sms", "13800001234")


@pytest.mark.parametrize("signature", [
    None,
    "",
    RequestValidator("another-account-token-000000000").compute_signature(
        PUBLIC + "/twilio/sms", form()),
])
async def test_missing_or_forged_signature_is_refused_and_nothing_stored(
        client: TestClient, rasa: tuple[FakeRasa, str], db_session_factory: sessionmaker,
        signature: str | None) -> None:
    status, _, _ = await post(client, form(), signature=signature)
    assert status == 403
    assert messages(db_session_factory) == []
    assert rasa[0].turns == []


async def test_tampered_body_is_refused(client: TestClient,
                                        db_session_factory: sessionmaker) -> None:
    signature = sign(form())
    status, _, _ = await post(client, form(Body="3号楼电梯好了"), signature=signature)
    assert status == 403
    assert messages(db_session_factory) == []


async def test_signature_is_checked_against_the_public_url_not_the_loopback_one(
        client: TestClient, db_session_factory: sessionmaker) -> None:
    loopback = str(client.make_url("")).rstrip("/")
    assert loopback != PUBLIC
    status, _, _ = await post(client, form(), signature=sign(form(), base=loopback))
    assert status == 403
    assert messages(db_session_factory) == []
    # The query string Twilio was configured with is part of what it signs.
    path = "/twilio/sms?community=yangguang"
    status, _, xml = await post(client, form(), path=path)
    assert status == 200, xml
    status, _, _ = await post(client, form(MessageSid="SM" + "b" * 32), path=path,
                              signature=sign(form(MessageSid="SM" + "b" * 32),
                                             "/twilio/sms?community=other"))
    assert status == 403
    assert len(messages(db_session_factory, "in")) == 1


async def test_repeated_keys_are_signed_as_twilio_does(
        client: TestClient, db_session_factory: sessionmaker) -> None:
    params = MultiDict(form(NumMedia="1", MediaContentType0="image/jpeg"))
    params.add("MediaUrl0", "https://api.twilio.com/media/one")
    params.add("MediaUrl0", "https://api.twilio.com/media/two")
    # A signature over only the first value does not cover the second.
    first_only = MultiDict(params)
    first_only.popall("MediaUrl0")
    first_only.add("MediaUrl0", "https://api.twilio.com/media/one")
    status, _, _ = await post(client, params, signature=sign(first_only))
    assert status == 403
    status, _, xml = await post(client, params)
    assert status == 200, xml
    stored = messages(db_session_factory, "in")
    assert len(stored) == 1
    assert stored[0].payload == {"media": [
        {"url": "https://api.twilio.com/media/one", "content_type": "image/jpeg"}]}


async def test_mms_photo_reaches_the_hub_as_media(
        client: TestClient, db_session_factory: sessionmaker) -> None:
    params = form(Body="", NumMedia="1", MediaUrl0="https://api.twilio.com/media/ME1",
                  MediaContentType0="image/png")
    status, _, xml = await post(client, params)
    assert status == 200, xml
    assert twiml_bodies(xml)  # the resident hears something back
    stored = messages(db_session_factory, "in")
    assert stored[0].payload == {"media": [
        {"url": "https://api.twilio.com/media/ME1", "content_type": "image/png"}]}


async def test_a_twilio_retry_of_the_same_message_sid_is_answered_once(
        client: TestClient, rasa: tuple[FakeRasa, str],
        db_session_factory: sessionmaker) -> None:
    status, _, first = await post(client, form())
    assert status == 200
    assert twiml_bodies(first) == ["收到：3号楼电梯坏了"]
    status, content_type, second = await post(client, form())
    assert status == 200
    assert content_type == "text/xml; charset=utf-8"
    assert twiml_bodies(second) == []
    assert len(rasa[0].turns) == 1
    assert [m.direction for m in messages(db_session_factory)] == ["in", "out"]


@pytest.mark.parametrize("content_type", [
    "application/json", "multipart/form-data; boundary=x", "text/plain", "",
    "application/x-www-form-urlencoded; charset=gbk",
])
async def test_other_content_types_are_refused(
        client: TestClient, db_session_factory: sessionmaker, content_type: str) -> None:
    status, _, _ = await post(client, form(), content_type=content_type)
    assert status == 400
    assert messages(db_session_factory) == []


async def test_oversized_body_is_refused(client: TestClient,
                                         db_session_factory: sessionmaker) -> None:
    params = form(Body="漏" * 30_000)  # ~270 KB once percent-encoded
    status, _, _ = await post(client, params)
    assert status == 400
    assert messages(db_session_factory) == []


async def test_oversized_chunked_body_is_refused(client: TestClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield encode(form())
        for _ in range(20):
            yield b"&Pad=" + b"x" * 8192

    response = await client.post("/twilio/sms", data=chunks(), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"})
    assert response.status == 400


@pytest.mark.parametrize("body", [b"Body=%FF%FE&From=1", b"Body=\xff\xfe"])
async def test_malformed_utf8_is_refused(client: TestClient, body: bytes) -> None:
    status, _, _ = await post(client, form(), body=body, signature="x")
    assert status == 400


async def test_signed_request_without_message_sid_is_a_bad_request(
        client: TestClient, db_session_factory: sessionmaker) -> None:
    params = form()
    del params["MessageSid"]
    status, _, text = await post(client, params)
    assert status == 400
    assert "MessageSid" in text
    assert messages(db_session_factory) == []


@pytest.mark.parametrize("body", [
    "😭😭😭", "Elevator 坏了 in 3号楼 ，help!", "ＳＴＯＰ ｐｌｅａｓｅ", "👨‍👩‍👧 🇨🇳 é",
])
async def test_emoji_and_mixed_scripts_are_answered_politely(
        client: TestClient, db_session_factory: sessionmaker, body: str) -> None:
    status, _, xml = await post(client, form(Body=body))
    assert status == 200, xml
    assert twiml_bodies(xml)
    # Stored as the hub cleans every channel's text (it drops zero-width characters).
    assert messages(db_session_factory, "in")[0].text == clean_text(body)


async def test_empty_body_gets_a_polite_prompt_not_the_bot(
        client: TestClient, rasa: tuple[FakeRasa, str]) -> None:
    status, _, xml = await post(client, form(Body=""))
    assert status == 200, xml
    assert twiml_bodies(xml) == [domain_text("utter_empty_message")]
    assert rasa[0].turns == []


async def test_a_long_reply_is_cut_into_bodies_of_two_segments(
        client: TestClient, rasa: tuple[FakeRasa, str]) -> None:
    long_reply = "您的报修已经记下了，工单号GD20261128-0007。" * 8
    rasa[0].answer = lambda _message: [{"text": long_reply}]
    status, _, xml = await post(client, form())
    assert status == 200
    bodies = twiml_bodies(xml)
    assert len(bodies) > 1
    assert all(segment_count(body) <= 2 for body in bodies)
    assert "".join(bodies) == long_reply
    assert all("GD20261128-0007" in body for body in bodies)


async def test_rasa_down_still_gets_a_polite_answer(
        client: TestClient, rasa: tuple[FakeRasa, str]) -> None:
    def broken(_message: str) -> list[dict[str, Any]]:
        raise RuntimeError("rasa crashed")

    rasa[0].answer = broken
    status, _, xml = await post(client, form())
    assert status == 200
    assert twiml_bodies(xml)


async def test_a_hub_failure_is_never_a_500(client: TestClient) -> None:
    class BrokenHub:
        async def handle(self, _inbound: Any) -> Any:
            raise RuntimeError("database is gone")

    server = web.Application()
    server[APP] = client.server.app[APP]  # type: ignore[union-attr]
    server[HUB] = BrokenHub()  # type: ignore[assignment]
    server.add_routes(sms_webhook.routes())
    async with TestClient(TestServer(server, host="127.0.0.1")) as broken:
        status, content_type, xml = await post(broken, form())
    assert status == 200
    assert content_type == "text/xml; charset=utf-8"
    assert twiml_bodies(xml) == [sms_webhook.BUSY]
