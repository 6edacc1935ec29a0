"""The WeChat webhook and sender over real HTTP, on the real database and hub.

The webhook runs in an in-process aiohttp app with the real Hub; Rasa is a loopback
server whose answers and delay each test controls. Pushes are signed and encrypted with
wechatpy, as WeChat does. Rows are really committed (the in-flight retry test needs two
requests at once), so every test uses fresh openids and the fixture deletes their rows.
The sender talks to a loopback stand-in for WeChat's token and customer-service API.
"""
from __future__ import annotations

import asyncio
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import WeChatSigner

from bot.app import App, utc_now
from bot.community import load_community
from bot.db import make_session_factory, session_scope
from bot.hub import Hub, RasaClient
from bot.models import Attachment, Conversation, Message, OutboxMessage, Resident, WeChatWindow
from bot.outbox import RetryLater, Undeliverable, WindowClosed
from bot.senders.wechat import WeChatSender
from bot.settings import Secret, Settings, WeChatSettings
from bot.texts import text as domain_text
from bot.webhooks import wechat as wechat_webhook
from bot.webkeys import APP, HUB, OUTBOX
from channels.wechat import MAX_BODY_BYTES

pytestmark = pytest.mark.integration

TOKEN = "linli_webhook_token"
APP_ID = "wx00112233445566ff"
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aQ"
ACCOUNT = "gh_linli_test01"
BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<xml><ToUserName>gh_linli_test01</ToUserName><FromUserName>oAttacker</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&lol3;</Content></xml>"
)


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


def push_xml(msg_type: str, openid: str, *, msg_id: int | None = None, **fields: str) -> str:
    """A push as WeChat writes it: strings in CDATA, numbers bare."""
    parts = [f"<ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>",
             f"<FromUserName><![CDATA[{openid}]]></FromUserName>",
             f"<CreateTime>{int(time.time())}</CreateTime>",
             f"<MsgType><![CDATA[{msg_type}]]></MsgType>"]
    parts += [f"<{name}><![CDATA[{value}]]></{name}>" for name, value in fields.items()]
    if msg_id is not None:
        parts.append(f"<MsgId>{msg_id}</MsgId>")
    return "<xml>" + "".join(parts) + "</xml>"


def new_msg_id() -> int:
    return 24_000_000_000_000_000 + uuid.uuid4().int % 10**15


# --- fixtures ---------------------------------------------------------------------------


@dataclass
class FakeRasa:
    """Rasa's REST channel: records each turn, waits `delay_s`, answers `answer(message)`."""

    turns: list[str] = field(default_factory=list)
    delay_s: float = 0.0
    answer: Callable[[str], list[str]] = lambda message: [f"收到：{message}"]

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.turns.append(body["message"])
        await asyncio.sleep(self.delay_s)
        return web.json_response([{"text": t} for t in self.answer(body["message"])])


@dataclass
class KickRecorder:
    """Stands in for the outbox worker, whose only part used here is kick()."""

    kicks: int = 0

    def kick(self) -> None:
        self.kicks += 1


