"""Twilio SMS and voice channels: signatures, parsing, segment fitting and exact TwiML."""
from __future__ import annotations

import random

import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from channels import twilio_sms as sms
from channels import twilio_voice as voice
from channels.twilio_sms import InvalidSms
from channels.twilio_voice import InvalidVoiceRequest, VoiceTurn

pytestmark = pytest.mark.unit

TOKEN = "12345678901234567890123456789012"
PUBLIC_URL = "https://linli.example.org/twilio/sms?community=yangguang"
XML = '<?xml version="1.0" encoding="UTF-8"?>'


def sms_params(**overrides: str) -> dict[str, str]:
    params = {
        "MessageSid": "SM0123456789abcdef0123456789abcdef",
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "From": "+8613800001234",
        "To": "+8657100000000",
        "Body": "3号楼电梯坏了😭，有人被困吗？",
        "NumMedia": "0",
    }
    params.update(overrides)
    return params


def sign(params: object, url: str = PUBLIC_URL, token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


# --- signatures -------------------------------------------------------------------------


def test_valid_signature_with_chinese_and_emoji() -> None:
    params = sms_params()
    assert sms.verify(auth_token=TOKEN, url=PUBLIC_URL, params=params, signature=sign(params))


def test_forged_signature_is_rejected() -> None:
    params = sms_params()
    forged = sign(params, token="another-account-token-0000000000")
    assert not sms.verify(auth_token=TOKEN, url=PUBLIC_URL, params=params, signature=forged)


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_signature_is_rejected(signature: str | None) -> None:
    params = sms_params()
    assert not sms.verify(auth_token=TOKEN, url=PUBLIC_URL, params=params, signature=signature)


def test_tampered_body_is_rejected() -> None:
    params = sms_params()
    signature = sign(params)
    tampered = sms_params(Body="3号楼电梯好了")
    assert not sms.verify(auth_token=TOKEN, url=PUBLIC_URL, params=tampered, signature=signature)


def test_url_behind_a_proxy_must_be_the_public_one() -> None:
    params = sms_params()
    signature = sign(params)
    internal = "http://127.0.0.1:8080/twilio/sms?community=yangguang"
    assert not sms.verify(auth_token=TOKEN, url=internal, params=params, signature=signature)
    changed_query = "https://linli.example.org/twilio/sms?community=other"
    assert not sms.verify(auth_token=TOKEN, url=changed_query, params=params, signature=signature)
    # Twilio signs with or without the default port; both forms of the public URL pass.
    with_port = "https://linli.example.org:443/twilio/sms?community=yangguang"
    assert sms.verify(auth_token=TOKEN, url=with_port, params=params, signature=signature)


def test_empty_auth_token_fails_closed() -> None:
    params = sms_params()
    signature = sign(params, token="")
    assert not sms.verify(auth_token="", url=PUBLIC_URL, params=params, signature=signature)


def test_repeated_form_fields_from_aiohttp_multidict() -> None:
    params = MultiDict(sms_params())
    params.add("MediaUrl0", "https://api.twilio.com/m/1")
    params.add("MediaUrl0", "https://api.twilio.com/m/2")
    signature = sign(params)
    assert sms.verify(auth_token=TOKEN, url=PUBLIC_URL, params=params, signature=signature)
    assert not sms.verify(
        auth_token=TOKEN, url=PUBLIC_URL, params=MultiDict(sms_params()), signature=signature
    )


# --- parsing SMS ------------------------------------------------------------------------


def test_parse_sms_chinese_mobile() -> None:
    inbound = sms.parse_sms(sms_params())
    assert inbound.channel == "sms"
    assert inbound.phone == "13800001234"
    assert inbound.sender_key == "13800001234"
    assert inbound.text == "3号楼电梯坏了😭，有人被困吗？"
    assert inbound.provider_message_id == "SM0123456789abcdef0123456789abcdef"
    assert inbound.payload is None


def test_parse_sms_foreign_sender_keeps_raw_key_without_phone() -> None:
    inbound = sms.parse_sms(sms_params(From="+14155550100"))
    assert inbound.phone is None
    assert inbound.sender_key == "+14155550100"


def test_parse_mms_media() -> None:
    inbound = sms.parse_sms(sms_params(
        Body="",
        NumMedia="2",
        MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        MediaContentType0="image/jpeg",
        MediaUrl1="https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME2",
        MediaContentType1="video/mp4",
    ))
    assert inbound.text == ""
    assert inbound.payload == {"media": [
        {"url": "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
         "content_type": "image/jpeg"},
        {"url": "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME2",
         "content_type": "video/mp4"},
    ]}


@pytest.mark.parametrize("missing", ["From", "MessageSid"])
def test_parse_sms_requires_sender_and_sid(missing: str) -> None:
    params = sms_params()
    del params[missing]
    with pytest.raises(InvalidSms, match=missing):
        sms.parse_sms(params)


def test_parse_sms_rejects_bad_media_count() -> None:
    with pytest.raises(InvalidSms, match="NumMedia"):
        sms.parse_sms(sms_params(NumMedia="two"))


# --- opt-out / opt-in -------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "退订", "TD", "td", "ＴＤ", " 退订。", "取消订阅", "STOP", "Stop", "stop!", "ＳＴＯＰ",
    "UNSUBSCRIBE", "STOPALL", "STOP ALL", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE",
])
def test_stop_words(text: str) -> None:
    assert sms.is_stop(text)
    assert not sms.is_start(text)


