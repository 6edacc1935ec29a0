"""WeChat channel: signatures, safe mode, every message type, hostile XML, window, token."""
from __future__ import annotations

import asyncio
import base64
import random
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import WeChatSigner

from channels import wechat as wx

pytestmark = pytest.mark.unit

TOKEN = "linli_token_2024"
APP_ID = "wx1234567890abcdef"
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aQ"  # 43 chars, as the console shows it
OPENID = "oLinli_Resident-0001abcdefgh"
ACCOUNT = "gh_0123456789ab"
CREATE_TIME = 1732780800  # 2024-11-28 08:00 UTC
TS = str(CREATE_TIME)
NONCE = "1320612870"
NOW = datetime.fromtimestamp(CREATE_TIME, tz=UTC)


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


SIG = sign(TOKEN, TS, NONCE)


def wechat_xml(msg_type: str, *, msg_id: int | None = 24828000000000001,
               create_time: int = CREATE_TIME, sender: str = OPENID, **fields: str) -> str:
    """Build a push the way WeChat writes it: strings in CDATA, numbers bare."""
    parts = [
        f"<ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>",
        f"<FromUserName><![CDATA[{sender}]]></FromUserName>",
        f"<CreateTime>{create_time}</CreateTime>",
        f"<MsgType><![CDATA[{msg_type}]]></MsgType>",
    ]
    parts += [f"<{name}><![CDATA[{value}]]></{name}>" for name, value in fields.items()]
    if msg_id is not None:
        parts.append(f"<MsgId>{msg_id}</MsgId>")
    return "<xml>" + "".join(parts) + "</xml>"


def event_xml(event: str, **fields: str) -> str:
    return wechat_xml("event", msg_id=None, Event=event, **fields)


def parse_plain(body: str | bytes, **overrides: object) -> wx.WeChatInbound:
    kwargs: dict[str, object] = {"token": TOKEN, "app_id": APP_ID, "signature": SIG,
                                 "timestamp": TS, "nonce": NONCE}
    kwargs.update(overrides)
    data = body.encode("utf-8") if isinstance(body, str) else body
    return wx.parse_message(data, **kwargs)  # type: ignore[arg-type]


def encrypted_push(plain: str, *, app_id: str = APP_ID) -> tuple[bytes, str]:
    """Encrypt a push with wechatpy and wrap it as WeChat's safe-mode envelope."""
    sealed = ET.fromstring(WeChatCrypto(TOKEN, AES_KEY, app_id).encrypt_message(plain, NONCE, TS))
    envelope = (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
                f"<Encrypt><![CDATA[{sealed.findtext('Encrypt')}]]></Encrypt></xml>")
    return envelope.encode(), sealed.findtext("MsgSignature") or ""


def parse_safe(body: bytes, msg_signature: str | None, **overrides: object) -> wx.WeChatInbound:
    kwargs: dict[str, object] = {"token": TOKEN, "app_id": APP_ID, "aes_key": AES_KEY,
                                 "signature": SIG, "msg_signature": msg_signature,
                                 "timestamp": TS, "nonce": NONCE}
    kwargs.update(overrides)
    return wx.parse_message(body, **kwargs)  # type: ignore[arg-type]


# --- URL verification and signatures ----------------------------------------------------


def test_verify_url_returns_echostr_when_signed() -> None:
    assert wx.verify_url(token=TOKEN, signature=SIG, timestamp=TS, nonce=NONCE,
                         echostr="5837397520946498") == "5837397520946498"


@pytest.mark.parametrize("field", ["signature", "timestamp", "nonce", "echostr"])
@pytest.mark.parametrize("missing", [None, ""])
def test_verify_url_refuses_missing_parameters(field: str, missing: str | None) -> None:
    params = {"signature": SIG, "timestamp": TS, "nonce": NONCE, "echostr": "echo"}
    params[field] = missing  # type: ignore[assignment]
    with pytest.raises(wx.InvalidSignature):
        wx.verify_url(token=TOKEN, **params)  # type: ignore[arg-type]


def test_verify_url_refuses_forged_signature() -> None:
    with pytest.raises(wx.InvalidSignature):
        wx.verify_url(token=TOKEN, signature=sign("other", TS, NONCE), timestamp=TS,
                      nonce=NONCE, echostr="echo")


