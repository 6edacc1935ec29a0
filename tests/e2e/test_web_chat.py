"""The web chat page and its websocket, over real loopback connections."""
from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
import websockets

pytestmark = pytest.mark.e2e


def test_chat_page_is_served(stack):
    with urllib.request.urlopen(stack.base_url + "/", timeout=10) as response:
        page = response.read().decode("utf-8")
        assert response.headers["Content-Type"].startswith("text/html")
    assert "邻里小助手" in page and "/ws?sid=" in page


def test_websocket_conversation_creates_an_order(stack):
    ws_url = stack.base_url.replace("http://", "ws://") + "/ws?sid=e2e-websocket-1"

    async def converse() -> list[str]:
        heard: list[str] = []
        async with websockets.connect(ws_url) as ws:
            for text in ("十二号楼一单元的电梯不动了", "13712345678", "对"):
                await ws.send(json.dumps({"text": text}, ensure_ascii=False))
                frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
                assert frame["type"] == "bot"
                heard.append(frame["text"])
                # Drain any further replies of this turn.
                while True:
                    try:
                        extra = await asyncio.wait_for(ws.recv(), timeout=0.5)
                    except TimeoutError:
                        break
                    heard.append(json.loads(extra)["text"])
            # A frame that is not JSON is still a message, answered politely.
            await ws.send("随便说说 not json {")
            heard.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=30))["text"])
        return heard

    heard = asyncio.run(converse())
    assert any("电话" in h for h in heard), heard
    assert any("12号楼1单元" in h and "137****5678" in h for h in heard), heard
    assert any("工单号GD" in h for h in heard), heard


def test_websocket_without_session_id_is_refused_politely(stack):
    ws_url = stack.base_url.replace("http://", "ws://") + "/ws"

    async def connect() -> dict:
        async with websockets.connect(ws_url) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), timeout=10))

    frame = asyncio.run(connect())
    assert frame["type"] == "error" and "刷新" in frame["text"]
