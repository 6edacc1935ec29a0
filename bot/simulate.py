"""Play a resident on SMS, WeChat or the voice hotline against the running stack.

Requests are built and signed as the providers build them (twilio's RequestValidator,
wechatpy's WeChatCrypto), so a simulated turn passes the same signature checks, parsing
and rendering as a real one. What the hub sends later (customer-service messages, status
SMS) is read from the sandbox's record, GET /sandbox/messages, when the stack has one.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import urlencode, urljoin
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_et
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException

from bot import sandbox
from bot.conversations import InvalidPhone, normalize_phone
from bot.provider_requests import local_url, signed_form, wechat_request
from bot.settings import REPO_ROOT, Settings, SettingsError

HTTP_TIMEOUT_S = 90
CUSTOMER_SERVICE_WAIT_S = 20
POLL_S = 1.0
DEFAULT_PHONE = "13800000000"
DEFAULT_OPENID = "oLinliSimulatedResident00001"
WECHAT_ACCOUNT = "gh_linli_sandbox"  # our Official Account's original id, as WeChat sends it
SPEECH_CONFIDENCE = "0.92"
_OPENID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_KEY = re.compile(r"[0-9*#]")
_LABELS = {"sms": "邻里（短信）：", "wechat": "邻里（微信）："}


class SimulationError(Exception):
    """The simulation cannot go on; the message says what to do."""


class Out:
    """Lines for the terminal; the inbox poller prints from another thread."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        with self._lock:
            print(line, file=self._stream, flush=True)