def test_check_signature() -> None:
    assert wx.check_signature(token=TOKEN, signature=SIG, timestamp=TS, nonce=NONCE)
    assert not wx.check_signature(token=TOKEN, signature=SIG, timestamp=TS, nonce="other")
    assert not wx.check_signature(token=TOKEN, signature=SIG.upper(), timestamp=TS, nonce=NONCE)
    assert not wx.check_signature(token=TOKEN, signature="签名", timestamp=TS, nonce=NONCE)
    assert not wx.check_signature(token="", signature=sign("", TS, NONCE), timestamp=TS,
                                  nonce=NONCE)


# --- plaintext pushes --------------------------------------------------------------------


def test_text_message_becomes_hub_inbound() -> None:
    parsed = parse_plain(wechat_xml("text", Content="3号楼2单元电梯坏了"))
    assert parsed.kind == "text" and parsed.for_hub and not parsed.encrypted
    assert parsed.inbound.channel == "wechat"
    assert parsed.inbound.sender_key == parsed.inbound.wechat_openid == OPENID
    assert parsed.inbound.text == "3号楼2单元电梯坏了"
    assert parsed.inbound.provider_message_id == "24828000000000001"
    assert parsed.account == ACCOUNT and parsed.created_at == NOW and parsed.reply_hint is None


@pytest.mark.parametrize("overrides", [
    {"signature": sign("other", TS, NONCE)}, {"signature": None}, {"signature": ""},
    {"timestamp": None}, {"nonce": ""}, {"token": "wrong"},
])
def test_plaintext_push_refuses_bad_signature(overrides: dict[str, object]) -> None:
    with pytest.raises(wx.InvalidSignature):
        parse_plain(wechat_xml("text", Content="你好"), **overrides)


def test_signature_is_checked_before_the_body_is_parsed() -> None:
    with pytest.raises(wx.InvalidSignature):
        parse_plain(b"<!DOCTYPE x><xml/>", signature="forged")


def test_stale_timestamp_is_refused_when_clock_given() -> None:
    body = wechat_xml("text", Content="你好")
    assert parse_plain(body, now=NOW + timedelta(minutes=4)).kind == "text"
    with pytest.raises(wx.StaleRequest):
        parse_plain(body, now=NOW + timedelta(minutes=6))
    with pytest.raises(wx.StaleRequest):
        parse_plain(body, now=NOW - timedelta(minutes=6))


def test_voice_uses_wechat_recognition() -> None:
    parsed = parse_plain(wechat_xml("voice", MediaId="media_v1", Format="amr",
                                    Recognition="楼道灯不亮了。"))
    assert parsed.kind == "voice" and parsed.for_hub
    assert parsed.inbound.text == "楼道灯不亮了。"
    assert parsed.inbound.payload == {"voice": {"media_id": "media_v1", "format": "amr",
                                                "recognized": True}}


@pytest.mark.parametrize("recognition", [None, "", "  ", "。"])
def test_voice_without_recognition_asks_to_repeat(recognition: str | None) -> None:
    fields = {"MediaId": "media_v1", "Format": "amr"}
    if recognition is not None:
        fields["Recognition"] = recognition
    parsed = parse_plain(wechat_xml("voice", **fields))
    assert parsed.kind == "voice" and not parsed.for_hub
    assert parsed.reply_hint == wx.REPLY_VOICE_UNCLEAR and parsed.inbound.text == ""
    assert parsed.inbound.payload is not None
    assert parsed.inbound.payload["voice"]["recognized"] is False


def test_image_is_kept_as_evidence() -> None:
    parsed = parse_plain(wechat_xml("image", PicUrl="http://mmbiz.qpic.cn/abc/0",
                                    MediaId="media_i1"))
    assert parsed.kind == "image" and parsed.for_hub and parsed.inbound.text == ""
    assert parsed.inbound.payload == {"image": {"url": "http://mmbiz.qpic.cn/abc/0",
                                                "media_id": "media_i1"}}


