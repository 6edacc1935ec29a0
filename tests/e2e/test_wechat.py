"""A WeChat follower talks to the running stack in safe mode, exactly as WeChat would.

Pushes are encrypted and signed with wechatpy's WeChatCrypto and sent over real HTTP;
passive replies are decrypted with it. A turn slower than the passive window is
answered `success` and delivered through the fake customer-service API, so `say()`
reads the reply from wherever it went.
"""
from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import WeChatSigner

from bot.models import Attachment, Conversation, Message, Ticket, WorkOrder
from tests.e2e.providers import WECHAT_ACCOUNT, WECHAT_AES_KEY, WECHAT_APP_ID, WECHAT_TOKEN

pytestmark = pytest.mark.e2e

NUMBER = re.compile(r"GD\d{8}-\d{4}")
CRYPTO = WeChatCrypto(WECHAT_TOKEN, WECHAT_AES_KEY, WECHAT_APP_ID)


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


class Follower:
    """One WeChat follower of the official account, talking through WeChat's servers."""

    def __init__(self, stack, name: str) -> None:
        self.stack = stack
        self.openid = f"o{name}{uuid.uuid4().hex[:12]}"
        self.timings: list[float] = []

    def xml(self, msg_type: str, *, msg_id: int | None = None, **fields: str) -> str:
        parts = [f"<ToUserName><![CDATA[{WECHAT_ACCOUNT}]]></ToUserName>",
                 f"<FromUserName><![CDATA[{self.openid}]]></FromUserName>",
                 f"<CreateTime>{int(time.time())}</CreateTime>",
                 f"<MsgType><![CDATA[{msg_type}]]></MsgType>"]
        parts += [f"<{name}><![CDATA[{value}]]></{name}>" for name, value in fields.items()]
        msg_id = msg_id if msg_id is not None else uuid.uuid4().int % 10**18
        if msg_type != "event":
            parts.append(f"<MsgId>{msg_id}</MsgId>")
        return "<xml>" + "".join(parts) + "</xml>"

    def push(self, plain: str, *, forge: bool = False) -> tuple[int, str]:
        """POST an encrypted push; return the HTTP status and the raw answer."""
        ts, nonce = str(int(time.time())), str(uuid.uuid4().int % 10**9)
        encrypt = ET.fromstring(CRYPTO.encrypt_message(plain, nonce, ts)).findtext("Encrypt")
        assert encrypt
        token = "forged-token" if forge else WECHAT_TOKEN
        query = urlencode({"signature": sign(token, ts, nonce), "timestamp": ts, "nonce": nonce,
                           "openid": self.openid, "encrypt_type": "aes",
                           "msg_signature": sign(token, ts, nonce, encrypt)})
        body = (f"<xml><ToUserName><![CDATA[{WECHAT_ACCOUNT}]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>").encode()
        request = urllib.request.Request(f"{self.stack.base_url}/webhooks/wechat?{query}",
                                         data=body, headers={"Content-Type": "text/xml"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, answer = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, answer = error.code, error.read().decode(errors="replace")
        self.timings.append(time.monotonic() - started)
        return status, answer

    def say(self, plain: str) -> list[str]:
        """Push one message; return what reached the follower, passively or by the API."""
        before = len(self.stack.providers.messages_to(self.openid))
        status, answer = self.push(plain)
        assert status == 200, answer
        assert self.timings[-1] < 5.0, f"WeChat gives up after 5 s; took {self.timings[-1]:.1f}"
        if answer != "success":
            return [passive_text(answer, self.openid)]
        delivered = self.stack.providers.wait_for(self.openid, before + 1, timeout_s=60)
        time.sleep(1.0)  # the rest of a multi-message answer
        return self.stack.providers.messages_to(self.openid)[before:] or delivered[before:]

    def text(self, content: str, **kwargs: int) -> list[str]:
        return self.say(self.xml("text", Content=content, **kwargs))


def passive_text(answer: str, openid: str) -> str:
    """Decrypt a passive reply as WeChat does and return its text."""
    sealed = ET.fromstring(answer)
    plain = CRYPTO.decrypt_message(answer, sealed.findtext("MsgSignature"),
                                   sealed.findtext("TimeStamp"), sealed.findtext("Nonce"))
    reply = ET.fromstring(plain)
    assert reply.findtext("ToUserName") == openid
    assert reply.findtext("FromUserName") == WECHAT_ACCOUNT
    assert reply.findtext("MsgType") == "text"
    return reply.findtext("Content") or ""


def next_answer(question: str) -> str:
    """Answer whatever the bot asks next, as the resident with the broken light would."""
    if "对吗" in question:
        return "对"
    for asked, answer in (("电话", "13912345678"), ("门牌", "301"), ("几单元", "2单元"),
                          ("几号楼", "3号楼"), ("什么时候", "明天上午")):
        if asked in question:
            return answer
    raise AssertionError(f"unexpected question: {question!r}")


def test_report_a_repair_over_wechat(stack):
    follower = Follower(stack, "Repair")
    replies = follower.text("3号楼2单元的楼道灯坏了")
    for _ in range(8):
        joined = "\n".join(replies)
        assert re.search(r"[\u4e00-\u9fff]", joined), replies
        if NUMBER.search(joined):
            break
        replies = follower.text(next_answer(joined))
    match = NUMBER.search("\n".join(replies))
    assert match, replies
    with stack.sessions() as session:
        ticket = session.execute(select(Ticket).where(Ticket.number == match.group(0))).scalar_one()
        conversation = session.get(Conversation, ticket.conversation_id)
        lead = session.execute(select(WorkOrder).where(WorkOrder.ticket_id == ticket.id,
                                                       WorkOrder.role == "lead")).scalar_one()
        assert ticket.category == "public_facility"
        assert (ticket.building, ticket.unit) == ("3", "2")
        assert ticket.channel == "wechat"
        assert conversation.channel == "wechat" and conversation.sender_key == follower.openid
        assert lead.department == ticket.lead_department and lead.assignee
        ticket_id, conversation_id = ticket.id, conversation.id

    # A photo sent afterwards is kept as evidence on the order.
    follower.say(follower.xml("image", PicUrl="http://mmbiz.qpic.cn/light.jpg",
                              MediaId="media-light-1"))
    with stack.sessions() as session:
        photo = session.execute(select(Attachment).where(
            Attachment.conversation_id == conversation_id)).scalar_one()
        assert (photo.media_id, photo.ticket_id) == ("media-light-1", ticket_id)
    print(f"wechat push round trips (s): {[round(t, 2) for t in follower.timings]}")


def test_url_check_and_forged_push(stack):
    ts, nonce = str(int(time.time())), "4711"
    query = {"signature": sign(WECHAT_TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce,
             "echostr": "echo-7261"}
    with urllib.request.urlopen(f"{stack.base_url}/webhooks/wechat?{urlencode(query)}",
                                timeout=10) as response:
        assert response.status == 200 and response.read() == b"echo-7261"
    query["signature"] = sign("forged-token", ts, nonce)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{stack.base_url}/webhooks/wechat?{urlencode(query)}",
                               timeout=10)
    assert refused.value.code == 403

    follower = Follower(stack, "Forger")
    status, _ = follower.push(follower.xml("text", Content="3号楼电梯坏了"), forge=True)
    assert status == 403
    with stack.sessions() as session:
        stored = session.execute(select(func.count()).select_from(Conversation).where(
            Conversation.sender_key == follower.openid)).scalar_one()
    assert stored == 0


def test_a_retry_with_the_same_msg_id_is_answered_once(stack):
    follower = Follower(stack, "Retry")
    push = follower.xml("text", Content="你好", msg_id=24_000_000_000_777_001)
    first = follower.say(push)
    assert first and all(first), first
    status, answer = follower.push(push)
    assert (status, answer) == (200, "success")
    time.sleep(1.0)
    with stack.sessions() as session:
        rows = session.execute(
            select(Message.direction, func.count()).join(Conversation)
            .where(Conversation.sender_key == follower.openid).group_by(Message.direction)
        ).all()
    assert dict(rows)["in"] == 1
    assert stack.providers.messages_to(follower.openid) in ([], first)


def test_location_and_image_messages_are_accepted(stack):
    follower = Follower(stack, "Media")
    replies = follower.say(follower.xml("location", Location_X="30.2741", Location_Y="120.1551",
                                        Scale="16", Label="邻里小区3号楼"))
    assert replies and re.search(r"[\u4e00-\u9fff]", replies[0]), replies
    replies = follower.say(follower.xml("image", PicUrl="http://mmbiz.qpic.cn/pic.jpg",
                                        MediaId="media-pic-9"))
    assert replies and re.search(r"[\u4e00-\u9fff]", replies[0]), replies
    with stack.sessions() as session:
        payloads = session.execute(
            select(Message.payload).join(Conversation)
            .where(Conversation.sender_key == follower.openid, Message.direction == "in")
            .order_by(Message.id)).scalars().all()
        photos = session.execute(select(func.count()).select_from(Attachment).join(
            Conversation, Attachment.conversation_id == Conversation.id).where(
            Conversation.sender_key == follower.openid)).scalar_one()
    assert payloads[0]["location"]["label"] == "邻里小区3号楼"
    assert payloads[1]["image"]["media_id"] == "media-pic-9"
    assert photos == 1
