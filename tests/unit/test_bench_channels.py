"""The channel benchmark's pure parts: signed provider requests, the scripted residents and
the report arithmetic. Requests are checked with the providers' own validators and with
the hub's own parser, so a builder that drifts from what the webhooks accept fails here,
not halfway through a benchmark run."""
from __future__ import annotations

import time
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from wechatpy.crypto import WeChatCrypto

from bot.bench_channels import (
    PUBLIC_BASE_URL,
    ChannelRun,
    Plan,
    Talk,
    UnexpectedQuestion,
    channel_entry,
    converse,
    has_chinese,
    is_done,
    make_plan,
    next_message,
    problems,
    render_markdown,
)
from bot.provider_requests import (
    WECHAT_ACCOUNT,
    local_url,
    read_wechat_reply,
    signed_form,
    sms_params,
    sms_replies,
    voice_params,
    voice_turn,
    wechat_push,
)
from channels.twilio_sms import verify
from channels.twilio_voice import render_gather, render_read_back
from channels.wechat import InvalidSignature, parse_message, render_text_reply

pytestmark = pytest.mark.unit

TOKEN = "benchtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APP_ID = "wx0123456789abcdef"
AUTH_TOKEN = "bench-auth-token"
SID = "AC" + "1" * 32
OPENID = "oBench13510x000007"


@pytest.fixture
def crypto() -> WeChatCrypto:
    return WeChatCrypto(TOKEN, AES_KEY, APP_ID)


# --- WeChat -------------------------------------------------------------------------------

def test_wechat_push_passes_the_hubs_own_safe_mode_parser(crypto):
    now = int(time.time())
    query, body = wechat_push(crypto, token=TOKEN, openid=OPENID, text="我家卫生间漏水了",
                              msg_id=6000000000000000123, now=now, nonce="4711")
    parsed = parse_message(body, token=TOKEN, app_id=APP_ID, aes_key=AES_KEY,
                           signature=query["signature"], msg_signature=query["msg_signature"],
                           timestamp=query["timestamp"], nonce=query["nonce"],
                           now=datetime.fromtimestamp(now, UTC))
    assert parsed.encrypted and parsed.for_hub
    assert (parsed.openid, parsed.account) == (OPENID, WECHAT_ACCOUNT)
    assert parsed.inbound.text == "我家卫生间漏水了"
    assert parsed.inbound.provider_message_id == "6000000000000000123"
    assert query["encrypt_type"] == "aes" and query["openid"] == OPENID
    assert b"\xe6\xbc\x8f" not in body  # 漏 travels encrypted, never in the clear


def test_wechat_push_signed_with_another_token_is_refused(crypto):
    now = int(time.time())
    query, body = wechat_push(WeChatCrypto("othertoken", AES_KEY, APP_ID), token="othertoken",
                              openid=OPENID, text="你好", msg_id=1, now=now, nonce="1")
    with pytest.raises(InvalidSignature):
        parse_message(body, token=TOKEN, app_id=APP_ID, aes_key=AES_KEY,
                      signature=query["signature"], msg_signature=query["msg_signature"],
                      timestamp=query["timestamp"], nonce=query["nonce"])


def test_passive_reply_is_decrypted_and_success_means_later(crypto):
    sealed = render_text_reply(to_user=OPENID, from_user=WECHAT_ACCOUNT, text="请问是几号楼？",
                               now=datetime.now(UTC), crypto=crypto, nonce="99")
    assert read_wechat_reply(crypto, sealed, openid=OPENID) == "请问是几号楼？"
    assert read_wechat_reply(crypto, "success", openid=OPENID) is None
    assert read_wechat_reply(crypto, "", openid=OPENID) is None
    with pytest.raises(ValueError, match="someone else"):
        read_wechat_reply(crypto, sealed, openid="oSomeoneElse")


# --- Twilio -------------------------------------------------------------------------------

def test_sms_form_is_signed_over_the_public_url():
    params = sms_params(account_sid=SID, to="+15005550006", phone="13520000003",
                        text="九号楼一单元一二零一厨房水管漏水", sid="SM" + "a" * 32)
    url = PUBLIC_BASE_URL + "/twilio/sms"
    headers, body = signed_form(AUTH_TOKEN, url, params)
    sent = dict(parse_qsl(body.decode()))
    assert sent == params and sent["From"] == "+8613520000003"
    assert (sent["Body"], sent["MessageSid"], sent["AccountSid"]) == (
        "九号楼一单元一二零一厨房水管漏水", "SM" + "a" * 32, SID)
    signature = headers["X-Twilio-Signature"]
    assert RequestValidator(AUTH_TOKEN).validate(url, sent, signature)
    assert verify(auth_token=AUTH_TOKEN, url=url, params=sent, signature=signature)
    # The hub's loopback address is not what Twilio signed; another token is not ours.
    assert not verify(auth_token=AUTH_TOKEN, url="http://127.0.0.1:8000/twilio/sms",
                      params=sent, signature=signature)
    assert not verify(auth_token="other", url=url, params=sent, signature=signature)
    assert not verify(auth_token=AUTH_TOKEN, url=url, params={**sent, "Body": "改了"},
                      signature=signature)