def _request(url: str, *, data: bytes | None = None,
             headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SimulationError(f"nothing answers at {url} ({reason}); start the stack with "
                              f"`make run`, or pass --to with its URL") from exc


def _check(status: int, body: bytes, *, channel: str, prefix: str) -> None:
    if status == 404:
        raise SimulationError(f"{channel} is off on this stack; set {prefix}_* or run "
                              f"`make run` for the sandbox")
    if status == 403:
        raise SimulationError(
            f"the stack refused the {channel} signature (HTTP 403): it runs with other "
            f"{prefix}_* credentials or another PUBLIC_BASE_URL than this simulator; run the "
            f"simulator with the stack's environment")
    if status >= 300:
        raise SimulationError(f"the stack answered HTTP {status} to the {channel} webhook: "
                              f"{body[:300].decode('utf-8', 'replace')}")


def _xml(text: bytes | str) -> Element:
    try:
        return safe_et.fromstring(text)
    except (ParseError, ValueError) as exc:
        raise SimulationError(f"the stack answered with XML that does not parse: {exc}") from exc


def e164(phone: str) -> str:
    """Write a Chinese number the way Twilio reports it: 13800000000 -> +8613800000000."""
    if phone.startswith("+"):
        return phone
    try:
        digits = normalize_phone(phone)
    except InvalidPhone:
        return phone
    return "+86" + digits.removeprefix("0")


class Inbox:
    """What reached the resident later through the sandbox's provider APIs."""

    def __init__(self, base: str, address: str, out: Out) -> None:
        self._url = f"{base}/sandbox/messages?" + urlencode({"to": address})
        self._out, self._last, self.seen = out, 0, 0
        self._lock, self._stop = threading.Lock(), threading.Event()
        self.available = False

    def open(self) -> None:
        status, body = _request(f"{self._url}&after=0")
        if status != 200:
            return  # not a sandbox stack: later messages went to a real (or test) provider
        self.available = True
        self._last = max((item["id"] for item in json.loads(body)), default=0)
        threading.Thread(target=self._run, name="inbox", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except SimulationError:
                return

    def poll(self) -> None:
        with self._lock:
            status, body = _request(f"{self._url}&after={self._last}")
            for item in json.loads(body) if status == 200 else []:
                self._out.say(_LABELS.get(item["channel"], "邻里：") + item["text"])
                self._last, self.seen = max(self._last, item["id"]), self.seen + 1

    def wait_since(self, mark: int, timeout_s: float) -> bool:
        """Wait until a message arrived after `seen` was `mark`; return whether one did."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll()
            if self.seen > mark:
                return True
            time.sleep(0.3)
        return False

    def close(self) -> None:
        self._stop.set()
        if self.available:
            try:
                self.poll()
            except SimulationError:
                pass  # the stack went away; nothing more will arrive


class Resident:
    """The state every channel shares: where the stack is, its credentials, the terminal."""

    channel, prefix, hint = "", "", ""

    def __init__(self, *, base: str, public: str, settings: Settings, out: Out,
                 address: str) -> None:
        if getattr(settings, self.prefix.lower()) is None:
            raise SimulationError(f"{self.channel} is off on this stack; set {self.prefix}_* "
                                  f"or run `make run` for the sandbox")
        self.base, self.public, self.settings = base, public, settings
        self.out, self.address = out, address
        self.inbox = Inbox(base, address, out)

    def run(self, lines: Iterator[str]) -> None:
        for line in lines:
            if line.strip():
                self.turn(line)

    def turn(self, text: str) -> None:
        raise NotImplementedError

    def _post_twilio(self, public_url: str, params: dict[str, str]) -> Element:
        twilio = self.settings.twilio
        assert twilio is not None
        headers, form = signed_form(twilio.auth_token.reveal(), public_url, params)
        status, body = _request(local_url(self.base, public_url), data=form, headers=headers)
        _check(status, body, channel=self.channel, prefix=self.prefix)
        root = _xml(body) if body.strip() else Element("Response")
        if root.tag != "Response":
            raise SimulationError(f"the stack answered <{root.tag}>, not TwiML <Response>")
        return root

    def _twilio_params(self) -> dict[str, str]:
        twilio = self.settings.twilio
        assert twilio is not None
        return {"AccountSid": twilio.account_sid, "ApiVersion": "2010-04-01",
                "From": e164(self.address), "To": twilio.from_number}


class SmsResident(Resident):
    channel, prefix, hint = "SMS", "TWILIO", "/img URL 发彩信图片，Ctrl-D 结束"

    def turn(self, text: str) -> None:
        sid = "SM" + secrets.token_hex(16)
        params = {**self._twilio_params(), "MessageSid": sid, "SmsSid": sid,
                  "SmsMessageSid": sid, "Body": text, "NumMedia": "0", "NumSegments": "1",
                  "SmsStatus": "received"}
        if text.startswith("/img "):  # an MMS photo
            params.update(Body="", NumMedia="1", MediaUrl0=text[5:].strip(),
                          MediaContentType0="image/jpeg")
        root = self._post_twilio(self.public + "/twilio/sms", params)
        for message in root.iter("Message"):
            body = (message.text or "").strip() or (message.findtext("Body") or "").strip()
            self.out.say(f"邻里：{body}")
            for media in message.iter("Media"):
                self.out.say(f"邻里：[图片] {(media.text or '').strip()}")


class WeChatResident(Resident):
    channel, prefix = "WeChat", "WECHAT"
    hint = "/img URL 发图片，/loc 纬度 经度 地点 发位置，Ctrl-D 结束"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not _OPENID.fullmatch(self.address):
            raise SimulationError(f"--from {self.address!r} is not a WeChat openid "
                                  f"(letters, digits, _ and -)")
        wechat = self.settings.wechat
        assert wechat is not None
        self.token, self.app_id = wechat.token.reveal(), wechat.app_id
        aes_key = wechat.aes_key.reveal()
        self.crypto = WeChatCrypto(self.token, aes_key, self.app_id) if aes_key else None

    def _message(self, text: str) -> list[tuple[str, str]] | None:
        head = [("ToUserName", WECHAT_ACCOUNT), ("FromUserName", self.address),
                ("CreateTime", str(int(time.time())))]
        msg_id = [("MsgId", str(secrets.randbits(63)))]
        if text.startswith("/img "):
            return [*head, ("MsgType", "image"), ("PicUrl", text[5:].strip()),
                    ("MediaId", secrets.token_urlsafe(32)), *msg_id]
        if text.startswith("/loc "):
            parts = text[5:].split(maxsplit=2)
            try:
                lat, lng = float(parts[0]), float(parts[1])
            except (IndexError, ValueError):
                self.out.say("（用法：/loc 纬度 经度 地点，例如 /loc 30.27 120.15 和睦社区5号楼）")
                return None
            label = parts[2] if len(parts) > 2 else ""
            return [*head, ("MsgType", "location"), ("Location_X", f"{lat:.6f}"),
                    ("Location_Y", f"{lng:.6f}"), ("Scale", "15"), ("Label", label), *msg_id]
        return [*head, ("MsgType", "text"), ("Content", text), *msg_id]

    def turn(self, text: str) -> None:
        fields = self._message(text)
        if fields is None:
            return
        query, body = wechat_request(fields, token=self.token, openid=self.address,
                                     now=int(time.time()), nonce=str(secrets.randbelow(10**10)),
                                     crypto=self.crypto, account=WECHAT_ACCOUNT)
        mark = self.inbox.seen
        status, answer = _request(f"{self.base}/webhooks/wechat?{urlencode(query)}",
                                  data=body, headers={"Content-Type": "text/xml"})
        _check(status, answer, channel=self.channel, prefix=self.prefix)
        reply = answer.decode("utf-8", "replace").strip()
        if reply.lower() in ("", "success"):
            if not self.inbox.available:
                self.out.say("（邻里稍后用客服消息回复；这个 stack 不在沙箱模式，这里看不到）")
            elif not self.inbox.wait_since(mark, CUSTOMER_SERVICE_WAIT_S):
                self.out.say("（邻里没有回复）")
            return
        self.out.say(f"邻里：{self._read_reply(reply)}")

    def _read_reply(self, reply: str) -> str:
        root = _xml(reply)
        encrypt = root.findtext("Encrypt")
        if encrypt:
            if self.crypto is None:
                raise SimulationError("the stack encrypted its reply, but no WECHAT_AES_KEY is set")
            try:
                root = _xml(self.crypto.decrypt_message(
                    {"Encrypt": encrypt}, root.findtext("MsgSignature"),
                    root.findtext("TimeStamp"), root.findtext("Nonce")))
            except InvalidSignatureException as exc:
                raise SimulationError("the stack's reply is not signed with our token") from exc
        elif self.crypto is not None:
            self.out.say("（注意：安全模式下这条回复没有加密，微信会丢弃它）")
        if (root.findtext("ToUserName"), root.findtext("FromUserName")) != (
                self.address, WECHAT_ACCOUNT):
            self.out.say("（注意：回复的 ToUserName/FromUserName 与来信不对应，微信会丢弃它）")
        if root.findtext("MsgType") == "text":
            return root.findtext("Content") or ""
        return f"[{root.findtext('MsgType')}]"


class VoiceCaller(Resident):
    channel, prefix = "Twilio voice", "TWILIO"
    hint = "空行=不出声，一个数字或 * # = 按键，Ctrl-D 挂断"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.call_sid = "CA" + secrets.token_hex(16)
        self.started = time.monotonic()
        params = self._twilio_params()
        self.params = {**params, "CallSid": self.call_sid, "Caller": params["From"],
                       "Called": params["To"], "Direction": "inbound"}

    def _post(self, url: str, extra: Mapping[str, str]) -> Element:
        return self._post_twilio(url, {**self.params, **extra})

    def _hear(self, say: Element) -> None:
        spoken = re.sub(r"\s+", " ", "".join(say.itertext())).strip()  # SSML tags dropped
        if spoken:
            self.out.say(f"邻里（语音）：{spoken}")

    def _answer(self, line: str, inputs: str) -> dict[str, str]:
        said = line.strip()
        if not said:
            return {}  # silence
        if _KEY.fullmatch(said) and "dtmf" in inputs:
            return {"Digits": said}
        if "speech" in inputs:
            return {"SpeechResult": said, "Confidence": SPEECH_CONFIDENCE}
        self.out.say("（这里只能按键，您说的话没有被听到）")
        return {}

    def run(self, lines: Iterator[str]) -> None:
        """Dial in, then follow the TwiML until a <Hangup/> or until the caller hangs up."""
        url = self.public + "/twilio/voice"
        document: Element | None = self._post(url, {"CallStatus": "ringing"})
        try:
            while document is not None:
                document, url = self._follow(document, url, lines)
        finally:
            self._hang_up()

    def _follow(self, document: Element, url: str,
                lines: Iterator[str]) -> tuple[Element | None, str]:
        in_call = {"CallStatus": "in-progress"}
        for verb in document:
            if verb.tag == "Say":
                self._hear(verb)
            elif verb.tag == "Gather":
                for say in verb.iter("Say"):
                    self._hear(say)
                line = next(lines, None)
                if line is None:
                    self.out.say("（您挂断了电话）")
                    return None, url
                answer = self._answer(line, verb.get("input", "dtmf"))
                if answer or verb.get("actionOnEmptyResult") == "true":
                    target = urljoin(url, verb.get("action") or url)
                    return self._post(target, {**in_call, **answer}), target
            elif verb.tag == "Dial":
                number = (verb.findtext("Number") or verb.text or "").strip()
                self.out.say(f"（转接 {number}；模拟电话没有人接）")
                if verb.get("action"):
                    target = urljoin(url, verb.get("action"))
                    return self._post(target, {**in_call, "DialCallStatus": "no-answer",
                                               "DialCallDuration": "0"}), target
            elif verb.tag == "Redirect":
                target = urljoin(url, (verb.text or "").strip())
                return self._post(target, in_call), target
            elif verb.tag in ("Hangup", "Reject"):
                self.out.say("（邻里挂断了电话）")
                return None, url
        self.out.say("（通话结束）")
        return None, url

    def _hang_up(self) -> None:
        # What Twilio posts to the number's status callback when a call ends.
        url = self.public + "/twilio/voice/status"
        params = {**self.params, "CallStatus": "completed",
                  "CallDuration": str(int(time.monotonic() - self.started))}
        try:
            self._post(url, params)
        except SimulationError as exc:
            print(f"simulate: call status not delivered: {exc}", file=sys.stderr)


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Return the stack's settings: environment and credentials.yml, else the sandbox's."""
    try:
        settings = Settings.from_env(environ)
        if settings.wechat is None and settings.twilio is None:
            generated = sandbox.load_sandbox_environment(REPO_ROOT / "var", environ)
            if generated:
                settings = Settings.from_env({**environ, **generated})
    except SettingsError as exc:
        raise SimulationError(str(exc)) from exc
    return settings


def _lines(texts: Sequence[str] | None, stdin: TextIO, out: Out) -> Iterator[str]:
    """Yield what the resident says: --text values, else lines typed or piped in."""
    interactive = not texts and stdin.isatty()
    source = iter(texts) if texts else (line.rstrip("\r\n") for line in stdin)
    while True:
        try:
            line = input("您：") if interactive else next(source)
        except (EOFError, StopIteration):
            return
        if not interactive:
            out.say(f"您：{line}")
        yield line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot simulate",
        description="Be a resident on SMS, WeChat or the voice hotline of the running stack.")
    parser.add_argument("channel", choices=["sms", "wechat", "voice"])
    parser.add_argument("--to", help="the stack's URL (default http://LINLI_HOST:LINLI_PORT)")
    parser.add_argument("--from", dest="sender",
                        help=f"phone number or WeChat openid (default {DEFAULT_PHONE} / "
                             f"{DEFAULT_OPENID})")
    parser.add_argument("--text", action="append",
                        help="say this instead of reading stdin; repeat for several turns")
    return parser


RESIDENTS: dict[str, type[Resident]] = {
    "sms": SmsResident, "wechat": WeChatResident, "voice": VoiceCaller}


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None,
         stdout: TextIO | None = None) -> int:
    """Run one simulated resident; return 0, or 1 with the reason on stderr."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    out = Out(stdout or sys.stdout)
    resident: Resident | None = None
    try:
        settings = load_settings(os.environ)
        host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
        base = (args.to or f"http://{host}:{settings.port}").rstrip("/")
        _request(f"{base}/health")  # a clear "not running" before anything else
        # Twilio signs the URL it called. Unless PUBLIC_BASE_URL says otherwise, the stack
        # takes its own address for that, which is the one we are calling.
        public = os.environ.get("PUBLIC_BASE_URL", "").strip().rstrip("/") or base
        default = DEFAULT_OPENID if args.channel == "wechat" else DEFAULT_PHONE
        resident = RESIDENTS[args.channel](base=base, public=public, settings=settings,
                                           out=out, address=args.sender or default)
        out.say(f"邻里 simulate — {args.channel} · {resident.address} → {base}  "
                f"（{resident.hint}）")
        resident.inbox.open()
        resident.run(_lines(args.text, stdin or sys.stdin, out))
    except KeyboardInterrupt:
        out.say("")
    except SimulationError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        if resident is not None:
            resident.inbox.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
