"""Anger and distress in a resident's words: when a person should join the conversation.

A lexicon and a few patterns, not a classifier: the cues are few and idiomatic, a miss is
cheap (the resident can still say 转人工) and a false alarm only costs an agent a look,
but every decision has to be explainable to the agent who sees "why is this queued".

Decisions (keep tests/unit/test_nlu_distress.py in step):
* Anger is anger at the service: 投诉你们/物业, 12345 or 市长热线, 打了三次电话都没人管,
  三天了还没人来, insults, runs of !!! or ???. Complaining *about a neighbour*
  (我要投诉楼上噪音) is an ordinary report, and so is a long-standing fault on its own
  (水管漏了好几天了): only waiting *plus* "nobody came" is anger.
* Distress is the resident's own state: crying, 急死了, 害怕, an old person with nobody to
  help (我一个老人家怎么办, 没人管我们), hopelessness. A crying child upstairs or 老人 in a
  report is not.
* 急 alone, 不急, 没生气, 不是投诉你们 do not fire: urgency belongs to triage, and a cue
  right after a negation is denied, not meant.
* When both kinds are present, distress wins: it is the one an agent must not miss.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["DISTRESS_KINDS", "DistressSignal", "detect_distress"]

DISTRESS_KINDS = ("distress", "anger")

_NUM = r"(?:[0-9]+|[一二两三四五六七八九十几多好半]+)"
_OLD = (r"(?:老人家?|老太婆|老太太|老婆子|老头子?|孤老太?婆?|空巢老人|独居老人|"
        r"[六七八九]十(?:多)?(?:岁)?(?:了)?)")
_US = r"(?:你们|你|物业|客服|社区|居委会?|工作人员|维修工|维修师傅|师傅|机器人)"
# Gas and air words whose 气 is not anger (暖气死活不热).
_NOT_ANGRY_QI = r"(?<![暖燃煤然化空通排换冷热沼漏氧天])"

# (kind, pattern, negatable). A negatable cue right after 不/没/别/不是… does not fire.
_RULES: tuple[tuple[str, str, bool], ...] = (
    # --- distress: the resident's own state ---------------------------------------------
    ("distress", r"呜呜|嘤嘤|(?:想|要|快|急|气|都快|都要)哭|我.{0,3}哭了|哭死|哭都哭不", False),
    ("distress", r"我(?:一个|一|是个?)?" + _OLD + r".{0,16}?(?:怎么办(?!理)|咋办|"
                 r"怎么(?:弄|活|下楼|上楼|买菜|出门)|没办法|没法|弄不了|搬不动|爬不[动了]|"
                 r"上不去|下不去|干不了|做不了|谁管|谁来管)", False),
    ("distress", r"没(?:有)?人(?:管|照顾|帮|理)(?:我|我们|咱|俺|老人)", False),
    ("distress", r"(?:真的?|实在|已经)没(?:办法|法子|辙)了?|走投无路|撑不(?:下去|住了)|熬不下去|活不下去|"
                 r"不想活|不活了|死了算了|没法活|活着(?:真|还有)?(?:没|什么)意思|日子没法过|"
                 r"(?:我|人|要|快)崩溃|绝望|无助|(?:我|真的?)太难了", False),
    ("distress", r"求求|(?<!要)求你们?了?(?:快|帮|救|赶紧)|救救(?:我|我们|我家|老人)|救命", False),
    ("distress", r"急死(?:我|人)?了?|急得(?:我|不行|要命|团团转|睡不着)|急疯|急坏了", True),
    ("distress", r"我.{0,3}害怕|(?:好|很|真|太|非常|特别)害怕|吓死(?:我|人)?了?|吓坏了|吓得我", True),
    ("distress", r"怎么办(?!理).{0,2}怎么办|(?:这可|这下|我该|我可|我们可)怎么办(?!理)|不知道(?:该)?怎么办(?!理)", False),
    ("distress", r"可怜可怜|可怜(?:我|我们)", False),
    # --- anger at the service -----------------------------------------------------------
    ("anger", _NOT_ANGRY_QI + r"气死(?:我|人|俺)?了?|" + _NOT_ANGRY_QI + r"气人|把我气|气得我|"
              r"火大|恼火|窝火|(?:很|太|真|非常|特别|好)生气|我生气了", True),
    ("anger", r"太过分|过分了|欺人太甚|太不像话|不像话|岂有此理|有没有搞错|搞什么(?:鬼|名堂|东西)|"
              r"什么玩意|啥玩意", False),
    ("anger", r"(?:什么|啥)破(?!了|的|损|裂|洞)|破(?:物业|服务|系统|机器人?|客服|公司)|"
              r"垃圾(?:物业|服务|系统|客服|公司|机器人)|烂(?:物业|服务)", False),
    ("anger", r"(?:干什么|干啥|干嘛|吃干饭)吃的|吃干饭|拿钱不(?:干活|办事)|收钱不办事|"
              r"(?:物业费|钱)白交|白交(?:了)?(?:物业费|钱)|拿了物业费不", False),
    ("anger", r"投诉" + _US, True),
    ("anger", r"(?:打|找|去|上|向|告到|打到)(?:过|了)?(?:12345|市长热线|市长信箱|信访|纪委|媒体|电视台|记者|报社)|"
              r"12345投诉|市长热线|信访|曝光|上(?:网|抖音|新闻|电视)(?:曝光|说|发)", True),
    ("anger", r"你们领导|叫.{0,3}领导|找.{0,3}领导来|你们经理|叫.{0,3}经理来", False),
    ("anger", r"他妈|妈的|tmd|nmd|尼玛|你妈(?!妈)|草泥马|cnm|卧槽|我操|操你|操蛋|傻逼|傻b|煞笔|"
              r"(?<![a-z])sb(?![a-z])|混蛋|王八蛋|狗屁|放屁|去死|滚蛋|滚开|给我滚|你滚|^滚(?!动|筒)|"
              r"白痴|脑残|蠢货|笨蛋|废物(?!回收|利用|处理|箱|桶|站)", False),
    ("anger", r"推来推去|踢皮球|推卸|敷衍|糊弄(?:谁|人|我)|(?:别|你们|你)(?:再)?糊弄|"
              r"(?:你们|你|物业|别)(?:再)?(?:骗|忽悠)|不作为|光说不(?:做|干)|说一套做一套|"
              r"不负责任|不管不问|爱答不理|答非所问|听不懂人话|打官腔|"
              r"(?:要|养)你们(?:有|干)(?:什么|啥)用|你们有(?:什么|啥)用|有个屁用|"
              r"干点人事|不干人事|让不让人(?:活|过)", False),
    ("anger", r"态度.{0,4}?(?:差|恶劣|不好|蛮横)|差评", True),
    ("anger", r"受够了|忍无可忍|忍不了了", False),
    ("anger", r"(?:到底|还)(?:管不管|修不修|来不来|有没有人管)|管不管了|有没有人管|还有没有人管", False),
    # Asked again and again, still nothing: 打了五次电话都没人管, 说了多少遍了还是没修好.
    ("anger", r"(?:打|报|反映|说|催|问|投诉|找)了?(?:" + _NUM + r"|多少|无数)(?:次|遍|回|趟)(?:电话)?了?"
              r".{0,8}?(?:没|没有|不见)", False),
    ("anger", r"说了(?:多少|好多|无数|好几)(?:次|遍)", False),
    # Waited a long time, still nobody: 三天了还没人来, 半个月了没有任何回音.
    ("anger", _NUM + r"个?(?:天|日|周|星期|礼拜|月|年|小时|钟头)(?:了|多了)?.{0,8}?"
              r"(?:(?:还|都|也|仍|一直|始终|仍然|依然)(?:是)?(?:没|没有|不见)|没有?人(?:来|理)|没有任何)", False),
    ("anger", r"人影(?:都|也)?没|连个人影|一直没人理|都没人理|根本没人|压根没人|从来没人", False),
)
_COMPILED: tuple[tuple[str, re.Pattern[str], bool], ...] = tuple(
    (kind, re.compile(pattern), negatable) for kind, pattern, negatable in _RULES
)
# Three or more !/? in a row, as people type when they shout.
_SHOUTING = re.compile(r"[!?]{3,}")
_NEGATED = re.compile(r"(?:不|没|没有|别|不是|并不|并没有|不会|不用|不要|无需)$")


@dataclass(frozen=True)
class DistressSignal:
    """Why a person should join: the kind of upset and the words that showed it."""

    kind: str  # "anger" | "distress"
    cue: str


def _normalise(text: str) -> tuple[str, str]:
    """Return (text without blanks, with !/? kept) and (without blanks or punctuation)."""
    folded = unicodedata.normalize("NFKC", text).lower()
    spoken = "".join(ch for ch in folded if not ch.isspace())
    compact = "".join(
        ch for ch in spoken
        if unicodedata.category(ch)[0] not in "PSZC" or ch.isalnum()
    )
    return spoken, compact


def detect_distress(text: str) -> DistressSignal | None:
    """Return the anger or distress a resident's message shows, or None for an ordinary one."""
    spoken, compact = _normalise(text or "")
    if not spoken:
        return None
    for kind, pattern, negatable in _COMPILED:  # distress rules come first, so they win
        for match in pattern.finditer(compact):
            if negatable and _NEGATED.search(compact[: match.start()]):
                continue  # 我不是投诉你们, 不急, 没生气
            return DistressSignal(kind=kind, cue=match.group())
    shout = _SHOUTING.search(spoken)
    if shout is not None:
        return DistressSignal(kind="anger", cue=shout.group())
    return None