def test_location_gives_label_as_text() -> None:
    parsed = parse_plain(wechat_xml("location", Location_X="39.915119", Location_Y="116.403963",
                                    Scale="16", Label="北京市东城区幸福里小区3号楼"))
    assert parsed.kind == "location" and parsed.inbound.text == "北京市东城区幸福里小区3号楼"
    assert parsed.inbound.payload == {"location": {
        "lat": 39.915119, "lng": 116.403963, "label": "北京市东城区幸福里小区3号楼",
        "scale": "16"}}


@pytest.mark.parametrize(("lat", "lng"), [("abc", "116.4"), ("39.9", ""), ("91", "116"),
                                          ("39.9", "-181")])
def test_location_with_bad_coordinates_is_malformed(lat: str, lng: str) -> None:
    with pytest.raises(wx.MalformedMessage):
        parse_plain(wechat_xml("location", Location_X=lat, Location_Y=lng, Label="x"))


def test_subscribe_gets_welcome_and_event_id() -> None:
    parsed = parse_plain(event_xml("subscribe"))
    assert parsed.kind == "subscribe" and not parsed.for_hub
    assert parsed.reply_hint == wx.REPLY_WELCOME
    assert parsed.inbound.provider_message_id == f"{OPENID}:{CREATE_TIME}:subscribe"
    assert parsed.inbound.payload == {"event": "subscribe", "scene": None}


def test_subscribe_by_qr_code_keeps_scene() -> None:
    parsed = parse_plain(event_xml("subscribe", EventKey="qrscene_building3", Ticket="t"))
    assert parsed.kind == "subscribe" and parsed.inbound.payload is not None
    assert parsed.inbound.payload["scene"] == "building3"


def test_unsubscribe() -> None:
    parsed = parse_plain(event_xml("unsubscribe"))
    assert parsed.kind == "unsubscribe" and not parsed.for_hub and parsed.reply_hint is None


@pytest.mark.parametrize("button", wx.menu_definition()["button"])
def test_every_menu_button_parses_to_its_text(button: dict[str, str]) -> None:
    parsed = parse_plain(event_xml("CLICK", EventKey=button["key"]))
    assert parsed.kind == "click" and parsed.for_hub
    assert parsed.inbound.text == button["name"] == wx.MENU_KEYS[button["key"]]


def test_menu_texts_are_the_documented_ones() -> None:
    assert sorted(wx.MENU_KEYS.values()) == sorted(["报修", "查询进度", "转人工"])


def test_unknown_menu_key_is_unsupported() -> None:
    parsed = parse_plain(event_xml("CLICK", EventKey="OLD_BUTTON"))
    assert parsed.kind == "unsupported" and parsed.reply_hint == wx.REPLY_UNSUPPORTED


@pytest.mark.parametrize("event", ["VIEW", "LOCATION", "SCAN", "TEMPLATESENDJOBFINISH"])
def test_events_nobody_said_are_ignored(event: str) -> None:
    parsed = parse_plain(event_xml(event, EventKey="x"))
    assert parsed.kind == "ignored" and not parsed.for_hub and parsed.reply_hint is None


@pytest.mark.parametrize("body", [
    wechat_xml("video", MediaId="m", ThumbMediaId="t"),
    wechat_xml("shortvideo", MediaId="m", ThumbMediaId="t"),
    wechat_xml("link", Title="t", Description="d", Url="http://x"),
    wechat_xml("file", Title="a.pdf"),
    wechat_xml("hologram"),
    event_xml("pic_weixin", EventKey="k"),
])
def test_other_types_are_unsupported(body: str) -> None:
    parsed = parse_plain(body)
    assert parsed.kind == "unsupported" and not parsed.for_hub
    assert parsed.reply_hint == wx.REPLY_UNSUPPORTED


def test_provider_message_id_is_stable_across_retries() -> None:
    text = wechat_xml("text", Content="你好")
    assert parse_plain(text).inbound.provider_message_id == parse_plain(
        text).inbound.provider_message_id
    first = parse_plain(event_xml("CLICK", EventKey="LINLI_REPORT"))
    again = parse_plain(event_xml("CLICK", EventKey="LINLI_REPORT"))
    later = parse_plain(wechat_xml("event", msg_id=None, create_time=CREATE_TIME + 1,
                                   Event="CLICK", EventKey="LINLI_REPORT"))
    assert first.inbound.provider_message_id == again.inbound.provider_message_id
    assert later.inbound.provider_message_id != first.inbound.provider_message_id