@dataclass
class Rig:
    client: TestClient
    rasa: FakeRasa
    app: App
    outbox: KickRecorder
    safe: bool
    openids: list[str] = field(default_factory=list)

    def openid(self) -> str:
        self.openids.append(f"oT{uuid.uuid4().hex[:26]}")
        return self.openids[-1]

    async def push(self, plain: str, *, timestamp: str | None = None, forge: bool = False,
                   encrypt: bool | None = None, body: bytes | None = None) -> tuple[int, str]:
        """POST a push signed (and, in safe mode, encrypted) as WeChat would."""
        ts, nonce = timestamp or str(int(time.time())), uuid.uuid4().hex[:10]
        token = "not-our-token" if forge else TOKEN
        query = {"signature": sign(token, ts, nonce), "timestamp": ts, "nonce": nonce,
                 "openid": "ignored-by-us"}
        data = body if body is not None else plain.encode()
        if (self.safe if encrypt is None else encrypt) and body is None:
            sealed = ET.fromstring(WeChatCrypto(TOKEN, AES_KEY, APP_ID)
                                   .encrypt_message(plain, nonce, ts))
            encrypted = sealed.findtext("Encrypt") or ""
            data = (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
                    f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>").encode()
            query.update(encrypt_type="aes", msg_signature=sign(token, ts, nonce, encrypted))
        response = await self.client.post("/webhooks/wechat", params=query, data=data,
                                          headers={"Content-Type": "text/xml"})
        return response.status, await response.text()

    def rows(self, openid: str) -> list[tuple[str, str, dict | None]]:
        with session_scope(self.app.sessions) as session:
            return [tuple(row) for row in session.execute(
                select(Message.direction, Message.text, Message.payload).join(Conversation)
                .where(Conversation.sender_key == openid).order_by(Message.id))]


def read_reply(body: str, *, safe: bool) -> dict[str, str]:
    """Read a passive reply, decrypting it with wechatpy as WeChat would."""
    if safe:
        sealed = ET.fromstring(body)
        body = WeChatCrypto(TOKEN, AES_KEY, APP_ID).decrypt_message(
            body, sealed.findtext("MsgSignature"), sealed.findtext("TimeStamp"),
            sealed.findtext("Nonce"))
    return {child.tag: child.text or "" for child in ET.fromstring(body)}


@pytest.fixture
async def make_rig(db_engine: Engine, catalogue: Any, roster: Any,
                   monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    cleanup: list[tuple[Rig, Hub, TestServer]] = []

    async def build(*, safe: bool = False, passive_s: float | None = None,
                    hub: Any = None) -> Rig:
        if passive_s is not None:
            monkeypatch.setenv(wechat_webhook.PASSIVE_REPLY_ENV, str(passive_s))
        rasa = FakeRasa()
        rasa_app = web.Application()
        rasa_app.router.add_post("/webhooks/rest/webhook", rasa.webhook)
        rasa_server = TestServer(rasa_app, host="127.0.0.1")
        await rasa_server.start_server()
        settings = Settings(wechat=WeChatSettings(
            token=Secret(TOKEN), app_id=APP_ID, app_secret=Secret("secret"),
            aes_key=Secret(AES_KEY if safe else "")))
        app = App(settings=settings, engine=db_engine, sessions=make_session_factory(db_engine),
                  catalogue=catalogue, community=load_community(), roster=roster, clock=utc_now)
        real_hub = Hub(app, RasaClient(str(rasa_server.make_url("")).rstrip("/"), timeout_s=10))
        server = web.Application()
        server[APP], server[HUB] = app, hub or real_hub
        server[OUTBOX] = outbox = KickRecorder()
        server.add_routes(wechat_webhook.routes())
        client = TestClient(TestServer(server, host="127.0.0.1"))
        await client.start_server()
        rig = Rig(client, rasa, app, outbox, safe)
        cleanup.append((rig, real_hub, rasa_server))
        return rig

    yield build
    for rig, hub, rasa_server in cleanup:
        await rig.client.close()
        await hub.close()
        await rasa_server.close()
        _delete_rows(rig.app.sessions, rig.openids)


def _delete_rows(sessions: sessionmaker, openids: list[str]) -> None:
    conversations = select(Conversation.id).where(Conversation.sender_key.in_(openids))
    statements = [
        delete(Attachment).where(Attachment.conversation_id.in_(conversations)),
        delete(OutboxMessage).where(OutboxMessage.address.in_(openids)),
        delete(Message).where(Message.conversation_id.in_(conversations)),
        delete(Conversation).where(Conversation.sender_key.in_(openids)),
        delete(WeChatWindow).where(WeChatWindow.openid.in_(openids)),
        delete(Resident).where(Resident.wechat_openid.in_(openids)),
    ]
    with session_scope(sessions) as session:
        for statement in statements:
            session.execute(statement, execution_options={"synchronize_session": False})


# --- server URL check -------------------------------------------------------------------


async def test_url_check_echoes_only_when_signed(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig(safe=True)
    ts, nonce = str(int(time.time())), "8213761"
    good = {"signature": sign(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce,
            "echostr": "5837397520946498"}
    response = await rig.client.get("/webhooks/wechat", params=good)
    assert response.status == 200 and await response.text() == "5837397520946498"
    forged = {**good, "signature": sign("other-token", ts, nonce)}
    assert (await rig.client.get("/webhooks/wechat", params=forged)).status == 403
    assert (await rig.client.get("/webhooks/wechat", params={"echostr": "1"})).status == 403


# --- answered by the bot ----------------------------------------------------------------


@pytest.mark.parametrize("safe", [False, True], ids=["plaintext", "safe"])
async def test_text_is_stored_and_answered_passively(make_rig: Callable[..., Any],
                                                     safe: bool) -> None:
    rig = await make_rig(safe=safe)
    rig.rasa.answer = lambda message: ["好的，我来帮您登记。", "请问是几单元？"]
    openid = rig.openid()
    started = time.monotonic()
    status, body = await rig.push(push_xml("text", openid, msg_id=new_msg_id(),
                                           Content="3号楼的楼道灯坏了"))
    elapsed = time.monotonic() - started
    assert status == 200
    reply = read_reply(body, safe=safe)
    assert reply["ToUserName"] == openid and reply["FromUserName"] == ACCOUNT
    assert reply["MsgType"] == "text"
    assert reply["Content"] == "好的，我来帮您登记。\n请问是几单元？"
    assert rig.rasa.turns == ["3号楼的楼道灯坏了"]
    assert [(d, t) for d, t, _ in rig.rows(openid)] == [
        ("in", "3号楼的楼道灯坏了"), ("out", "好的，我来帮您登记。"), ("out", "请问是几单元？")]
    assert elapsed < 2.0, f"passive reply took {elapsed:.2f}s"


async def test_safe_mode_reply_uses_the_request_nonce(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig(safe=True)
    openid = rig.openid()
    _, body = await rig.push(push_xml("text", openid, msg_id=new_msg_id(), Content="你好"))
    sealed = ET.fromstring(body)
    assert sealed.findtext("Encrypt") and "你好" not in body
    # WeChat checks MsgSignature over token, timestamp, nonce and the ciphertext.
    assert sealed.findtext("MsgSignature") == sign(
        TOKEN, sealed.findtext("TimeStamp") or "", sealed.findtext("Nonce") or "",
        sealed.findtext("Encrypt") or "")


async def test_safe_mode_accepts_a_signed_plaintext_push(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig(safe=True)
    openid = rig.openid()
    plain = push_xml("text", openid, msg_id=new_msg_id(), Content="兼容模式")
    status, body = await rig.push(plain, encrypt=False)
    assert status == 200 and read_reply(body, safe=False)["Content"] == "收到：兼容模式"
    forged = push_xml("text", openid, msg_id=new_msg_id(), Content="伪造")
    assert (await rig.push(forged, encrypt=False, forge=True))[0] == 403
    assert rig.rasa.turns == ["兼容模式"]


async def test_voice_recognition_goes_to_the_bot(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig()
    openid = rig.openid()
    status, body = await rig.push(push_xml("voice", openid, msg_id=new_msg_id(), MediaId="m1",
                                           Format="amr", Recognition="五号楼电梯坏了。"))
    assert status == 200 and read_reply(body, safe=False)["Content"] == "收到：五号楼电梯坏了。"
    assert rig.rasa.turns == ["五号楼电梯坏了。"]
    assert rig.rows(openid)[0][2]["voice"]["media_id"] == "m1"


async def test_image_reaches_the_hub_with_its_payload(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig()
    openid = rig.openid()
    status, _ = await rig.push(push_xml("image", openid, msg_id=new_msg_id(),
                                        PicUrl="http://mmbiz.qpic.cn/x.jpg", MediaId="img-7"))
    assert status == 200
    direction, _, payload = rig.rows(openid)[0]
    assert direction == "in"
    assert payload == {"image": {"url": "http://mmbiz.qpic.cn/x.jpg", "media_id": "img-7"}}


async def test_location_reaches_the_hub(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig()
    openid = rig.openid()
    status, _ = await rig.push(push_xml("location", openid, msg_id=new_msg_id(),
                                        Location_X="30.27", Location_Y="120.15", Scale="15",
                                        Label="杭州市西湖区邻里小区3号楼"))
    assert status == 200
    payload = rig.rows(openid)[0][2]
    assert payload["location"]["lat"] == 30.27 and payload["location"]["lng"] == 120.15


async def test_a_retry_is_answered_once(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig()
    openid = rig.openid()
    push = push_xml("text", openid, msg_id=new_msg_id(), Content="电梯坏了")
    first, again = await rig.push(push), await rig.push(push)
    assert read_reply(first[1], safe=False)["Content"] == "收到：电梯坏了"
    assert again == (200, "success")
    assert rig.rasa.turns == ["电梯坏了"]
    assert [d for d, _, _ in rig.rows(openid)] == ["in", "out"]


async def test_a_retry_while_the_first_is_in_flight_is_answered_once(
        make_rig: Callable[..., Any]) -> None:
    rig = await make_rig()
    rig.rasa.delay_s = 1.0
    openid = rig.openid()
    push = push_xml("text", openid, msg_id=new_msg_id(), Content="水管漏水")
    results = await asyncio.gather(rig.push(push), rig.push(push))
    bodies = sorted(body for _, body in results)
    assert bodies[1] == "success" and "水管漏水" in read_reply(bodies[0], safe=False)["Content"]
    assert rig.rasa.turns == ["水管漏水"]


async def test_a_slow_bot_answers_through_the_outbox(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig(passive_s=0.3)
    rig.rasa.delay_s = 1.2
    rig.rasa.answer = lambda message: ["已为您登记。", "工单号 GD20250101-0001"]
    openid = rig.openid()
    started = time.monotonic()
    status, body = await rig.push(push_xml("text", openid, msg_id=new_msg_id(), Content="报修"))
    assert (status, body) == (200, "success")
    assert time.monotonic() - started < 1.0
    await wechat_webhook.drain(timeout_s=5.0)  # what shutdown does with late replies
    with session_scope(rig.app.sessions) as session:
        queued = [tuple(row) for row in session.execute(
            select(OutboxMessage.channel, OutboxMessage.kind, OutboxMessage.status,
                   OutboxMessage.text).where(OutboxMessage.address == openid)
            .order_by(OutboxMessage.id))]
    assert queued == [("wechat", "reply", "pending", "已为您登记。"),
                      ("wechat", "reply", "pending", "工单号 GD20250101-0001")]
    assert rig.outbox.kicks == 1


# --- answered by the webhook itself -----------------------------------------------------


@pytest.mark.parametrize(("push", "hint"), [
    (lambda openid: push_xml("video", openid, msg_id=new_msg_id(), MediaId="v1",
                             ThumbMediaId="t1"), "utter_unsupported_message"),
    (lambda openid: push_xml("voice", openid, msg_id=new_msg_id(), MediaId="v2",
                             Format="amr", Recognition=""), "utter_voice_unclear"),
    (lambda openid: push_xml("event", openid, Event="subscribe"), "utter_greet"),
], ids=["video", "voice-unheard", "subscribe"])
async def test_what_the_bot_cannot_read_gets_a_polite_hint(
        make_rig: Callable[..., Any], push: Callable[[str], str], hint: str) -> None:
    rig = await make_rig(safe=True)
    openid = rig.openid()
    status, body = await rig.push(push(openid))
    assert status == 200 and read_reply(body, safe=True)["Content"] == domain_text(hint)
    assert [(d, t) for d, t, _ in rig.rows(openid)] == [("in", ""), ("out", domain_text(hint))]
    assert rig.rasa.turns == []


async def test_events_nobody_addressed_to_us_are_acknowledged(
        make_rig: Callable[..., Any]) -> None:
    rig = await make_rig()
    openid = rig.openid()
    for event in ("VIEW", "unsubscribe", "LOCATION"):
        pushed = push_xml("event", openid, Event=event, EventKey="https://example.org",
                          Latitude="30.1", Longitude="120.1", Precision="10")
        assert await rig.push(pushed) == (200, "success")
    assert rig.rows(openid) == [] and rig.rasa.turns == []


async def test_a_failing_hub_is_never_a_500(make_rig: Callable[..., Any]) -> None:
    class BrokenHub:
        async def handle(self, inbound: Any) -> Any:
            raise RuntimeError("database is down")

    rig = await make_rig(hub=BrokenHub())
    pushed = push_xml("text", rig.openid(), msg_id=new_msg_id(), Content="你好")
    assert await rig.push(pushed) == (200, "success")


# --- refused ----------------------------------------------------------------------------


@pytest.mark.parametrize("safe", [False, True], ids=["plaintext", "safe"])
async def test_forged_or_stale_pushes_are_refused_and_not_stored(
        make_rig: Callable[..., Any], safe: bool) -> None:
    rig = await make_rig(safe=safe)
    openid = rig.openid()
    forged = push_xml("text", openid, msg_id=new_msg_id(), Content="伪造的消息")
    assert (await rig.push(forged, forge=True))[0] == 403
    stale = push_xml("text", openid, msg_id=new_msg_id(), Content="十分钟前的消息")
    assert (await rig.push(stale, timestamp=str(int(time.time()) - 600)))[0] == 403
    assert rig.rows(openid) == [] and rig.rasa.turns == []


@pytest.mark.parametrize("body", [
    b"<xml><ToUserName>gh_linli_test01</ToUserName>",
    BILLION_LAUGHS.encode(),
    b"\xff\xfe<xml></xml>",
    b"",
    b"<xml>" + b"a" * MAX_BODY_BYTES + b"</xml>",
], ids=["truncated", "billion-laughs", "not-utf8", "empty", "oversized"])
async def test_bad_bodies_are_refused_with_400(make_rig: Callable[..., Any],
                                               body: bytes) -> None:
    rig = await make_rig()
    assert (await rig.push("", body=body))[0] == 400
    assert rig.rasa.turns == []


async def test_an_oversized_chunked_body_is_refused_without_reading_it_all(
        make_rig: Callable[..., Any]) -> None:
    rig = await make_rig()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"<a>" + b"x" * 4093
    ts, nonce = str(int(time.time())), "42"
    params = {"signature": sign(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}
    response = await rig.client.post("/webhooks/wechat", params=params, data=chunks())
    assert response.status == 400


# --- sender -----------------------------------------------------------------------------


@dataclass
class FakeWeChatApi:
    """WeChat's token and customer-service endpoints; `script` overrides the next answers."""

    token_fetches: int = 0
    sends: list[tuple[str, bytes]] = field(default_factory=list)
    script: list[tuple[int, dict[str, Any]] | float] = field(default_factory=list)

    async def token(self, request: web.Request) -> web.Response:
        if request.query.get("appid") != APP_ID or request.query.get("secret") != "s3cret":
            return web.json_response({"errcode": 40013, "errmsg": "invalid appid"})
        self.token_fetches += 1
        return web.json_response({"access_token": f"tok-{self.token_fetches}",
                                  "expires_in": 7200})

    async def send(self, request: web.Request) -> web.Response:
        self.sends.append((request.query.get("access_token", ""), await request.read()))
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                return web.json_response(step[1], status=step[0])
        if request.query.get("access_token") != f"tok-{self.token_fetches}":
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        return web.json_response({"errcode": 0, "errmsg": "ok"})


NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
FOLLOWER = "oSenderTestFollower01"


@pytest.fixture
async def wechat_api() -> AsyncIterator[tuple[FakeWeChatApi, str]]:
    fake = FakeWeChatApi()
    api = web.Application()
    api.router.add_get("/cgi-bin/token", fake.token)
    api.router.add_post("/cgi-bin/message/custom/send", fake.send)
    server = TestServer(api, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


def make_sender(base: str, sessions: sessionmaker, *, timeout_s: float = 5.0) -> WeChatSender:
    settings = WeChatSettings(token=Secret(TOKEN), app_id=APP_ID, app_secret=Secret("s3cret"),
                              api_base=base)
    return WeChatSender(settings, sessions=sessions, clock=lambda: NOW, timeout_s=timeout_s)


def open_window(sessions: sessionmaker, *, ago: timedelta = timedelta(hours=1),
                sent: int = 0) -> None:
    with session_scope(sessions) as session:
        session.add(WeChatWindow(openid=FOLLOWER, last_inbound_at=NOW - ago,
                                 sent_since_inbound=sent))


def sent_count(sessions: sessionmaker) -> int:
    with session_scope(sessions) as session:
        row = session.get(WeChatWindow, FOLLOWER)
        return row.sent_since_inbound if row else -1


async def test_sender_delivers_utf8_and_counts_the_window(
        wechat_api: tuple[FakeWeChatApi, str], db_session_factory: sessionmaker) -> None:
    fake, base = wechat_api
    open_window(db_session_factory)
    sender = make_sender(base, db_session_factory)
    try:
        await sender.send(FOLLOWER, "您报修的楼道灯已修好。")
        await sender.send(FOLLOWER, "请为本次服务打分。")
    finally:
        await sender.close()
    assert fake.token_fetches == 1 and len(fake.sends) == 2
    assert "楼道灯".encode() in fake.sends[0][1]  # raw UTF-8, not \\u escapes
    assert sent_count(db_session_factory) == 2


async def test_sender_refreshes_a_revoked_token_and_retries_once(
        wechat_api: tuple[FakeWeChatApi, str], db_session_factory: sessionmaker) -> None:
    fake, base = wechat_api
    open_window(db_session_factory)
    sender = make_sender(base, db_session_factory)
    await sender.tokens.get()
    fake.token_fetches += 1  # another process fetched: our token is revoked
    try:
        await sender.send(FOLLOWER, "您好")
        assert [token for token, _ in fake.sends] == ["tok-1", "tok-3"]
        fake.script = [(200, {"errcode": 40001}), (200, {"errcode": 42001})]
        with pytest.raises(RetryLater):
            await sender.send(FOLLOWER, "您好")
    finally:
        await sender.close()
    assert len(fake.sends) == 4 and fake.token_fetches == 4
    assert sent_count(db_session_factory) == 1


@pytest.mark.parametrize(("answer", "error"), [
    ((200, {"errcode": 45015, "errmsg": "response out of time limit"}), WindowClosed),
    ((200, {"errcode": 43004, "errmsg": "require subscribe"}), WindowClosed),
    ((200, {"errcode": 45009, "errmsg": "api freq out of limit"}), RetryLater),
    ((503, {}), RetryLater),
    ((400, {}), Undeliverable),
    (1.0, RetryLater),  # no answer within the timeout
], ids=["window", "unfollowed", "rate-limit", "http-503", "http-400", "timeout"])
async def test_sender_classifies_failures(
        wechat_api: tuple[FakeWeChatApi, str], db_session_factory: sessionmaker,
        answer: Any, error: type[Exception]) -> None:
    fake, base = wechat_api
    open_window(db_session_factory)
    fake.script = [answer]
    sender = make_sender(base, db_session_factory, timeout_s=0.3)
    try:
        with pytest.raises(error):
            await sender.send(FOLLOWER, "您好")
    finally:
        await sender.close()
    assert len(fake.sends) == 1 and sent_count(db_session_factory) == 0


@pytest.mark.parametrize(("ago", "sent"), [(None, 0), (timedelta(hours=49), 0),
                                           (timedelta(hours=1), 5)],
                         ids=["never-wrote", "expired", "quota-used"])
async def test_sender_does_not_call_wechat_outside_the_window(
        wechat_api: tuple[FakeWeChatApi, str], db_session_factory: sessionmaker,
        ago: timedelta | None, sent: int) -> None:
    fake, base = wechat_api
    if ago is not None:
        open_window(db_session_factory, ago=ago, sent=sent)
    sender = make_sender(base, db_session_factory)
    with pytest.raises(WindowClosed):
        await sender.send(FOLLOWER, "您好")
    await sender.close()
    assert fake.sends == [] and fake.token_fetches == 0


async def test_sender_retries_later_when_wechat_is_unreachable(
        db_session_factory: sessionmaker) -> None:
    open_window(db_session_factory)
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    await server.close()  # nothing listens on that port any more
    sender = make_sender(base, db_session_factory)
    with pytest.raises(RetryLater) as caught:
        await sender.send(FOLLOWER, "您好")
    await sender.close()
    assert "s3cret" not in str(caught.value)
