"""Twilio voice hotline in Mandarin, written for callers in their eighties.

Pure parse/render functions; the aiohttp handlers that call them live with the web app.
Every prompt is spoken slowly (SSML <prosody rate="slow">), in short sentences, and the
key options are repeated at the end. A caller who says nothing or is not understood is
asked again once; after two failed tries a person takes over, or, when nobody can, the
caller is promised a call back instead of being left in a loop.

Codes, as documented (looked up, not guessed):
- Speech recognition: <Gather language="cmn-Hans-CN">, "Chinese, Mandarin (Simplified,
  China)". Twilio's <Gather> takes BCP-47 tags (https://www.twilio.com/docs/voice/twiml/gather;
  warning 13512 rejects bare tags such as "en"), and "cmn-Hans-CN" is in the GatherLanguage
  type of Twilio's own Node helper library typings (lib/twiml/VoiceResponse), next to
  "zh", "zh-TW" and "cmn-Hant-TW"; Google's speech API names the same locale cmn-Hans-CN.
- Text to speech: voice "Polly.Zhiyu", Amazon Polly's Mandarin voice, listed in the SayVoice
  type of the same typings; Twilio's <Say> accepts "any of the Twilio-supported Amazon
  Polly voices, e.g. Polly.Amy" (https://www.twilio.com/docs/voice/twiml/say). Language
  "cmn-CN" is the code Amazon Polly gives for 中文（普通话） Zhiyu
  (https://docs.aws.amazon.com/polly/latest/dg/available-voices.html); Twilio's older
  SayLanguage list names that locale "zh-CN". Both live in MandarinVoice, so a deployment
  can switch (or pick "Polly.Zhiyu-Neural") without touching this module.
- <prosody rate="slow">: "Prosody tag attributes are fully supported by the standard TTS
  voices"; neural voices support rate as well
  (https://docs.aws.amazon.com/polly/latest/dg/prosody-tag.html). Twilio's <Say> passes
  SSML through to Polly voices (twilio.twiml.voice_response.Say.prosody).
- speechTimeout="auto" needs speechModel left unset (warning 13335,
  https://www.twilio.com/docs/api/errors/13335); if a model is ever pinned, use a whole
  number of seconds instead.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from twilio.twiml.voice_response import Gather, VoiceResponse

from bot.conversations import InvalidPhone, normalize_phone
from bot.inbound import Inbound

CHANNEL = "voice"
MAX_FAILED_ATTEMPTS = 2
GATHER_TIMEOUT_S = 8
DIAL_TIMEOUT_S = 30
ATTEMPT_PARAM = "attempt"


@dataclass(frozen=True)
class MandarinVoice:
    """Which voice speaks and which language the recogniser listens for."""

    voice: str = "Polly.Zhiyu"
    say_language: str = "cmn-CN"
    gather_language: str = "cmn-Hans-CN"


MANDARIN = MandarinVoice()

MENU_ACTIONS: dict[str, str] = {
    "1": "report",
    "2": "status",
    "3": "consult",
    "0": "human",
    "*": "repeat",
}
# Words an elderly caller says instead of pressing a key. Longer phrases first.
_SPOKEN_ACTIONS: tuple[tuple[str, str], ...] = (
    ("再说一遍", "repeat"), ("再听一遍", "repeat"), ("没听清", "repeat"), ("重听", "repeat"),
    ("转人工", "human"), ("人工", "human"), ("接线员", "human"), ("客服", "human"),
    ("查询", "status"), ("进度", "status"), ("报修", "report"), ("咨询", "consult"),
)
_SPOKEN_DIGITS = {
    "一": "1", "幺": "1", "二": "2", "两": "2", "三": "3", "零": "0", "星号": "*",
}

# Prompts. Short sentences; the action first, then the key, as residents hear it on
# bank and hospital lines. Numbers are written in Chinese so TTS cannot read 1 as "幺".
MENU_GREETING = "您好，这里是{name}社区服务热线。"
MENU_OPTIONS = (
    "报修，请按一。"
    "查询进度，请按二。"
    "咨询问题，请按三。"
    "找人工，请按零。"
    "再听一遍，请按星号键。"
)
MENU_REPEAT = "您也可以直接说话。报修请按一，找人工请按零。"
RETRY_PREFIX = "对不起，我没有听清。"
TRANSFER_TEXT = "正在为您转接工作人员，请稍等。"
NO_ANSWER_TEXT = "工作人员暂时没有接通。我们记下了您的电话，会尽快给您回电。请您放心。再见。"
AFTER_DIAL_TEXT = "如果刚才没有接通，我们会尽快给您回电。再见。"
BUSY_CALLBACK_TEXT = "现在工作人员都在忙。我们记下了您的电话，会尽快给您回电。请您放心。再见。"
BUSY_NO_CALLBACK_TEXT = "现在工作人员都在忙。请您过一会儿再打来。再见。"
TICKET_INTRO = "请您记一下，您的"
TICKET_AGAIN = "再说一遍，"
READ_BACK_REPEAT = "再听一遍，请按星号键。"
GOODBYE_TEXT = "我们会尽快处理。感谢您的来电，再见。"

# Digits read one by one, telephone style: 1 is 幺 so it is not mistaken for 七.
_DIGIT_WORDS = dict(zip("0123456789", "零幺二三四五六七八九", strict=True))
_TICKET_TOKEN = re.compile(r"[A-Za-z]+|\d+")
_SAFE_DIGITS = re.compile(r"^[0-9*#]+$")


class InvalidVoiceRequest(ValueError):
    """A webhook body that is not a Twilio voice request; the message says what is missing."""


@dataclass(frozen=True)
class VoiceTurn:
    """One answer from a caller: what was said or pressed, and how many tries preceded it."""

    call_sid: str
    caller: str | None
    speech: str | None
    confidence: float | None
    digits: str | None
    attempt: int


def parse_voice(params: Mapping[str, str]) -> VoiceTurn:
    """Read a verified Twilio voice webhook (form fields merged with the action URL's query)."""
    call_sid = (params.get("CallSid") or "").strip()
    if not call_sid:
        raise InvalidVoiceRequest(
            "Twilio webhook has no CallSid; point the number's voice URL here"
        )
    speech = (params.get("SpeechResult") or "").strip() or None
    digits = (params.get("Digits") or "").strip() or None
    if digits is not None and not _SAFE_DIGITS.match(digits):
        digits = None
    return VoiceTurn(
        call_sid=call_sid,
        caller=_chinese_phone(params.get("From") or params.get("Caller") or ""),
        speech=speech,
        confidence=_confidence(params.get("Confidence")),
        digits=digits,
        attempt=_attempt(params.get(ATTEMPT_PARAM)),
    )


def _chinese_phone(raw: str) -> str | None:
    # Withheld numbers arrive as "anonymous" or odd digits: no resident to link, no call back.
    try:
        return normalize_phone(raw) if raw.strip() else None
    except InvalidPhone:
        return None


def _confidence(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw not in (None, "") else None
    except ValueError:
        return None
    if value is None or value != value:  # NaN
        return None
    return min(max(value, 0.0), 1.0)


def _attempt(raw: str | None) -> int:
    if raw is None or not raw.strip().isdigit():
        return 0
    return min(int(raw), MAX_FAILED_ATTEMPTS)


def to_inbound(turn: VoiceTurn) -> Inbound | None:
    """Turn what the caller said (or pressed) into an Inbound for the hub; None if nothing."""
    text = turn.speech or turn.digits
    if not text:
        return None
    return Inbound(
        channel=CHANNEL,
        sender_key=turn.caller or f"call-{turn.call_sid}",
        text=text,
        # Twilio does not resend voice webhooks, and one call has many turns: no dedupe key.
        provider_message_id=None,
        phone=turn.caller,
        payload={"call_sid": turn.call_sid, "confidence": turn.confidence, "digits": turn.digits},
    )


def menu_action(digits: str | None) -> str | None:
    """Map a key press to 'report', 'status', 'consult', 'human' or 'repeat'."""
    return MENU_ACTIONS.get((digits or "").strip())


def spoken_menu_action(speech: str | None) -> str | None:
    """Map what a caller said at the menu ("人工", "按一", "再说一遍") to a menu action."""
    said = re.sub(r"[\s，。！？,.!?]", "", speech or "")
    if not said:
        return None
    for phrase, action in _SPOKEN_ACTIONS:
        if phrase in said:
            return action
    key = re.sub(r"^我?(?:按|选)?", "", said).removesuffix("键")
    if key != "星号":
        key = key.removesuffix("号")
    return MENU_ACTIONS.get(_SPOKEN_DIGITS.get(key, key))


def with_attempt(action_url: str, attempt: int) -> str:
    """Return action_url carrying the attempt number in its query string."""
    parts = urlsplit(action_url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = [(key, value) for key, value in pairs if key != ATTEMPT_PARAM]
    query.append((ATTEMPT_PARAM, str(attempt)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def say_slowly(parent: VoiceResponse | Gather, text: str,
               voice: MandarinVoice = MANDARIN) -> None:
    """Add one slowly spoken Mandarin sentence to a response or a gather."""
    say = parent.say(voice=voice.voice, language=voice.say_language)
    say.prosody(text, rate="slow")



def _gather(action_url: str, attempt: int | None, voice: MandarinVoice) -> Gather:
    # attempt None: the action URL is used as given (no retry counting on that path).
    return Gather(
        input="speech dtmf",
        language=voice.gather_language,
        speech_timeout="auto",
        timeout=GATHER_TIMEOUT_S,
        num_digits=1,
        action_on_empty_result=True,
        action=action_url if attempt is None else with_attempt(action_url, attempt),
        method="POST",
    )


def render_gather(
    prompt: str, *, action_url: str, attempt: int | None, voice: MandarinVoice = MANDARIN,
    before: str | None = None, pause_s: int = 0,
) -> str:
    """Ask one question and listen for speech or one key; silence also comes back to action_url.

    `before` is said first, while nothing is listened for (e.g. an agent's words);
    `pause_s` keeps listening quietly that long after the prompt (a caller on hold).
    """
    response = VoiceResponse()
    if before:
        say_slowly(response, before, voice)
    gather = _gather(action_url, attempt, voice)
    say_slowly(gather, prompt, voice)
    if pause_s:
        gather.pause(length=pause_s)
    response.append(gather)
    return str(response)


def render_menu(
    *, action_url: str, attempt: int = 0, community_name: str = "", voice: MandarinVoice = MANDARIN
) -> str:
    """Speak the hotline menu: 1 报修, 2 查询进度, 3 咨询, 0 人工, * 重听."""
    response = VoiceResponse()
    gather = _gather(action_url, attempt, voice)
    if attempt == 0:
        name = community_name.strip().removesuffix("社区")
        say_slowly(gather, MENU_GREETING.format(name=name), voice)
    else:
        say_slowly(gather, RETRY_PREFIX, voice)
    say_slowly(gather, MENU_OPTIONS, voice)
    gather.pause(length=1)
    say_slowly(gather, MENU_REPEAT, voice)
    response.append(gather)
    return str(response)


def render_retry(
    failures: int,
    *,
    prompt: str,
    action_url: str,
    human_number: str | None = None,
    dial_action_url: str | None = None,
    can_call_back: bool = True,
    voice: MandarinVoice = MANDARIN,
) -> str:
    """After silence or an answer not understood: ask again once, then hand over to a person.

    `failures` counts failed tries including the one just reported, i.e. turn.attempt + 1.
    """
    if failures >= MAX_FAILED_ATTEMPTS:
        return render_transfer_to_human(
            human_number, action_url=dial_action_url, can_call_back=can_call_back, voice=voice
        )
    response = VoiceResponse()
    gather = _gather(action_url, failures, voice)
    say_slowly(gather, RETRY_PREFIX, voice)
    say_slowly(gather, prompt, voice)
    response.append(gather)
    return str(response)


def render_transfer_to_human(
    number: str | None,
    *,
    action_url: str | None = None,
    can_call_back: bool = True,
    voice: MandarinVoice = MANDARIN,
) -> str:
    """Put the caller through to staff, or promise a call back when there is nobody to dial.

    With action_url, Twilio reports how the <Dial> ended there (see render_dial_result);
    without it the caller hears a closing line that fits both an answered and a missed call.
    """
    response = VoiceResponse()
    if not number:
        say_slowly(response, BUSY_CALLBACK_TEXT if can_call_back else BUSY_NO_CALLBACK_TEXT, voice)
        response.hangup()
        return str(response)
    say_slowly(response, TRANSFER_TEXT, voice)
    if action_url:
        response.dial(number, action=action_url, method="POST", timeout=DIAL_TIMEOUT_S)
    else:
        response.dial(number, timeout=DIAL_TIMEOUT_S)
        say_slowly(response, AFTER_DIAL_TEXT, voice)
        response.hangup()
    return str(response)


def render_dial_result(dial_status: str | None, *, voice: MandarinVoice = MANDARIN) -> str:
    """End the call after a transfer; promise a call back unless staff answered."""
    response = VoiceResponse()
    if (dial_status or "").strip() not in ("completed", "answered"):
        say_slowly(response, NO_ANSWER_TEXT, voice)
    response.hangup()
    return str(response)


def speak_ticket_number(number: str) -> str:
    """Spell a ticket number for TTS: "GD20261128-0007" -> "工单号 G D，二零二六，幺幺二八，零零零七".

    Letters are spaced so they are read one by one; digits are read one by one in
    telephone style (幺 for 1), in groups of four separated by a pause.
    """
    tokens = _TICKET_TOKEN.findall(number)
    if not tokens:
        raise ValueError(
            f"{number!r} has no letters or digits to read out; pass e.g. GD20261128-0007"
        )
    groups: list[str] = []
    for token in tokens:
        if token.isdigit():
            words = "".join(_DIGIT_WORDS[d] for d in token)
            groups.extend(words[i:i + 4] for i in range(0, len(words), 4))
        else:
            groups.append(" ".join(token.upper()))
    return "工单号 " + "，".join(groups)


def render_read_back(
    summary: str, number: str, *, action_url: str | None = None, voice: MandarinVoice = MANDARIN
) -> str:
    """Read the report and its ticket number (twice), then say goodbye and hang up.

    With action_url, pressing * during the read-back posts Digits=* there to hear it again.
    """
    response = VoiceResponse()
    spoken = speak_ticket_number(number)
    if action_url:
        target: VoiceResponse | Gather = Gather(
            input="dtmf", num_digits=1, timeout=GATHER_TIMEOUT_S, action=action_url, method="POST"
        )
    else:
        target = response
    say_slowly(target, summary, voice)
    target.pause(length=1)
    say_slowly(target, f"{TICKET_INTRO}{spoken}。", voice)
    target.pause(length=1)
    say_slowly(target, f"{TICKET_AGAIN}{spoken}。", voice)
    if isinstance(target, Gather):
        say_slowly(target, READ_BACK_REPEAT, voice)
        response.append(target)
    say_slowly(response, GOODBYE_TEXT, voice)
    response.hangup()
    return str(response)


def render_say_and_hangup(text: str, *, voice: MandarinVoice = MANDARIN) -> str:
    """Say one last thing slowly and end the call."""
    response = VoiceResponse()
    say_slowly(response, text, voice)
    response.hangup()
    return str(response)
