"""An agent works a handed-off conversation in a real Chromium against the whole stack.

The resident talks on the web chat (a second page) or by SMS; the agent signs in through
/console/login, claims the conversation from the live queue, replies, and gives it back to
the bot. What the resident receives is read where they would read it: the chat page, or
the fake Twilio API for SMS. The last test measures agent reply → channel adapter latency.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.accounts import create_account
from bot.app import utc_now
from bot.console.agent_service import RETURN_TEXT
from bot.db import session_scope
from bot.models import Conversation, Message
from bot.texts import text as domain_text
from routing.metrics import percentile

pytestmark = pytest.mark.e2e

PASSWORD = "linli-e2e-2026"
TIMEOUT_MS = 30_000


def new_agent(stack: Any, name: str) -> str:
    username = f"e2e-{uuid.uuid4().hex[:8]}"
    with session_scope(stack.sessions) as session:
        create_account(session, username=username, password=PASSWORD, role="agent",
                       display_name=name, now=utc_now())
    return username


def sign_in(page: Any, stack: Any, username: str) -> None:
    """Fill the login form the page is on and wait for the agent console."""
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#submit")
    page.wait_for_url(stack.base_url + "/console/agent")


def open_conversation(stack: Any, channel: str, sender: str) -> Conversation | None:
    with stack.sessions() as session:
        return session.execute(select(Conversation).where(
            Conversation.channel == channel, Conversation.sender_key == sender,
            Conversation.state != "closed")).scalar_one_or_none()


def wait_until(check: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_agent_claims_replies_and_returns_a_web_chat_conversation(stack: Any,
                                                                   browser: Any) -> None:
    from playwright.sync_api import expect

    username = new_agent(stack, "小王")
    resident = browser.new_page()
    agent = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        # The resident asks for a person; the bot queues them and says how long it may take.
        resident.goto(stack.base_url + "/")
        resident.fill("#text", "转人工")
        resident.press("#text", "Enter")
        expect(resident.locator(".msg.bot").last).to_contain_text("人工客服", timeout=TIMEOUT_MS)
        address = "web-" + resident.evaluate("localStorage.getItem('linli-sid')")
        conversation = wait_until(lambda: open_conversation(stack, "web", address))
        assert conversation.state == "queued"

        agent.goto(stack.base_url + "/console/agent")
        expect(agent).to_have_url(stack.base_url + "/console/login?next=%2Fconsole%2Fagent")
        sign_in(agent, stack, username)
        row = agent.locator(f'#queue li[data-id="{conversation.id}"]')
        expect(row).to_contain_text("主动要求", timeout=TIMEOUT_MS)
        expect(row).to_contain_text("网页")
        row.click()
        expect(agent.locator("#transcript")).to_contain_text("转人工")
        agent.click("#claim")
        expect(agent.locator("#pane-state")).to_contain_text("由您接待", timeout=TIMEOUT_MS)
        expect(agent.locator(f'#mine li[data-id="{conversation.id}"]')).to_be_visible()
        expect(agent.locator(f'#queue li[data-id="{conversation.id}"]')).to_have_count(0)

        # Typing shows on the resident's page; the reply arrives in their chat.
        agent.locator("#reply").press_sequentially("您好，我是小王")
        expect(resident.locator("#typing")).to_contain_text("小王正在输入", timeout=TIMEOUT_MS)
        agent.locator("#reply").fill("您好，我是客服小王，请问有什么可以帮您？")
        agent.click("#send")
        expect(resident.locator(".msg.bot").last).to_have_text(
            "您好，我是客服小王，请问有什么可以帮您？", timeout=TIMEOUT_MS)
        expect(agent.locator("#transcript .msg.agent").last).to_contain_text("客服小王")

        # The resident writes again: it appears in the agent's transcript without a reload.
        marker = agent.evaluate("window.__marker = Math.random()")
        resident.fill("#text", "我家厨房水管漏水了")
        resident.press("#text", "Enter")
        expect(agent.locator("#transcript .msg.resident").last).to_contain_text(
            "我家厨房水管漏水了", timeout=TIMEOUT_MS)
        assert agent.evaluate("window.__marker") == marker  # same page, never reloaded
        # A person is answering: the bot does not talk over them.
        expect(resident.locator(".msg.bot").last).to_have_text(
            "您好，我是客服小王，请问有什么可以帮您？")

        # Back to the bot: the resident is told, and the bot answers the next message.
        agent.once("dialog", lambda dialog: dialog.accept())
        agent.click("#return")
        expect(resident.locator(".msg.bot").last).to_have_text(RETURN_TEXT,
                                                                timeout=TIMEOUT_MS)
        expect(agent.locator(f'#mine li[data-id="{conversation.id}"]')).to_have_count(0)
        bot_messages = resident.locator(".msg.bot").count()
        resident.fill("#text", "三号楼楼道灯坏了")
        resident.press("#text", "Enter")
        expect(resident.locator(".msg.bot")).to_have_count(bot_messages + 1,
                                                          timeout=TIMEOUT_MS)
        answer = resident.locator(".msg.bot").last.inner_text()
        assert answer not in (domain_text("utter_queued_ack"), RETURN_TEXT), answer
        with stack.sessions() as session:
            stored = session.get(Conversation, conversation.id)
            assert (stored.state, stored.agent_id) == ("bot", None)
            last = session.execute(select(Message).where(
                Message.conversation_id == conversation.id, Message.direction == "out")
                .order_by(Message.id.desc()).limit(1)).scalar_one()
            assert last.text == answer and not (last.payload or {}).get("agent")
    finally:
        resident.close()
        agent.close()


# --- latency: agent reply → resident channel adapter ----------------------------------------

REPLIES = 50


async def _signed_in(http: aiohttp.ClientSession, base: str, username: str) -> dict[str, str]:
    async with http.post(base + "/console/api/login",
                         json={"username": username, "password": PASSWORD}) as response:
        body = await response.json()
        assert response.status == 200, body
        token = response.cookies["linli_session"].value
    return {"Cookie": f"linli_session={token}", "X-CSRF-Token": body["csrf_token"]}


async def _claim(http: aiohttp.ClientSession, base: str, headers: dict[str, str],
                 conversation_id: int) -> None:
    async with http.post(f"{base}/console/api/agent/conversations/{conversation_id}/claim",
                         json={}, headers=headers) as response:
        assert response.status == 200, await response.text()


async def _reply(http: aiohttp.ClientSession, base: str, headers: dict[str, str],
                 conversation_id: int, text: str) -> None:
    async with http.post(f"{base}/console/api/agent/conversations/{conversation_id}/reply",
                         json={"text": text}, headers=headers) as response:
        assert response.status == 200, await response.text()


async def _sms_latencies(stack: Any, username: str, phone: str) -> list[float]:
    base = stack.base_url
    replies = stack.say(phone, "转人工", channel="sms")
    assert any("人工客服" in reply for reply in replies), replies
    conversation = open_conversation(stack, "sms", phone)
    address = f"+86{phone}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        headers = await _signed_in(http, base, username)
        await _claim(http, base, headers, conversation.id)
        latencies = []
        for index in range(REPLIES):
            before = len(stack.providers.messages_to(address))
            started = time.monotonic()
            await _reply(http, base, headers, conversation.id, f"短信回复第{index + 1}条")
            while len(stack.providers.messages_to(address)) == before:
                await asyncio.sleep(0.002)
            with stack.providers.lock:
                arrived = [s.at for s in stack.providers.sent if s.to == address][-1]
            latencies.append(arrived - started)
    return latencies


async def _web_latencies(stack: Any, username: str, sid: str) -> list[float]:
    base = stack.base_url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.ws_connect(base.replace("http", "ws") + f"/ws?sid={sid}") as chat:
            await chat.send_str(json.dumps({"text": "转人工"}, ensure_ascii=False))
            frame = await chat.receive_json(timeout=60)
            assert "人工客服" in frame["text"], frame
            conversation = open_conversation(stack, "web", f"web-{sid}")
            headers = await _signed_in(http, base, username)
            await _claim(http, base, headers, conversation.id)
            latencies = []
            for index in range(REPLIES):
                text = f"网页回复第{index + 1}条"
                started = time.monotonic()
                await _reply(http, base, headers, conversation.id, text)
                while (frame := await chat.receive_json(timeout=10))["text"] != text:
                    pass
                latencies.append(time.monotonic() - started)
    return latencies


def run_async(coroutine: Any) -> Any:
    """Run a coroutine on a loop of its own: Playwright's sync API holds this thread's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_a_resident_who_left_while_queued_gets_the_reply_when_they_come_back(
    stack: Any, browser: Any
) -> None:
    from playwright.sync_api import expect

    from bot.models import OutboxMessage

    username = new_agent(stack, "小李")
    resident_side = browser.new_context()  # one browser profile: the chat id survives
    agent = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        chat = resident_side.new_page()
        chat.goto(stack.base_url + "/")
        chat.fill("#text", "转人工")
        chat.press("#text", "Enter")
        expect(chat.locator(".msg.bot").last).to_contain_text("人工客服", timeout=TIMEOUT_MS)
        address = "web-" + chat.evaluate("localStorage.getItem('linli-sid')")
        conversation = wait_until(lambda: open_conversation(stack, "web", address))
        chat.close()  # the resident walks away while waiting

        agent.goto(stack.base_url + "/console/login")
        sign_in(agent, stack, username)
        agent.locator(f'#queue li[data-id="{conversation.id}"]').click()
        agent.click("#claim")
        expect(agent.locator("#pane-state")).to_contain_text("由您接待", timeout=TIMEOUT_MS)
        agent.locator("#reply").fill("您的问题我记下了，明天上午给您回电。")
        agent.click("#send")

        def held() -> OutboxMessage | None:
            with stack.sessions() as session:
                return session.execute(select(OutboxMessage).where(
                    OutboxMessage.address == address, OutboxMessage.kind == "reply")
                ).scalars().first()

        row = wait_until(held)
        assert row.status == "pending" and row.attempts == 0  # waiting, not failed

        back = resident_side.new_page()
        back.goto(stack.base_url + "/")
        expect(back.locator(".msg.bot").last).to_contain_text("明天上午给您回电",
                                                              timeout=TIMEOUT_MS)
        assert wait_until(lambda: held().status == "sent")
    finally:
        agent.close()
        resident_side.close()


def test_agent_reply_reaches_the_resident_channel_quickly(stack: Any) -> None:
    """p50/p95 of agent reply → channel adapter over 50 replies each on SMS and web chat."""
    username = new_agent(stack, "测速客服")
    sms = run_async(_sms_latencies(stack, username, "13600007788"))
    web = run_async(_web_latencies(stack, username, f"latency-{uuid.uuid4().hex[:8]}"))
    figures = {channel: {"n": len(values),
                         "p50_ms": round(percentile(values, 50) * 1000, 1),
                         "p95_ms": round(percentile(values, 95) * 1000, 1),
                         "max_ms": round(max(values) * 1000, 1)}
               for channel, values in (("sms", sms), ("web", web))}
    print("agent reply → channel adapter latency:", json.dumps(figures))
    for channel, figure in figures.items():
        assert figure["n"] == REPLIES
        # The outbox is kicked on every reply, not left to its poll: well under a second.
        assert figure["p95_ms"] < 1000, (channel, figure)
