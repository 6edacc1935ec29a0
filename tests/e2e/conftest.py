"""The whole stack — Rasa server, action server, hub — on loopback ports, on a fresh database."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import sessionmaker

from bot.db import make_engine, make_session_factory
from bot.migrate import upgrade
from bot.runner import Ports, Stack
from bot.training import ensure_model
from tests.e2e.providers import FakeProviders, stack_env, start_fake_providers
from tests.loopback import free_port


@dataclass
class RunningStack:
    base_url: str
    sessions: sessionmaker
    log_dir: Path
    providers: FakeProviders
    uploads: Path  # where the hub keeps staff photos (LINLI_UPLOADS)

    def post(self, path: str, body: Any, *, raw: bytes | None = None) -> tuple[int, dict]:
        data = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def say(self, sender: str, text: str, *, channel: str = "sms",
            message_id: str | None = None) -> list[str]:
        body = {"channel": channel, "sender": sender, "text": text}
        if message_id:
            body["message_id"] = message_id
        status, answer = self.post("/api/messages", body)
        assert status == 200, answer
        return answer["replies"]


@pytest.fixture(scope="session")
def providers() -> FakeProviders:
    """WeChat's and Twilio's APIs, played on loopback for the whole session."""
    return start_fake_providers(free_port())


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory,
          providers: FakeProviders) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("stack")
    database_url = f"sqlite:///{root / 'linli.db'}"
    upgrade(database_url)
    model, _ = ensure_model()
    ports = Ports(hub=free_port(), rasa=free_port(), actions=free_port())
    env = {"DATABASE_URL": database_url, "LINLI_UPLOADS": str(root / "uploads"),
           **stack_env(providers)}
    running = Stack(model=model, ports=ports, env=env, log_dir=root / "logs")
    running.start()
    try:
        running.wait_ready(timeout_s=300)
        running.warm_up()
        engine = make_engine(database_url)
        yield RunningStack(base_url=f"http://127.0.0.1:{ports.hub}",
                           sessions=make_session_factory(engine), log_dir=root / "logs",
                           providers=providers, uploads=root / "uploads")
        engine.dispose()
    except Exception:
        for log in sorted((root / "logs").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        running.stop()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (make test installs it).

    Module-scoped: Playwright's sync API keeps an event loop running in this thread while
    it is open, which would break asyncio.run() in the test modules that follow.
    """
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                              headless=True)
        yield chromium
        chromium.close()