@pytest.mark.parametrize("text", [
    "", "取消工单", "取消", "不要退订", "stop the noise", "楼上噪音不停", "TD3号楼", "请问怎么退订",
])
def test_not_stop_words(text: str) -> None:
    assert not sms.is_stop(text)


@pytest.mark.parametrize("text, expected", [
    ("START", True), ("yes", True), ("UNSTOP", True), ("订阅", True), ("重新订阅", True),
    ("开始报修", False), ("yes please", False), ("是的", False),
])
def test_start_words(text: str, expected: bool) -> None:
    assert sms.is_start(text) is expected


# --- UCS-2 segments ---------------------------------------------------------------------


def test_ucs2_units_count_astral_characters_twice() -> None:
    assert sms.ucs2_units("电梯") == 2
    assert sms.ucs2_units("😭") == 2
    assert sms.ucs2_units("👨‍👩‍👧") == 8


def test_ucs2_segments_boundaries() -> None:
    assert sms.ucs2_segments("") == []
    assert sms.ucs2_segments("电" * 70) == ["电" * 70]
    assert [len(s) for s in sms.ucs2_segments("电" * 71)] == [67, 4]
    # An emoji that would straddle unit 67 moves whole into the next segment.
    segments = sms.ucs2_segments("电" * 66 + "😭" + "电" * 10)
    assert segments == ["电" * 66, "😭" + "电" * 10]


def test_short_reply_is_one_body_unchanged() -> None:
    assert sms.fit_segments("  好的，已为您登记。 ") == ["好的，已为您登记。"]
    assert sms.fit_segments("   ") == []
    with pytest.raises(ValueError):
        sms.fit_segments("好的", max_segments=0)


def test_split_prefers_sentence_end() -> None:
    first = "您的报修已登记，工单号GD20261128-0007。"  # 30 units
    rest = "维修师傅会在两小时内联系您，请保持电话畅通" * 6
    bodies = sms.fit_segments(first * 4 + rest, max_segments=1)
    assert bodies[0] == first * 2
    assert all(sms.ucs2_units(b) <= 70 for b in bodies)


def test_split_never_cuts_a_ticket_number() -> None:
    text = "工" * 120 + "GD20261128-0007" + "作" * 60
    bodies = sms.fit_segments(text, max_segments=2)
    assert any("GD20261128-0007" in body for body in bodies)
    assert "".join(bodies) == text