@pytest.mark.parametrize("body", [
    wechat_xml("text", sender="", Content="x"),
    wechat_xml("text", sender="o abc", Content="x"),
    wechat_xml("text", create_time="soon", Content="x"),  # type: ignore[arg-type]
    wechat_xml("event", msg_id=None),
    "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content><b>x</b></Content></xml>",
    "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName>"
    "<FromUserName>o2</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType></xml>",
])
def test_pushes_missing_or_doubling_fields_are_malformed(body: str) -> None:
    with pytest.raises(wx.MalformedMessage):
        parse_plain(body)


# --- safe mode ----------------------------------------------------------------------------


def test_encrypted_text_message() -> None:
    body, msg_signature = encrypted_push(wechat_xml("text", Content="我家漏水了"))
    parsed = parse_safe(body, msg_signature)
    assert parsed.encrypted and parsed.kind == "text"
    assert parsed.inbound.text == "我家漏水了" and parsed.inbound.sender_key == OPENID


def test_wechatpy_sealed_message_parses_as_is() -> None:
    sealed = WeChatCrypto(TOKEN, AES_KEY, APP_ID).encrypt_message(
        wechat_xml("voice", MediaId="m", Format="amr", Recognition="停水了"), NONCE, TS)
    msg_signature = ET.fromstring(sealed).findtext("MsgSignature")
    assert parse_safe(sealed.encode(), msg_signature).inbound.text == "停水了"


@pytest.mark.parametrize("msg_signature", [None, "", "0" * 40, SIG])
def test_encrypted_push_refuses_bad_msg_signature(msg_signature: str | None) -> None:
    body, _ = encrypted_push(wechat_xml("text", Content="x"))
    with pytest.raises(wx.InvalidSignature):
        parse_safe(body, msg_signature)


def test_tampered_ciphertext_breaks_the_signature() -> None:
    body, msg_signature = encrypted_push(wechat_xml("text", Content="x"))
    tampered = body.replace(b"<Encrypt><![CDATA[", b"<Encrypt><![CDATA[A")
    with pytest.raises(wx.InvalidSignature):
        parse_safe(tampered, msg_signature)


def test_message_sealed_for_another_app_is_refused() -> None:
    body, msg_signature = encrypted_push(wechat_xml("text", Content="x"), app_id="wxother")
    with pytest.raises(wx.InvalidSignature):
        parse_safe(body, msg_signature)


@pytest.mark.parametrize("garbage", ["not base64 at all!", "QUJD", "A" * 64])
def test_signed_garbage_ciphertext_is_malformed(garbage: str) -> None:
    body = f"<xml><ToUserName>{ACCOUNT}</ToUserName><Encrypt>{garbage}</Encrypt></xml>".encode()
    with pytest.raises(wx.MalformedMessage):
        parse_safe(body, sign(TOKEN, TS, NONCE, garbage))


def test_plaintext_push_in_safe_mode_is_malformed() -> None:
    with pytest.raises(wx.MalformedMessage):
        parse_safe(wechat_xml("text", Content="x").encode(), "whatever")


def test_encrypted_push_without_aes_key_is_malformed() -> None:
    body, _ = encrypted_push(wechat_xml("text", Content="x"))
    with pytest.raises(wx.MalformedMessage):
        parse_plain(body)


def test_decrypted_document_is_checked_for_declarations_too() -> None:
    inner = '<!DOCTYPE xml [<!ENTITY a "x">]>' + wechat_xml("text", Content="&a;")
    body, msg_signature = encrypted_push(inner)
    with pytest.raises(wx.UnsafeXml):
        parse_safe(body, msg_signature)


@pytest.mark.parametrize("key", ["short", AES_KEY[:-1] + "!", AES_KEY + "A"])
def test_bad_aes_key_is_a_config_error(key: str) -> None:
    with pytest.raises(wx.WeChatConfigError):
        wx.make_crypto(token=TOKEN, aes_key=key, app_id=APP_ID)


# --- hostile and broken bodies -----------------------------------------------------------

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
              for i in range(1, 10))
    + ']><xml><Content>&lol9;</Content></xml>'
)
XXE = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
       '<xml><ToUserName>gh_1</ToUserName><Content>&secret;</Content></xml>')
