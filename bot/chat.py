"""A terminal chat with the running stack, as one resident on one channel."""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import uuid

from bot.settings import Settings


def post_message(url: str, *, channel: str, sender: str, text: str) -> dict:
    """Send one message to the hub's message API and return its JSON answer."""
    body = json.dumps(
        {"channel": channel, "sender": sender, "text": text, "message_id": uuid.uuid4().hex}
    ).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/api/messages", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def chat(*, channel: str, sender: str, url: str | None = None) -> int:
    """Read lines from the terminal, print Linli's replies; Ctrl-D or Ctrl-C ends."""
    settings = Settings.from_env()
    url = url or f"http://{settings.host}:{settings.port}"
    print(f"邻里小助手 — {channel} · {sender} → {url}  (Ctrl-D 结束)")
    while True:
        try:
            text = input("您：")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        try:
            answer = post_message(url, channel=channel, sender=sender, text=text)
        except (urllib.error.URLError, OSError) as exc:
            print(f"连不上 {url}（{exc}）。请先运行 make run。", file=sys.stderr)
            return 1
        for reply in answer.get("replies", []):
            print(f"邻里：{reply}")