def _is_regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _inside_symbol(text: str, cut: int) -> bool:
    """Whether cutting text at `cut` would break an emoji sequence, a flag or an accent."""
    if cut in (0, len(text)):
        return False
    before, after = text[cut - 1], text[cut]
    if before == "\u200d" or after in "\u200d\ufe0f\u0301\u20e3":
        return True
    if 0x1F3FB <= ord(after) <= 0x1F3FF:
        return True
    run = 0
    while run < cut and _is_regional(text[cut - 1 - run]):
        run += 1
    return _is_regional(after) and run % 2 == 1


@pytest.mark.parametrize("symbol", ["👨‍👩‍👧", "🇨🇳", "👍🏽", "1️⃣", "e\u0301"])
def test_split_keeps_emoji_sequences_whole(symbol: str) -> None:
    for filler in range(125, 135):
        text = "电" * filler + symbol * 3 + "梯" * 80
        bodies = sms.fit_segments(text, max_segments=2)
        assert "".join(bodies) == text
        position = 0
        for body in bodies[:-1]:
            position += len(body)
            assert not _inside_symbol(text, position), (filler, bodies)


_POOL = (
    list("的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会")
    + list("。，、！？；：“”（）…") + [" ", "  ", "\n"] + list("0123456789GD-abc")
    + ["😭", "👍🏽", "👨‍👩‍👧", "🇨🇳", "1️⃣", "❤️", "é", "e\u0301"]
)


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(_POOL) for _ in range(rng.randint(0, 400)))


@pytest.mark.parametrize("max_segments", [1, 2, 3])
def test_fit_segments_property(max_segments: int) -> None:
    rng = random.Random(20261128 + max_segments)
    for _ in range(400):
        original = _random_text(rng)
        text = original.strip()
        bodies = sms.fit_segments(original, max_segments=max_segments)
        if not text:
            assert bodies == []
            continue
        position = 0
        for body in bodies:
            assert body and body == body.strip()
            segments = sms.ucs2_segments(body)
            assert len(segments) <= max_segments
            limit = 70 if len(segments) == 1 else 67
            assert all(sms.ucs2_units(segment) <= limit for segment in segments)
            # The bodies are the original in order; only whitespace at a cut is gone.
            while text[position].isspace() and not text.startswith(body, position):
                position += 1
            assert text.startswith(body, position), (text, bodies)
            assert not _inside_symbol(text, position)
            assert not _inside_symbol(text, position + len(body))
            position += len(body)
        assert text[position:] == ""


# --- rendering SMS ----------------------------------------------------------------------


def test_render_sms_exact() -> None:
    xml = sms.render_sms(["好的，已为您登记<3号楼>。", "谢谢您&再见👋"])
    assert xml == (
        XML + "<Response><Message>好的，已为您登记&lt;3号楼&gt;。</Message>"
        "<Message>谢谢您&amp;再见👋</Message></Response>"
    )


def test_render_sms_splits_a_long_reply() -> None:
    sentence = "维修师傅已经出发了，请您在家等候。"  # 17 units
    xml = sms.render_sms([sentence * 9])
    assert xml == (
        XML + "<Response><Message>" + sentence * 7 + "</Message>"
        "<Message>" + sentence * 2 + "</Message></Response>"
    )


def test_render_sms_with_no_replies() -> None:
    assert sms.render_sms([]) == XML + "<Response />"


# --- menus ------------------------------------------------------------------------------


def test_numbered_menu() -> None:
    assert sms.numbered_menu("请核对信息", ["确认", "修改"]) == "请核对信息，回复1确认，回复2修改"
    assert sms.numbered_menu("信息对吗？", ["确认", "修改"]) == "信息对吗？回复1确认，回复2修改"
    assert sms.numbered_menu("", ["报修", "查询"]) == "回复1报修，回复2查询"
    with pytest.raises(ValueError):
        sms.numbered_menu("请选择", [])
    with pytest.raises(ValueError):
        sms.numbered_menu("请选择", ["确认", " "])