EXTERNAL_DTD = '<!DOCTYPE xml SYSTEM "http://evil.example/x.dtd"><xml><a>1</a></xml>'
PARAMETER_ENTITY = ('<!DOCTYPE xml [<!ENTITY % p SYSTEM "http://evil.example/p">%p;]>'
                    '<xml><a>1</a></xml>')
HIDDEN_AFTER_COMMENT = '<!-- <xml> --><!doctype xml [<!ENTITY a "b">]><xml><a>&a;</a></xml>'


@pytest.mark.parametrize("body", [BILLION_LAUGHS, XXE, EXTERNAL_DTD, PARAMETER_ENTITY,
                                  HIDDEN_AFTER_COMMENT])
def test_declarations_are_refused_before_parsing(body: str) -> None:
    with pytest.raises(wx.UnsafeXml):
        wx.parse_xml(body.encode())
    with pytest.raises(wx.UnsafeXml):
        parse_plain(body)


def test_declarations_never_reach_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def parser_must_not_run(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the XML parser saw a document with a DOCTYPE")

    monkeypatch.setattr(wx.safe_et, "fromstring", parser_must_not_run)
    with pytest.raises(wx.UnsafeXml):
        wx.parse_xml(BILLION_LAUGHS.encode())


def test_mutated_bodies_only_raise_typed_errors() -> None:
    rng = random.Random(20241128)
    base = wechat_xml("location", Location_X="39.9", Location_Y="116.4", Label="小区").encode()
    for _ in range(500):
        body = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(body))
            if rng.random() < 0.5:
                body[position] = rng.randrange(256)
            else:
                body.insert(position, rng.choice(b"<>![]&;%/\"'x\x00"))
        try:
            parse_plain(bytes(body))
        except wx.WeChatError:
            pass


def test_signed_random_ciphertexts_only_raise_typed_errors() -> None:
    rng = random.Random(7)
    for size in (16, 32, 48, 64, 256):
        garbage = base64.b64encode(rng.randbytes(size)).decode()
        body = f"<xml><Encrypt>{garbage}</Encrypt></xml>".encode()
        # Garbage that happens to unpad cleanly fails the app-id check instead.
        with pytest.raises((wx.MalformedMessage, wx.InvalidSignature)):
            parse_safe(body, sign(TOKEN, TS, NONCE, garbage))


def test_declaration_text_inside_cdata_is_just_text() -> None:
    parsed = parse_plain(wechat_xml("text", Content="<!DOCTYPE 是什么意思"))
    assert parsed.inbound.text == "<!DOCTYPE 是什么意思"


@pytest.mark.parametrize("body", [
    b"<xml><Content>x</xml>", b"not xml at all", b"<notxml><a>1</a></notxml>",
    b"<xml><a>1</a></xml><xml/>", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
    b"<xml><a>\x00</a></xml>", "<xml><a>中</a></xml>".encode("utf-16"),
    b"<xml>" + b"<a>" * 20 + b"x" + b"</a>" * 20 + b"</xml>",
])
def test_broken_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(wx.MalformedMessage):
        parse_plain(body)


@pytest.mark.parametrize("body", [b"", b"   \n", "\ufeff".encode()])
def test_empty_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(wx.MalformedMessage, match="empty"):
        parse_plain(body)


def test_size_limit_is_64_kib() -> None:
    message = wechat_xml("text", Content="你好").encode()
    at_limit = message + b" " * (wx.MAX_BODY_BYTES - len(message))
    assert parse_plain(at_limit).inbound.text == "你好"
    with pytest.raises(wx.MessageTooLarge):
        parse_plain(at_limit + b" ")


# --- replies ----------------------------------------------------------------------------


def test_passive_text_reply_round_trips() -> None:
    xml = wx.render_text_reply(to_user=OPENID, from_user=ACCOUNT, text="已为您登记]]>报修",
                               now=NOW)
    fields = wx.parse_xml(xml)
    assert fields == {"MsgType": "text", "Content": "已为您登记]]>报修", "FromUserName": ACCOUNT,
                      "ToUserName": OPENID, "CreateTime": TS}


def test_passive_reply_drops_characters_xml_forbids() -> None:
    xml = wx.render_text_reply(to_user=OPENID, from_user=ACCOUNT, text="好\x00的\x1b", now=NOW)
    assert wx.parse_xml(xml)["Content"] == "好的"