def test_voice_form_signs_the_gather_action_with_its_query():
    action = PUBLIC_BASE_URL + "/twilio/voice/turn?attempt=1"
    params = voice_params(account_sid=SID, to="+15005550006", phone="13530000001",
                          call_sid="CA" + "b" * 32, Digits="1")
    headers, body = signed_form(AUTH_TOKEN, action, params)
    assert params["Caller"] == "+8613530000001" and params["Digits"] == "1"
    assert verify(auth_token=AUTH_TOKEN, url=action, params=dict(parse_qsl(body.decode())),
                  signature=headers["X-Twilio-Signature"])
    assert local_url("http://127.0.0.1:9", action) == (
        "http://127.0.0.1:9/twilio/voice/turn?attempt=1")
    assert local_url("http://h", PUBLIC_BASE_URL + "/twilio/sms") == "http://h/twilio/sms"


def test_twiml_answers_are_read_like_a_handset_and_a_phone_line():
    response = MessagingResponse()
    response.message("请问是几号楼？")
    response.message("回复1确认，回复2修改")
    assert sms_replies(str(response)) == ["请问是几号楼？", "回复1确认，回复2修改"]
    spoken, action = voice_turn(render_gather("请问是几号楼？",
                                              action_url=PUBLIC_BASE_URL + "/twilio/voice/turn",
                                              attempt=0))
    assert "请问是几号楼" in spoken and action.startswith(PUBLIC_BASE_URL + "/twilio/voice/turn")
    spoken, _ = voice_turn(render_read_back("您报修的是7号楼。", "GD20261129-0001"))
    assert is_done(spoken)
    with pytest.raises(ValueError, match="not TwiML"):
        sms_replies("<xml><Content>hi</Content></xml>")


# --- scripted residents -------------------------------------------------------------------

def test_plans_are_the_same_report_on_every_channel_from_distinct_senders():
    plans = {channel: make_plan(3, channel) for channel in ("baseline", "sms", "voice", "wechat")}
    assert len({plan.opener for plan in plans.values()}) == 1
    assert len({plan.address for plan in plans.values()}) == 4
    assert plans["wechat"].address.startswith("o") and plans["sms"].address.isdigit()
    phones = [make_plan(i, "sms").phone for i in range(20)]
    assert len(set(phones)) == 20 and all(len(p) == 11 and p.startswith("1") for p in phones)


def test_resident_answers_what_the_bot_asks():
    plan = Plan("13520000001", "13520000001", "我家暖气不热", "五号楼二单元三零一", 2, 301)
    assert next_message(plan, "我记下了：5号楼2单元301，暖气不热。对吗？回复1确认，回复2修改") == "1"
    assert next_message(plan, "确认，请按一。修改，请按二。") == "1"
    assert next_message(plan, "请说一下哪里坏了，在几号楼几单元。") == "我家暖气不热"
    assert next_message(plan, "收到。请问是几号楼？") == "五号楼二单元三零一"
    assert next_message(plan, "几单元？") == "二单元"
    assert next_message(plan, "门牌号是多少？比如501。") == "301"
    assert next_message(plan, "请留个联系电话，方便师傅联系您。") == "13520000001"
    assert next_message(plan, "师傅什么时候上门方便？") == "明天上午"
    with pytest.raises(UnexpectedQuestion):
        next_message(plan, "今天天气不错")


def test_done_and_chinese_checks():
    assert is_done("已登记，工单号GD20261129-0042，已派给物业。")
    assert not is_done("我记下了：3号楼。对吗？")
    assert has_chinese(["", "好的"]) and not has_chinese(["success", "", "1"])


class FakeTalk(Talk):
    """Plays the hub's side from a list of answers; no network."""

    def __init__(self, run: ChannelRun, answers: list[list[str]]) -> None:
        super().__init__(None, "", {}, run, make_plan(0, "sms"))
        self.answers, self.heard = answers, []

    async def say(self, text: str) -> list[str]:
        self.heard.append(text)
        self.run.attempts += 1
        return self.answers.pop(0)


