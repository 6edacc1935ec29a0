"""`python -m bot simulate` and the sandbox provider APIs, over real loopback HTTP.

Three layers: the sandbox's fake WeChat/Twilio APIs answered to the providers' own
clients; the simulator against a small loopback hub that checks every request with the
channel modules (so a wrongly signed or encrypted request fails the test); and the
simulator as a subprocess against the whole running stack.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from bot import sandbox, simulate
from bot.migrate import upgrade
from bot.models import Ticket, VoiceCall
from bot.runner import Ports, Stack
from bot.settings import Settings
from bot.training import ensure_model
from channels import twilio_sms, twilio_voice, wechat
from tests.e2e import providers
from tests.loopback import free_port, serve_in_thread

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "https://linli.example.test"


# --- a small hub that checks what the simulator sends with the real channel code ---------


@dataclass
class MiniHub:
    url: str
    env: dict[str, str]
    settings: Settings
    sandbox: sandbox.Sandbox
    statuses: list[dict[str, str]] = field(default_factory=list)


def mini_hub_app(hub: MiniHub) -> web.Application:
    settings = hub.settings
    assert settings.wechat and settings.twilio
    token = settings.twilio.auth_token.reveal()

    async def twilio_form(request: web.Request) -> dict[str, str] | None:
        form = {key: str(value) for key, value in (await request.post()).items()}
        ok = twilio_sms.verify(auth_token=token, url=PUBLIC + request.path_qs, params=form,
                               signature=request.headers.get("X-Twilio-Signature"))
        return form if ok else None

    async def sms(request: web.Request) -> web.Response:
        form = await twilio_form(request)
        if form is None:
            return web.Response(status=403)
        inbound = twilio_sms.parse_sms(form)
        if inbound.text == "状态":  # a status update that goes out later, by the API
            hub.sandbox.record("sms", "+86" + (inbound.phone or ""), "您的工单已派单。")
        said = inbound.text or f"图片 {inbound.payload['media'][0]['url']}"
        return web.Response(text=twilio_sms.render_sms([f"收到：{said}", "回复1确认，回复2修改"]),
                            content_type="text/xml")

    async def wechat_push(request: web.Request) -> web.Response:
        query = request.query
        keys = settings.wechat
        try:
            push = wechat.parse_message(
                await request.read(), token=keys.token.reveal(), app_id=keys.app_id,
                # Compatible mode: a push is encrypted or plain, as encrypt_type says.
                aes_key=keys.aes_key.reveal() if query.get("encrypt_type") == "aes" else None,
                signature=query.get("signature"),
                msg_signature=query.get("msg_signature"), timestamp=query.get("timestamp"),
                nonce=query.get("nonce"), now=datetime.now(UTC))
        except wechat.InvalidSignature:
            return web.Response(status=403)
        if push.inbound.text == "稍后":  # answered by customer-service message instead
            asyncio.get_running_loop().call_later(
                0.3, hub.sandbox.record, "wechat", push.openid, "这是客服消息：工单已受理。")
            return web.Response(text="success")
        payload = push.inbound.payload or {}
        said = push.inbound.text or ("图片" if "image" in payload else push.kind)
        if "location" in payload:
            said = f"位置 {payload['location']['lat']:.2f} {said}"
        crypto = wechat.make_crypto(token=keys.token.reveal(), aes_key=keys.aes_key.reveal(),
                                    app_id=keys.app_id) if push.encrypted else None
        reply = wechat.render_text_reply(to_user=push.openid, from_user=push.account,
                                         text=f"收到：{said}", now=datetime.now(UTC),
                                         crypto=crypto, nonce=query.get("nonce"))
        return web.Response(text=reply, content_type="application/xml")

    async def voice(request: web.Request) -> web.Response:
        form = await twilio_form(request)
        if form is None:
            return web.Response(status=403)
        if request.path == "/twilio/voice/status":
            hub.statuses.append(form)
            return web.Response(status=204)
        action = PUBLIC + "/twilio/voice/gather"
        if request.path == "/twilio/voice":
            return web.Response(text=twilio_voice.render_menu(
                action_url=action, community_name="和睦社区"), content_type="text/xml")
        turn = twilio_voice.parse_voice({**form, **request.query})
        if turn.digits == "1":
            twiml = twilio_voice.render_gather("请说说家里出了什么事。", action_url=action, attempt=0)
        elif turn.speech:
            twiml = twilio_voice.render_read_back(f"您说的是{turn.speech}。", "GD20261128-0007")
        else:
            twiml = twilio_voice.render_retry(turn.attempt + 1, prompt="请说说家里出了什么事。",
                                              action_url=action, can_call_back=True)
        return web.Response(text=twiml, content_type="text/xml")

    app = web.Application()
    app.add_routes([
        web.get("/health", lambda _r: web.json_response({"status": "ok"})),
        web.post("/twilio/sms", sms),
        web.post("/webhooks/wechat", wechat_push),
        web.post("/twilio/voice", voice),
        web.post("/twilio/voice/gather", voice),
        web.post("/twilio/voice/status", voice),
        *hub.sandbox.routes(),
    ])
    return app


@pytest.fixture(scope="module")
def mini_hub() -> MiniHub:
    port = free_port()
    env = sandbox.sandbox_environment(sandbox.generate_credentials(),
                                      {"LINLI_PORT": str(port)})
    env["PUBLIC_BASE_URL"] = PUBLIC
    settings = Settings.from_env({**env, "LINLI_CREDENTIALS": "/nonexistent.yml"})
    hub = MiniHub(url=f"http://127.0.0.1:{port}", env=env, settings=settings,
                  sandbox=sandbox.Sandbox(settings))
    serve_in_thread(mini_hub_app(hub), port)
    return hub


@pytest.fixture
def as_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Give the in-process simulator an environment, and no other credentials."""

    def apply(env: dict[str, str]) -> None:
        for name in (*sandbox.CREDENTIAL_NAMES, "PUBLIC_BASE_URL", "WECHAT_API_BASE",
                     "TWILIO_API_BASE", "LINLI_SANDBOX"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("LINLI_CREDENTIALS", str(tmp_path / "none.yml"))
        monkeypatch.setattr(simulate, "REPO_ROOT", tmp_path)  # no stray sandbox file
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return apply


def run_main(args: list[str], stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = simulate.main(args, stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue()


def test_sms_is_signed_for_the_public_url_and_twiml_is_printed(mini_hub, as_stack):
    as_stack(mini_hub.env)
    code, out = run_main(["sms", "--to", mini_hub.url, "--from", "13600000001",
                          "--text", "我家卫生间漏水了", "--text", "/img https://example.test/a.jpg"])
    assert code == 0, out
    assert "邻里：收到：我家卫生间漏水了" in out
    assert "邻里：收到：图片 https://example.test/a.jpg" in out
    assert "邻里：回复1确认，回复2修改" in out


def test_a_later_status_sms_reaches_the_terminal(mini_hub, as_stack):
    as_stack(mini_hub.env)
    code, out = run_main(["sms", "--to", mini_hub.url, "--from", "13600000002",
                          "--text", "状态"])
    assert code == 0
    assert "邻里（短信）：您的工单已派单。" in out


def test_wechat_safe_mode_request_and_reply(mini_hub, as_stack):
    as_stack(mini_hub.env)
    code, out = run_main(["wechat", "--to", mini_hub.url, "--from", "oSimTest0001",
                          "--text", "电梯坏了 ]]> <b>", "--text", "/img https://example.test/b.jpg",
                          "--text", "/loc 30.27 120.15 和睦社区5号楼", "--text", "/loc nowhere"])
    assert code == 0, out
    assert "邻里：收到：电梯坏了 ]]> <b>" in out
    assert "邻里：收到：图片" in out
    assert "邻里：收到：位置 30.27 和睦社区5号楼" in out
    assert "用法：/loc" in out
    assert "注意" not in out


def test_wechat_plaintext_mode(mini_hub, as_stack):
    as_stack({**mini_hub.env, "WECHAT_AES_KEY": ""})
    code, out = run_main(["wechat", "--to", mini_hub.url, "--from", "oSimTest0002",
                          "--text", "你好"])
    assert code == 0, out
    assert "邻里：收到：你好" in out
    assert "注意" not in out


def test_wechat_success_then_customer_service_message(mini_hub, as_stack):
    as_stack(mini_hub.env)
    code, out = run_main(["wechat", "--to", mini_hub.url, "--from", "oSimTest0003",
                          "--text", "稍后"])
    assert code == 0
    assert "邻里（微信）：这是客服消息：工单已受理。" in out


def test_voice_call_from_menu_to_hang_up(mini_hub, as_stack):
    as_stack(mini_hub.env)
    code, out = run_main(["voice", "--to", mini_hub.url, "--from", "13600000003"],
                         stdin="\n1\n我家卫生间漏水了\n")
    assert code == 0, out
    assert "邻里（语音）：您好，这里是和睦社区服务热线。" in out
    assert "报修，请按一。" in out and "<prosody" not in out
    assert "邻里（语音）：对不起，我没有听清。" in out  # the empty line was silence
    assert "请说说家里出了什么事。" in out
    assert "工单号 G D，二零二六，幺幺二八，零零零七" in out
    assert "（邻里挂断了电话）" in out
    ended = [s for s in mini_hub.statuses if s["From"] == "+8613600000003"]
    assert [s["CallStatus"] for s in ended] == ["completed"]


def test_ctrl_d_ends_the_call_with_a_status_callback(mini_hub, as_stack):
    as_stack(mini_hub.env)
    code, out = run_main(["voice", "--to", mini_hub.url, "--from", "13600000004"], stdin="")
    assert code == 0
    assert "（您挂断了电话）" in out
    assert [s["CallStatus"] for s in mini_hub.statuses
            if s["From"] == "+8613600000004"] == ["completed"]


def test_other_credentials_are_refused_with_a_clear_error(mini_hub, as_stack, capsys):
    as_stack({**mini_hub.env, "TWILIO_AUTH_TOKEN": "not-the-stack-token"})
    code, _ = run_main(["sms", "--to", mini_hub.url, "--text", "你好"])
    assert code == 1
    assert "refused the SMS signature" in capsys.readouterr().err


def test_a_channel_off_on_either_side_is_named(mini_hub, as_stack, capsys):
    as_stack({})  # no environment, no credentials.yml, no sandbox file
    assert run_main(["wechat", "--to", mini_hub.url, "--text", "你好"])[0] == 1
    assert ("WeChat is off on this stack; set WECHAT_* or run `make run` for the sandbox"
            in capsys.readouterr().err)
    bare = free_port()
    app = web.Application()
    app.add_routes([web.get("/health", lambda _r: web.json_response({"status": "ok"}))])
    serve_in_thread(app, bare)
    as_stack(mini_hub.env)
    assert run_main(["sms", "--to", f"http://127.0.0.1:{bare}", "--text", "你好"])[0] == 1
    assert "SMS is off on this stack" in capsys.readouterr().err


def test_stack_not_running(as_stack, capsys, mini_hub):
    as_stack(mini_hub.env)
    assert run_main(["sms", "--to", f"http://127.0.0.1:{free_port()}", "--text", "x"])[0] == 1
    assert "make run" in capsys.readouterr().err


def test_the_simulator_finds_the_sandbox_file(mini_hub, as_stack, tmp_path, capsys):
    as_stack({})
    sandbox.ensure_sandbox_credentials(tmp_path / "var", {"LINLI_CREDENTIALS": "/none.yml"})
    # Found and used: the mini hub has other credentials, so it refuses them by signature.
    assert run_main(["sms", "--to", mini_hub.url, "--text", "你好"])[0] == 1
    assert "refused the SMS signature" in capsys.readouterr().err


# --- the sandbox APIs, as the providers' own clients see them ----------------------------


def http(url: str, *, data: bytes | None = None) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as answer:
        return json.loads(answer.read())


def test_wechat_token_and_customer_service_api(mini_hub):
    keys = mini_hub.settings.wechat
    base = f"{mini_hub.url}/sandbox/cgi-bin"
    good = f"{base}/token?grant_type=client_credential&appid={keys.app_id}"
    assert http(f"{good}&secret=wrong")["errcode"] == 40125
    assert http(f"{base}/token?grant_type=client_credential&appid=wxother"
                f"&secret={keys.app_secret.reveal()}")["errcode"] == 40013
    first = http(f"{good}&secret={keys.app_secret.reveal()}")
    assert first["expires_in"] == 7200
    body = json.dumps({"touser": "oApi1", "msgtype": "text",
                       "text": {"content": "您的工单已办结"}}).encode()
    assert http(f"{base}/message/custom/send?access_token=forged", data=body)["errcode"] == 40001
    assert http(f"{base}/message/custom/send", data=body)["errcode"] == 41001
    sent = http(f"{base}/message/custom/send?access_token={first['access_token']}", data=body)
    assert sent == {"errcode": 0, "errmsg": "ok"}
    inbox = http(f"{mini_hub.url}/sandbox/messages?to=oApi1")
    assert [(m["channel"], m["text"]) for m in inbox] == [("wechat", "您的工单已办结")]
    assert http(f"{mini_hub.url}/sandbox/messages?to=oApi1&after={inbox[0]['id']}") == []


def test_twilio_messages_api_answers_the_twilio_client(mini_hub):
    keys = mini_hub.settings.twilio
    client = Client(keys.account_sid, keys.auth_token.reveal())
    client.api.base_url = f"{mini_hub.url}/sandbox"
    message = client.messages.create(to="+8613600000005", from_=keys.from_number,
                                     body="您的工单 GD20261128-0007 已派单。")
    assert message.sid.startswith("SM") and message.status == "queued"
    texts = [m["text"] for m in http(f"{mini_hub.url}/sandbox/messages?to=13600000005")]
    assert texts == ["您的工单 GD20261128-0007 已派单。"]

    wrong = Client(keys.account_sid, "wrong-token")
    wrong.api.base_url = f"{mini_hub.url}/sandbox"
    with pytest.raises(TwilioRestException) as refused:
        wrong.messages.create(to="+8613600000005", from_=keys.from_number, body="x")
    assert refused.value.status == 401 and refused.value.code == 20003
    with pytest.raises(TwilioRestException) as bad_from:
        client.messages.create(to="+8613600000005", from_="+8613900000000", body="x")
    assert bad_from.value.code == 21606
    assert len(http(f"{mini_hub.url}/sandbox/messages?to=13600000005")) == 1


async def test_the_sandbox_answers_loopback_only():
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        ("192.0.2.7", 4000) if name == "peername" else default)
    route = next(r for r in sandbox.routes(Settings()) if r.path == "/sandbox/messages")
    request = make_mocked_request("GET", "/sandbox/messages", transport=transport)
    assert (await route.handler(request)).status == 403


# --- the whole stack, the simulator as a subprocess ----------------------------------------


def simulator(stack: Any, *args: str, stdin: str = "") -> str:
    env = {**os.environ, **providers.stack_env(stack.providers), "PYTHONPATH": str(ROOT),
           "PYTHONIOENCODING": "utf-8", "LINLI_CREDENTIALS": str(ROOT / "no-such.yml")}
    done = subprocess.run([sys.executable, "-m", "bot", "simulate", *args, "--to",
                           stack.base_url], input=stdin, env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return done.stdout


def test_whole_stack_sms_resident_reports_a_leak(stack):
    out = simulator(stack, "sms", "--from", "13600000009", "--text", "我家卫生间漏水了",
                    "--text", "三号楼二单元五零一", "--text", "明天上午", "--text", "对")
    assert "邻里：请问是几号楼？" in out, out
    assert "什么时候上门" in out, out
    assert re.search(r"邻里：.*3号楼2单元501.*明天上午", out), out
    number = re.search(r"GD\d{8}-\d{4}", out)
    assert number, out
    with stack.sessions() as session:
        ticket = session.execute(
            select(Ticket).where(Ticket.number == number.group(0))).scalar_one()
        assert (ticket.category, ticket.channel) == ("water_leak", "sms")


def test_whole_stack_wechat_resident_in_safe_mode(stack):
    out = simulator(stack, "wechat", "--from", "oSimulateE2E0000000000000001",
                    "--text", "你好", "--text", "我家卫生间漏水了")
    assert "邻里：您好，我是邻里小助手" in out, out
    assert "邻里：请问是几号楼？" in out, out
    assert "注意" not in out, out


def test_whole_stack_voice_caller_hears_the_menu(stack):
    out = simulator(stack, "voice", "--from", "13600000019", "--text", "1",
                    "--text", "我家卫生间漏水了")
    assert "社区服务热线" in out and "报修，请按一。" in out, out
    assert "<prosody" not in out
    said = out.split("您：1", 1)[1]
    assert re.search(r"邻里（语音）：[\u4e00-\u9fff]", said), out
    with stack.sessions() as session:
        call = session.execute(
            select(VoiceCall).where(VoiceCall.caller == "13600000019")).scalar_one()
        assert call.ended_at is not None  # the Ctrl-D status callback closed it


# --- `make run` with no accounts: the stack's own sandbox, end to end ----------------------


@dataclass
class SandboxStack:
    url: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def sandbox_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxStack]:
    root = tmp_path_factory.mktemp("sandbox-stack")
    database_url = f"sqlite:///{root / 'linli.db'}"
    upgrade(database_url)
    ports = Ports(hub=free_port(), rasa=free_port(), actions=free_port())
    bare = {"LINLI_CREDENTIALS": str(root / "none.yml"), "LINLI_PORT": str(ports.hub)}
    generated = sandbox.ensure_sandbox_credentials(root / "var", bare)
    assert generated["LINLI_SANDBOX"] == "1"
    # Replies slower than 10 ms go out by customer-service message: that path is the test.
    env = {**bare, **generated, "DATABASE_URL": database_url, "LINLI_OUTBOX_POLL_S": "0.2",
           "WECHAT_PASSIVE_REPLY_S": "0.01"}
    running = Stack(model=ensure_model()[0], ports=ports, env=env, log_dir=root / "logs")
    running.start()
    try:
        running.wait_ready(timeout_s=300)
        running.warm_up()
        yield SandboxStack(url=f"http://127.0.0.1:{ports.hub}", env=env)
    finally:
        running.stop()


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("WECHAT_", "TWILIO_")) and k != "PUBLIC_BASE_URL"}
    return subprocess.run([sys.executable, "-m", "bot", *args],
                          env={**clean, **env, "PYTHONPATH": str(ROOT),
                               "PYTHONIOENCODING": "utf-8"},
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_sandbox_wechat_reply_arrives_as_a_customer_service_message(sandbox_stack):
    done = run_cli(sandbox_stack.env, "simulate", "wechat", "--from", "oSandboxE2E01",
                   "--to", sandbox_stack.url, "--text", "我家卫生间漏水了")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "邻里（微信）：请问是几号楼？" in done.stdout, done.stdout
    inbox = http(f"{sandbox_stack.url}/sandbox/messages?to=oSandboxE2E01")
    assert [m["text"] for m in inbox] == ["请问是几号楼？"]


def test_sandbox_status_sms_reaches_the_resident(sandbox_stack):
    done = run_cli(sandbox_stack.env, "simulate", "sms", "--from", "13600000077",
                   "--to", sandbox_stack.url, "--text", "五号楼二单元的电梯坏了", "--text", "对")
    assert done.returncode == 0, done.stderr[-2000:]
    number = re.search(r"GD\d{8}-\d{4}", done.stdout)
    assert number, done.stdout
    orders = json.loads(run_cli(sandbox_stack.env, "staff", "orders", "--department",
                                "property").stdout)["orders"]
    order = next(o for o in orders if o["ticket"] == number.group(0))
    accepted = run_cli(sandbox_stack.env, "staff", "accept", "--order", str(order["id"]),
                       "--staff", order["assignee"]["id"])
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    # The outbox sent it through the Twilio Messages API, which here is the sandbox's.
    for _ in range(100):
        texts = [m["text"] for m in http(f"{sandbox_stack.url}/sandbox/messages?to=13600000077")]
        if texts:
            break
        threading.Event().wait(0.2)
    assert any(number.group(0) in t for t in texts), texts