def test_encrypted_reply_decrypts_with_wechatpy() -> None:
    crypto = wx.make_crypto(token=TOKEN, aes_key=AES_KEY, app_id=APP_ID)
    sealed = wx.render_text_reply(to_user=OPENID, from_user=ACCOUNT, text="收到", now=NOW,
                                  crypto=crypto, nonce=NONCE)
    envelope = ET.fromstring(sealed)
    assert envelope.findtext("TimeStamp") == TS
    plain = WeChatCrypto(TOKEN, AES_KEY, APP_ID).decrypt_message(
        sealed, envelope.findtext("MsgSignature"), TS, NONCE)
    assert wx.parse_xml(plain)["Content"] == "收到"


@pytest.mark.parametrize("kwargs", [
    {"text": " \x00 "}, {"to_user": "o abc"}, {"now": NOW.replace(tzinfo=None)},
    {"crypto": WeChatCrypto(TOKEN, AES_KEY, APP_ID), "nonce": None},
])
def test_reply_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"to_user": OPENID, "from_user": ACCOUNT, "text": "好",
                                    "now": NOW}
    arguments.update(kwargs)
    with pytest.raises(ValueError):
        wx.render_text_reply(**arguments)  # type: ignore[arg-type]


def test_success_answer_is_the_literal_wechat_expects() -> None:
    assert wx.SUCCESS == "success"


def test_customer_service_payload() -> None:
    assert wx.customer_service_payload(OPENID, "工单GD20241128-0007已派单") == {
        "touser": OPENID, "msgtype": "text", "text": {"content": "工单GD20241128-0007已派单"}}
    with pytest.raises(ValueError):
        wx.customer_service_payload("", "x")
    with pytest.raises(ValueError):
        wx.customer_service_payload(OPENID, "  ")


@pytest.mark.parametrize(("body", "kind"), [
    ({"errcode": 0, "errmsg": "ok"}, "ok"), ({}, "ok"), ({"errcode": 40001}, "token"),
    ({"errcode": 42001}, "token"), ({"errcode": 45015}, "window"),
    ({"errcode": 45047}, "window"), ({"errcode": 45009}, "other"),
])
def test_api_error_kind(body: dict[str, object], kind: str) -> None:
    assert wx.api_error_kind(body) == kind


def test_parse_token_response() -> None:
    assert wx.parse_token_response({"access_token": "T1", "expires_in": 7200}) == \
        wx.FetchedToken("T1", 7200)
    with pytest.raises(wx.TokenFetchError, match="40164"):
        wx.parse_token_response({"errcode": 40164, "errmsg": "invalid ip"})
    with pytest.raises(wx.TokenFetchError):
        wx.parse_token_response({"access_token": "", "expires_in": 7200})


# --- customer-service window -------------------------------------------------------------


def test_window_is_closed_before_the_resident_writes() -> None:
    window = wx.ServiceWindow()
    assert not window.can_send(NOW) and window.remaining(NOW) == 0
    with pytest.raises(wx.ServiceWindowClosed):
        window.record_sent(NOW)


def test_window_closes_exactly_at_48_hours() -> None:
    window = wx.ServiceWindow()
    window.record_inbound(NOW)
    assert window.can_send(NOW)
    assert window.can_send(NOW + timedelta(hours=48) - timedelta(microseconds=1))
    assert not window.can_send(NOW + timedelta(hours=48))
    assert window.expires_at() == NOW + timedelta(hours=48)
    with pytest.raises(wx.ServiceWindowClosed):
        window.record_sent(NOW + timedelta(hours=48))


def test_at_most_five_messages_per_resident_message() -> None:
    window = wx.ServiceWindow()
    window.record_inbound(NOW)
    for minute in range(5):
        window.record_sent(NOW + timedelta(minutes=minute))
    assert not window.can_send(NOW + timedelta(minutes=6))
    with pytest.raises(wx.ServiceWindowClosed):
        window.record_sent(NOW + timedelta(minutes=6))
    window.record_inbound(NOW + timedelta(hours=1))
    assert window.remaining(NOW + timedelta(hours=1)) == 5