@pytest.mark.parametrize("text, expected", [
    ("1", 1), ("１", 1), ("一", 1), ("壹", 1), ("幺", 1), (" 2 ", 2), ("２。", 2), ("二", 2),
    ("贰", 2), ("两", 2), ("回复2", 2), ("选1", 1), ("第一个", 1), ("1号", 1),
    ("确认", 1), ("确认。", 1), ("修改", 2), ("修改吧", 2), ("选修改", 2),
    ("3", None), ("0", None), ("12", None), ("", None), ("不确认", None), ("我要改地址", None),
])
def test_read_menu_choice(text: str, expected: int | None) -> None:
    assert sms.read_menu_choice(text, 2, options=["确认", "修改"]) == expected


def test_read_menu_choice_checks_its_arguments() -> None:
    assert sms.read_menu_choice("三", 3) == 3
    with pytest.raises(ValueError):
        sms.read_menu_choice("1", 2, options=["确认"])
    with pytest.raises(ValueError):
        sms.read_menu_choice("1", 0)


# --- voice: parsing ---------------------------------------------------------------------


def voice_params(**overrides: str) -> dict[str, str]:
    params = {
        "CallSid": "CA0123456789abcdef0123456789abcdef",
        "From": "+8613800001234",
        "To": "+8657100000000",
        "CallStatus": "in-progress",
    }
    params.update(overrides)
    return params


def test_parse_voice_speech() -> None:
    turn = voice.parse_voice(voice_params(SpeechResult=" 三号楼电梯坏了。", Confidence="0.87", attempt="1"))
    assert turn == VoiceTurn(
        call_sid="CA0123456789abcdef0123456789abcdef",
        caller="13800001234",
        speech="三号楼电梯坏了。",
        confidence=0.87,
        digits=None,
        attempt=1,
    )


def test_parse_voice_digits_and_defaults() -> None:
    turn = voice.parse_voice(voice_params(Digits="*", SpeechResult=""))
    assert (turn.digits, turn.speech, turn.confidence, turn.attempt) == ("*", None, None, 0)


@pytest.mark.parametrize("field, raw, expected", [
    ("Confidence", "abc", None), ("Confidence", "nan", None), ("Confidence", "1.7", 1.0),
    ("attempt", "x", 0), ("attempt", "-1", 0), ("attempt", "99", voice.MAX_FAILED_ATTEMPTS),
    ("Digits", "1<script>", None), ("From", "anonymous", None), ("From", "+266696687", None),
])
def test_parse_voice_distrusts_odd_values(field: str, raw: str, expected: object) -> None:
    turn = voice.parse_voice(voice_params(**{field: raw}))
    got = {"Confidence": turn.confidence, "attempt": turn.attempt, "Digits": turn.digits,
           "From": turn.caller}[field]
    assert got == expected


def test_parse_voice_requires_call_sid() -> None:
    params = voice_params()
    del params["CallSid"]
    with pytest.raises(InvalidVoiceRequest, match="CallSid"):
        voice.parse_voice(params)


def test_voice_turn_to_inbound() -> None:
    turn = voice.parse_voice(voice_params(SpeechResult="我家漏水了", Confidence="0.9"))
    inbound = voice.to_inbound(turn)
    assert inbound is not None
    assert (inbound.channel, inbound.sender_key, inbound.phone, inbound.text) == (
        "voice", "13800001234", "13800001234", "我家漏水了"
    )
    assert inbound.payload == {
        "call_sid": "CA0123456789abcdef0123456789abcdef", "confidence": 0.9, "digits": None
    }
    anonymous = voice.to_inbound(voice.parse_voice(voice_params(From="anonymous", Digits="1")))
    assert anonymous is not None
    assert anonymous.sender_key == "call-CA0123456789abcdef0123456789abcdef"
    assert voice.to_inbound(voice.parse_voice(voice_params())) is None


