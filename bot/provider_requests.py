"""Provider requests as WeChat and Twilio build them, and their answers read back (pure).

Used by `python -m bot simulate` and the channel benchmark, so both speak to the hub
exactly as the providers do; the builders are checked against wechatpy, twilio's
RequestValidator and channels/ in tests/unit/test_bench_channels.py.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as safe_et
from twilio.request_validator import RequestValidator
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import WeChatSigner

WECHAT_ACCOUNT = "gh_linli_bench"


def wechat_signature(*parts: str) -> str:
    """WeChat's SHA-1 over the sorted parts (token, timestamp, nonce[, encrypted body])."""
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


def cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


# WeChat writes these bare; every other field is CDATA.
_NUMERIC_FIELDS = frozenset({"CreateTime", "MsgId", "Location_X", "Location_Y", "Scale"})


def wechat_xml(fields: Sequence[tuple[str, str]]) -> str:
    """A push body in WeChat's XML, fields in the order given."""
    return "<xml>" + "".join(
        f"<{name}>{value if name in _NUMERIC_FIELDS else cdata(value)}</{name}>"
        for name, value in fields) + "</xml>"


def wechat_request(fields: Sequence[tuple[str, str]], *, token: str, openid: str, now: int,
                   nonce: str, crypto: WeChatCrypto | None,
                   account: str = WECHAT_ACCOUNT) -> tuple[dict[str, str], bytes]:
    """Sign a push as WeChat does; with `crypto` (safe mode) the body travels encrypted."""
    body = wechat_xml(fields)
    query = {"signature": wechat_signature(token, str(now), nonce), "timestamp": str(now),
             "nonce": nonce, "openid": openid}
    if crypto is not None:
        sealed = safe_et.fromstring(crypto.encrypt_message(body, nonce, str(now)))
        encrypt = sealed.findtext("Encrypt") or ""
        query.update(encrypt_type="aes",
                     msg_signature=wechat_signature(token, str(now), nonce, encrypt))
        body = wechat_xml([("ToUserName", account), ("Encrypt", encrypt)])
    return query, body.encode()


def wechat_push(crypto: WeChatCrypto, *, token: str, openid: str, text: str, msg_id: int,
                now: int, nonce: str) -> tuple[dict[str, str], bytes]:
    """Build a safe-mode text push as WeChat sends it: the query and the encrypted body."""
    fields = [("ToUserName", WECHAT_ACCOUNT), ("FromUserName", openid),
              ("CreateTime", str(now)), ("MsgType", "text"), ("Content", text),
              ("MsgId", str(msg_id))]
    return wechat_request(fields, token=token, openid=openid, now=now, nonce=nonce,
                          crypto=crypto)


def read_wechat_reply(crypto: WeChatCrypto, body: str, *, openid: str) -> str | None:
    """Decrypt a passive reply as WeChat does; None for `success` (the reply comes later)."""
    if body.strip().lower() in ("", "success"):
        return None
    sealed = safe_et.fromstring(body)
    plain = crypto.decrypt_message(body, sealed.findtext("MsgSignature"),
                                   sealed.findtext("TimeStamp"), sealed.findtext("Nonce"))
    reply = safe_et.fromstring(plain)
    if (reply.findtext("ToUserName"), reply.findtext("FromUserName")) != (openid, WECHAT_ACCOUNT):
        raise ValueError("passive reply addressed to someone else; WeChat would drop it")
    return reply.findtext("Content") or ""


def signed_form(auth_token: str, public_url: str,
                params: dict[str, str]) -> tuple[dict[str, str], bytes]:
    """Sign a Twilio webhook form over the public URL; return its headers and body."""
    signature = RequestValidator(auth_token).compute_signature(public_url, params)
    return ({"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1",
             "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
            urlencode(params).encode())


def local_url(base: str, public_url: str) -> str:
    """Where the reverse proxy forwards a public URL: the hub's address, same path and query."""
    parts = urlsplit(public_url)
    return base + parts.path + (f"?{parts.query}" if parts.query else "")


def sms_params(*, account_sid: str, to: str, phone: str, text: str, sid: str) -> dict[str, str]:
    """An inbound SMS as Twilio posts it."""
    return {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "AccountSid": account_sid,
            "From": "+86" + phone, "To": to, "Body": text, "NumMedia": "0", "NumSegments": "1",
            "FromCountry": "CN", "SmsStatus": "received", "ApiVersion": "2010-04-01"}


def voice_params(*, account_sid: str, to: str, phone: str, call_sid: str,
                 **extra: str) -> dict[str, str]:
    """A voice webhook as Twilio posts it during one call."""
    return {"CallSid": call_sid, "AccountSid": account_sid, "From": "+86" + phone,
            "Caller": "+86" + phone, "To": to, "Called": to, "Direction": "inbound",
            "CallStatus": "in-progress", "ApiVersion": "2010-04-01", **extra}


def _twiml(xml: str) -> Element:
    root = safe_et.fromstring(xml)
    if root.tag != "Response":
        raise ValueError(f"not TwiML: <{root.tag}>")
    return root


def sms_replies(xml: str) -> list[str]:
    """Return the SMS bodies of a TwiML messaging answer."""
    return [(m.text or "").strip() or (m.findtext("Body") or "").strip()
            for m in _twiml(xml).iter("Message")]


def voice_turn(xml: str) -> tuple[str, str | None]:
    """Return what the caller hears and the <Gather> action it should answer at, if any."""
    root = _twiml(xml)
    spoken = "".join("".join(say.itertext()) for say in root.iter("Say"))
    gather = root.find(".//Gather")
    return re.sub(r"\s+", "", spoken), gather.get("action") if gather is not None else None