def test_quotas_do_not_add_up() -> None:
    window = wx.ServiceWindow()
    window.record_inbound(NOW)
    window.record_inbound(NOW + timedelta(minutes=1))
    assert window.remaining(NOW + timedelta(minutes=1)) == 5
    window.record_sent(NOW + timedelta(minutes=2))
    window.record_inbound(NOW + timedelta(minutes=3))
    assert window.remaining(NOW + timedelta(minutes=3)) == 5


def test_late_old_message_does_not_reopen_the_window() -> None:
    window = wx.ServiceWindow()
    window.record_inbound(NOW)
    window.record_sent(NOW)
    window.record_inbound(NOW - timedelta(hours=1))
    assert window.last_inbound_at == NOW and window.remaining(NOW) == 4


def test_window_refuses_naive_datetimes_and_times_before_the_message() -> None:
    window = wx.ServiceWindow()
    with pytest.raises(ValueError):
        window.record_inbound(NOW.replace(tzinfo=None))
    window.record_inbound(NOW)
    assert not window.can_send(NOW - timedelta(seconds=1))


# --- access token cache ------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class FakeFetcher:
    def __init__(self, *, expires_in: int = 7200, gate: asyncio.Event | None = None) -> None:
        self.calls = 0
        self.expires_in = expires_in
        self.gate = gate
        self.fail = False

    async def __call__(self) -> wx.FetchedToken:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise wx.TokenFetchError("WeChat said no")
        return wx.FetchedToken(f"T{self.calls}", self.expires_in)


def make_cache(fetcher: FakeFetcher, clock: FakeClock) -> wx.AccessTokenCache:
    return wx.InProcessAccessTokenCache(fetcher=fetcher, clock=clock)


async def test_token_is_fetched_once_and_reused() -> None:
    fetcher, clock = FakeFetcher(), FakeClock()
    cache = make_cache(fetcher, clock)
    assert await cache.get() == "T1"
    clock.now += timedelta(seconds=7200 - 301)
    assert await cache.get() == "T1" and fetcher.calls == 1


async def test_token_is_refreshed_before_it_expires() -> None:
    fetcher, clock = FakeFetcher(), FakeClock()
    cache = make_cache(fetcher, clock)
    await cache.get()
    clock.now += timedelta(seconds=7200 - 300)
    assert await cache.get() == "T2" and fetcher.calls == 2


async def test_short_lived_token_still_lives_half_its_life() -> None:
    fetcher, clock = FakeFetcher(expires_in=400), FakeClock()
    cache = make_cache(fetcher, clock)
    await cache.get()
    clock.now += timedelta(seconds=199)
    assert await cache.get() == "T1"
    clock.now += timedelta(seconds=1)
    assert await cache.get() == "T2"


async def test_concurrent_callers_share_one_fetch() -> None:
    gate = asyncio.Event()
    fetcher, clock = FakeFetcher(gate=gate), FakeClock()
    cache = make_cache(fetcher, clock)
    waiting = [asyncio.create_task(cache.get()) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    assert set(await asyncio.gather(*waiting)) == {"T1"} and fetcher.calls == 1


async def test_refresh_replaces_a_rejected_token_once() -> None:
    fetcher, clock = FakeFetcher(), FakeClock()
    cache = make_cache(fetcher, clock)
    stale = await cache.get()
    fresh = await asyncio.gather(*(cache.refresh(stale=stale) for _ in range(5)))
    assert set(fresh) == {"T2"} and fetcher.calls == 2
    assert await cache.get() == "T2"
    assert await cache.refresh() == "T3"


async def test_failed_fetch_caches_nothing_and_drops_the_rejected_token() -> None:
    fetcher, clock = FakeFetcher(), FakeClock()
    cache = make_cache(fetcher, clock)
    stale = await cache.get()
    fetcher.fail = True
    with pytest.raises(wx.TokenFetchError):
        await cache.refresh(stale=stale)
    with pytest.raises(wx.TokenFetchError):
        await cache.get()
    fetcher.fail = False
    assert await cache.get() == "T4" and fetcher.calls == 4


async def test_fetcher_returning_an_expired_token_is_an_error() -> None:
    cache = make_cache(FakeFetcher(expires_in=0), FakeClock())
    with pytest.raises(wx.TokenFetchError):
        await cache.get()