@pytest.mark.parametrize("digits, action", [
    ("1", "report"), ("2", "status"), ("3", "consult"), ("0", "human"), ("*", "repeat"),
    ("4", None), ("#", None), ("", None), (None, None), ("12", None),
])
def test_menu_action(digits: str | None, action: str | None) -> None:
    assert voice.menu_action(digits) == action


@pytest.mark.parametrize("speech, action", [
    ("人工", "human"), ("我要转人工。", "human"), ("报修", "report"), ("查询进度", "status"),
    ("咨询一下", "consult"), ("再说一遍", "repeat"), ("没听清", "repeat"), ("一", "report"),
    ("按一", "report"), ("幺", "report"), ("零", "human"), ("按星号键", "repeat"),
    ("我家水管漏了", None), ("", None), (None, None),
])
def test_spoken_menu_action(speech: str | None, action: str | None) -> None:
    assert voice.spoken_menu_action(speech) == action


def test_with_attempt_replaces_the_old_value() -> None:
    assert voice.with_attempt("https://h.example/v?step=menu&attempt=0", 1) == (
        "https://h.example/v?step=menu&attempt=1"
    )
    assert voice.with_attempt("/twilio/voice", 0) == "/twilio/voice?attempt=0"


# --- voice: rendering (exact TwiML) -----------------------------------------------------


def say(text: str) -> str:
    return f'<Say language="cmn-CN" voice="Polly.Zhiyu"><prosody rate="slow">{text}</prosody></Say>'


def gather_open(action: str) -> str:
    return (
        f'<Gather action="{action}" actionOnEmptyResult="true" input="speech dtmf" '
        'language="cmn-Hans-CN" method="POST" numDigits="1" speechTimeout="auto" timeout="8">'
    )


def test_render_gather_exact() -> None:
    xml = voice.render_gather("请说出您家的楼号和房号。", action_url="https://h.example/v/report", attempt=0)
    assert xml == (
        XML + "<Response>" + gather_open("https://h.example/v/report?attempt=0")
        + say("请说出您家的楼号和房号。") + "</Gather></Response>"
    )


def test_render_menu_exact() -> None:
    xml = voice.render_menu(action_url="https://h.example/v/menu", community_name="阳光社区")
    assert xml == (
        XML + "<Response>" + gather_open("https://h.example/v/menu?attempt=0")
        + say("您好，这里是阳光社区服务热线。")
        + say("报修，请按一。查询进度，请按二。咨询问题，请按三。找人工，请按零。再听一遍，请按星号键。")
        + '<Pause length="1" />'
        + say("您也可以直接说话。报修请按一，找人工请按零。")
        + "</Gather></Response>"
    )


def test_render_menu_retry_skips_the_greeting() -> None:
    xml = voice.render_menu(action_url="/v/menu", attempt=1)
    assert xml.startswith(XML + "<Response>" + gather_open("/v/menu?attempt=1") + say("对不起，我没有听清。"))
    assert "您好" not in xml


def test_render_retry_asks_once_more() -> None:
    xml = voice.render_retry(1, prompt="请说出您的问题。", action_url="/v/report?step=problem")
    assert xml == (
        XML + "<Response>" + gather_open("/v/report?step=problem&amp;attempt=1")
        + say("对不起，我没有听清。") + say("请说出您的问题。") + "</Gather></Response>"
    )


def test_render_retry_hands_over_after_two_failures() -> None:
    xml = voice.render_retry(
        2, prompt="请说出您的问题。", action_url="/v/report",
        human_number="+8657188001234", dial_action_url="/v/dial-result",
    )
    assert xml == (
        XML + "<Response>" + say("正在为您转接工作人员，请稍等。")
        + '<Dial action="/v/dial-result" method="POST" timeout="30">+8657188001234</Dial>'
        + "</Response>"
    )