async def test_converse_counts_reports_silence_and_confusion():
    run = ChannelRun("sms")
    talk = FakeTalk(run, [["请问是几号楼？"], ["师傅什么时候上门方便？"],
                          ["我记下了。对吗？回复1确认，回复2修改"], ["已登记，工单号GD20261129-0001"]])
    await converse(talk, max_turns=6, think_s=0)
    assert talk.heard[0] == talk.plan.opener and talk.heard[2:] == ["明天上午", "1"]
    assert (run.reports_done, run.unanswered, run.errors) == (1, 0, 0)

    await converse(FakeTalk(run, [["success"]]), max_turns=6, think_s=0)
    await converse(FakeTalk(run, [["今天天气不错"]]), max_turns=6, think_s=0)
    await converse(FakeTalk(run, [["请问是几号楼？"]] * 3), max_turns=2, think_s=0)
    assert (run.residents, run.reports_done, run.unanswered) == (4, 1, 1)
    assert [f["kind"] for f in run.failures] == ["no Chinese answer", "unexpected question",
                                                  "no work order"]


# --- report arithmetic --------------------------------------------------------------------

def test_channel_entry_summarises_and_compares_with_the_baseline():
    base = channel_entry(ChannelRun("baseline", residents=2, attempts=4,
                                    latencies_ms=[100.0, 100.0, 200.0, 200.0], wall_s=2.0,
                                    reports_done=2), tickets={"sms": 2})
    assert base["turns"]["p50_ms"] == 150.0 and base["turns"]["per_s"] == 2.0
    run = ChannelRun("wechat", residents=2, attempts=4, latencies_ms=[150.0, 300.0, 300.0, 4010.0],
                     wall_s=4.0, reports_done=2, passive=3, passive_in_window=3, fallbacks=1,
                     late_ms=[4600.0])
    entry = channel_entry(run, baseline=base["turns"], tickets={"wechat": 2})
    assert entry["turns"]["p50_ms"] == 300.0
    assert entry["vs_baseline"]["p50"] == 2.0  # 300 / 150
    assert entry["vs_baseline"]["p95"] == 17.27  # 3453.5 / 200, rounded
    wechat = entry["wechat"]
    assert (wechat["pushes"], wechat["passive_within_5s"]) == (4, 3)
    assert wechat["share_within_5s"] == 0.75
    assert (wechat["fallback_success"], wechat["fallback_delivered"]) == (1, 1)
    assert wechat["late_delivery"]["max_ms"] == 4600.0
    assert "wechat" not in base and "vs_baseline" not in base


def test_problems_flag_failed_turns_and_tickets_that_do_not_match():
    good = channel_entry(ChannelRun("sms", residents=2, attempts=8, latencies_ms=[1.0] * 8,
                                    reports_done=2, wall_s=1.0), tickets={"sms": 2})
    assert problems({"channels": [good]}) == []
    missing = {**good, "tickets_stored": {"sms": 1}}
    broken = {**good, "errors": 1, "unanswered": 2}
    found = problems({"channels": [missing, broken], "error": "TimeoutError: not ready"})
    assert found[0].startswith("measurement failed") and len(found) == 3
    assert "1 tickets stored" in found[1] and "1 errors, 2 turns" in found[2]


def test_markdown_shows_the_table_the_ratios_and_the_wechat_window():
    base = channel_entry(ChannelRun("baseline", residents=1, attempts=2,
                                    latencies_ms=[100.0, 100.0], wall_s=1.0, reports_done=1),
                         tickets={"sms": 1})
    wechat = channel_entry(ChannelRun("wechat", residents=1, attempts=2,
                                      latencies_ms=[150.0, 4020.0], wall_s=5.0, reports_done=1,
                                      passive=1, passive_in_window=1, fallbacks=1,
                                      late_ms=[4500.0]),
                           baseline=base["turns"], tickets={"wechat": 1})
    text = render_markdown({"channels": [base, wechat], "host": {"cpus": 2},
                            "setup": {"residents": 1, "rounds": 1, "max_turns": 6,
                                      "passive_reply_s": 4.0},
                            "tickets_by_channel": {"sms": 1, "wechat": 1}, "problems": []})
    assert "| baseline | POST /api/messages (sms) | 2 | 2.0 | 100 ms | 100 ms | 100 ms" in text
    assert "| ×20.85 | ×38.27 |" in text  # p50 2085 ms, p95 3826.5 ms over 100 ms
    assert "1 of 2 pushes (50.0 %) answered passively within 5 s" in text
    assert "1 answered `success`" in text and "push → delivery p50 4500 ms" in text
    assert "sms 1, wechat 1" in text