def test_transfer_without_a_number_promises_a_call_back() -> None:
    assert voice.render_retry(2, prompt="请说。", action_url="/v") == (
        XML + "<Response>"
        + say("现在工作人员都在忙。我们记下了您的电话，会尽快给您回电。请您放心。再见。")
        + "<Hangup /></Response>"
    )
    assert voice.render_transfer_to_human(None, can_call_back=False) == (
        XML + "<Response>" + say("现在工作人员都在忙。请您过一会儿再打来。再见。")
        + "<Hangup /></Response>"
    )


def test_transfer_without_dial_action_closes_politely() -> None:
    assert voice.render_transfer_to_human("+8657188001234") == (
        XML + "<Response>" + say("正在为您转接工作人员，请稍等。")
        + '<Dial timeout="30">+8657188001234</Dial>'
        + say("如果刚才没有接通，我们会尽快给您回电。再见。") + "<Hangup /></Response>"
    )


@pytest.mark.parametrize("status, spoken", [
    ("completed", False), ("answered", False), ("no-answer", True), ("busy", True),
    ("failed", True), (None, True),
])
def test_render_dial_result(status: str | None, spoken: bool) -> None:
    expected = say("工作人员暂时没有接通。我们记下了您的电话，会尽快给您回电。请您放心。再见。") if spoken else ""
    rendered = voice.render_dial_result(status)
    assert rendered == XML + "<Response>" + expected + "<Hangup /></Response>"


@pytest.mark.parametrize("number, spoken", [
    ("GD20261128-0007", "工单号 G D，二零二六，幺幺二八，零零零七"),
    ("gd20261231-1110", "工单号 G D，二零二六，幺二三幺，幺幺幺零"),
    ("GD2026-12345", "工单号 G D，二零二六，幺二三四，五"),
])
def test_speak_ticket_number(number: str, spoken: str) -> None:
    assert voice.speak_ticket_number(number) == spoken


def test_speak_ticket_number_needs_characters() -> None:
    with pytest.raises(ValueError, match="GD20261128-0007"):
        voice.speak_ticket_number("--")


def test_render_read_back_exact() -> None:
    spoken = "工单号 G D，二零二六，幺幺二八，零零零七"
    assert voice.render_read_back("您报修的是三号楼二单元电梯故障。", "GD20261128-0007") == (
        XML + "<Response>" + say("您报修的是三号楼二单元电梯故障。") + '<Pause length="1" />'
        + say(f"请您记一下，您的{spoken}。") + '<Pause length="1" />'
        + say(f"再说一遍，{spoken}。")
        + say("我们会尽快处理。感谢您的来电，再见。") + "<Hangup /></Response>"
    )


def test_render_read_back_can_be_heard_again() -> None:
    xml = voice.render_read_back("漏水。", "GD20261128-0007", action_url="/v/read-back")
    assert xml.startswith(
        XML + '<Response><Gather action="/v/read-back" input="dtmf" method="POST" numDigits="1" '
        'timeout="8">' + say("漏水。")
    )
    assert xml.endswith(
        say("再听一遍，请按星号键。") + "</Gather>"
        + say("我们会尽快处理。感谢您的来电，再见。") + "<Hangup /></Response>"
    )


def test_render_say_and_hangup_escapes_text() -> None:
    assert voice.render_say_and_hangup("谢谢<您>&再见") == (
        XML + "<Response>" + say("谢谢&lt;您&gt;&amp;再见") + "<Hangup /></Response>"
    )


def test_voice_codes_can_be_swapped() -> None:
    neural = voice.MandarinVoice(voice="Polly.Zhiyu-Neural", say_language="zh-CN")
    assert voice.render_say_and_hangup("再见", voice=neural) == (
        XML + '<Response><Say language="zh-CN" voice="Polly.Zhiyu-Neural">'
        '<prosody rate="slow">再见</prosody></Say><Hangup /></Response>'
    )
