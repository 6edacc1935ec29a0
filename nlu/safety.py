"""Life-safety rules: spot emergencies and raise urgency for vulnerable people or danger.

These rules run beside the statistical classifier on purpose: a missed trapped-in-lift
or gas-leak message costs far more than a false alarm, and the rules must not depend
on how the classifier was trained.

Decisions (keep tests in step):
* 燃气灶打不着火 is a gas *fault* (category gas_leak, P1 by taxonomy) but not an
  emergency: only a smell, a hiss, an alarm or the word 泄漏/漏气 signals a leak.
* 电梯坏了 is an elevator fault; only a person inside a stopped lift is ``trapped``.
* Words of prevention or hypothesis (容易着火, 担心困人, 以防漏气) and plain negation
  (没人被困, 没着火) do not fire: those are hazards, which the classifier handles.
* 火灾隐患 / 消防 talk is a fire hazard, not a fire.
* When several kinds fire, the order is fire > gas > trapped > violence > medical,
  because the first is the root situation the responders must deal with.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["EMERGENCY_KINDS", "EmergencyHit", "find_emergency", "detect_emergency", "raise_urgency"]

EMERGENCY_KINDS = ("fire", "gas", "trapped", "violence", "medical")
URGENCY_LEVELS = ("P4", "P3", "P2", "P1")

# Same-length rewrites of frequent ASR homophones, so offsets still map back.
_HOMOPHONES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<![虽突当忽自果显既竟居仍依公偶天必固纵徒全安坦悄泰超])然气"), "燃气"),
    (re.compile(r"燃汽"), "燃气"),
    (re.compile(r"煤汽"), "煤气"),
    (re.compile(r"电[替体提题剃]|[点店垫]梯"), "电梯"),
    (re.compile(r"捆人"), "困人"),
    (re.compile(r"着伙"), "着火"),
)
# Interjections and punctuation carry nothing for these rules and break adjacency.
_FILLER = set("嗯啊呃哦噢唉哎喂呀啦嘛哈诶欸")

_PERSON = r"(?:人|老人|老头|老太|老伴|爸|妈|爷|奶|公公|婆婆|他|她|孩子|小孩|邻居|大爷|大妈|阿姨|叔)"
_LIFT = r"(?:电梯|轿厢|升降梯|铁盒子|铁箱子)"
_QUANTITY = r"(?:个|一个|两个|几个|三个|好几个)?"
_NOT_GAS = r"信息|隐私|资料|密码|轮胎|车胎|气球|充气|暖气|空调|水"
_NOT_BREATH = r"燃气|煤气|天然气|液化气|气罐|暖气|轮胎|车胎|气球"

# kind -> (pattern, whole-text exclusion). Where a pattern names a group ``t``, negation
# is judged right before that group (电梯坏了还好没人被困), otherwise before the match.
_RULES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "fire": (
        (r"着火|起火|失火|火灾(?!隐患|报警器|险)|烧起来|烧着了|火苗(?:窜|蹿|冒)|火光|火势", None),
        (
            r"冒(?:黑|白|浓)?烟|浓烟|(?:全|都|满)是烟(?![味头])|好多烟(?![味头])|烟(?:很|特别)大",
            None,
        ),
        (r"爆炸|(?:电瓶|电池|煤气罐|气罐|插座|热水器|变压器)(?:爆|炸)了", None),
    ),
    "gas": (
        (r"(?:燃气|煤气|天然气|液化气)(?:的)?(?:味|臭味)|臭鸡蛋味", None),
        (
            r"(?:燃气|煤气|天然气|液化气|气罐|燃气管|煤气管|燃气表|煤气表|燃气阀|煤气阀).{0,6}?(?P<t>漏|泄|嘶嘶)",
            None,
        ),
        (r"漏气|泄漏|泄露", _NOT_GAS),
        (r"(?:燃气|煤气)报警器.{0,4}?(?P<t>响|叫|报警)|报警器.{0,4}(?:燃气|煤气)", None),
        (r"(?:煤气|一氧化碳)中毒", None),
    ),
    "trapped": (
        (_LIFT + r".{0,12}?(?P<t>(?:困|关|卡|锁)(?:了|着|住)?" + _QUANTITY + _PERSON + ")", None),
        (
            r"(?:被|人|我|我们|他|她)(?:困|关|卡|锁)(?:在|进)?(?:了)?"
            + _LIFT
            + r"|(?:困|关|卡|锁)在"
            + _LIFT
            + r"|困"
            + _LIFT,
            None,
        ),
        (r"(?:被困|困在|关在|卡在|锁在).{0,4}" + _LIFT, None),
        (
            _LIFT
            + r".{0,14}?(?P<t>(?:里面|里头|里边|里)还?(?:有|关着|困着)"
            + _QUANTITY
            + _PERSON
            + ")",
            None,
        ),
        (_LIFT + r".{0,12}?(?P<t>(?:困着|关着).{0,8}?" + _PERSON + ")", None),
        (_LIFT + r".{0,10}?(?P<t>困人|被困|出不来|出不去)", None),
        (r"(?:我|我们|人|他|她)还?在" + _LIFT + r"(?:里|里面|里头|里边)", None),
        (_LIFT + r".{0,12}?(?P<t>(?:人|我|我们|他|她)还?在里(?:面|头|边)?)", None),
        (
            r"卡在[0-9零一二三四五六七八九十两]+楼(?:和|到|跟)[0-9零一二三四五六七八九十两]+楼(?:中间|之间)",
            None,
        ),
    ),
    "violence": (
        (
            r"持刀|拿着?刀|动刀|掏刀|砍人|捅人|(?:砍|捅)(?:伤|了)(?:人|他|她|我)|杀人|要杀(?:人|了|他|她|我)",
            None,
        ),
        (
            r"打得?头破血流|打出血|打人.{0,6}(?:血|刀|棍|砖)|拿着?(?:棍子|棒子|砖头|铁棍).{0,4}打",
            None,
        ),
        (r"(?:正在|在)家暴|家暴.{0,4}(?:打|救命)", None),
    ),
    "medical": (
        (r"晕[倒到]|昏[倒到迷]|不省人事|人事不省|晕过去|昏过去|倒地不起|叫不醒|休克", None),
        (r"(?P<t>(?:摔|跌|滑)(?:倒|到|了|跤)?).{0,8}(?:起不来|爬不起来|动不了|站不起来)", None),
        (_PERSON + r".{0,4}?(?P<t>没(?:气|呼吸|心跳)了)|没有?(?:呼吸|心跳)|停止呼吸", _NOT_BREATH),
        (
            r"心脏病.{0,2}(?:犯|发作)|抽搐|口吐白沫|(?:突然|刚才|刚刚)(?:中风|脑梗|昏|晕)|(?:中风|脑梗)了",
            None,
        ),
        (r"大出血|血流不止|(?:好多|很多)血|头破血流|喘不(?:上|过)气|呼吸困难|吐血", None),
        (_PERSON + r".{0,4}快不行了", None),
    ),
}
_COMPILED: dict[str, tuple[tuple[re.Pattern[str], re.Pattern[str] | None], ...]] = {
    kind: tuple((re.compile(p), None if x is None else re.compile(x)) for p, x in rules)
    for kind, rules in _RULES.items()
}

# Text ending right before a trigger that turns it into a hazard, a worry or a denial.
_NEGATED_BEFORE = re.compile(
    r"(?:没|没有|没有人|没人|不|不是|不会|别|防止|以防|预防|担心|怕|害怕|万一|要是|如果|"
    r"容易|可能会|会不会|小心|避免|防)$"
)


@dataclass(frozen=True)
class EmergencyHit:
    """One life-safety trigger: its kind and its span in the text that was searched."""

    kind: str
    start: int
    end: int
    trigger: str


def _compact(text: str) -> tuple[str, list[int]]:
    """Return text without spaces, punctuation and fillers, with each char's source index."""
    chars: list[str] = []
    index: list[int] = []
    for position, ch in enumerate(text):
        for out in unicodedata.normalize("NFKC", ch):
            category = unicodedata.category(out)
            if out.isspace() or category[0] in "PZC" or out in _FILLER or category == "So":
                continue
            chars.append(out.lower())
            index.append(position)
    compact = "".join(chars)
    for pattern, replacement in _HOMOPHONES:
        compact = pattern.sub(replacement, compact)
    return compact, index


def find_emergency(text: str) -> EmergencyHit | None:
    """Return the most important life-safety trigger in text, or None."""
    compact, index = _compact(text)
    if not compact:
        return None
    for kind in EMERGENCY_KINDS:
        for pattern, exclusion in _COMPILED[kind]:
            if exclusion is not None and exclusion.search(compact):
                continue
            for match in pattern.finditer(compact):
                core = "t" if pattern.groupindex.get("t") and match.group("t") else 0
                if _NEGATED_BEFORE.search(compact[: match.start()]) or _NEGATED_BEFORE.search(
                    compact[: match.start(core)]
                ):
                    continue  # 担心电梯困人 and 电梯坏了还好没人被困
                return EmergencyHit(
                    kind=kind,
                    start=index[match.start()],
                    end=index[match.end() - 1] + 1,
                    trigger=match.group(),
                )
    return None


def detect_emergency(text: str) -> str | None:
    """Return trapped|gas|fire|medical|violence when text describes a life-safety situation."""
    hit = find_emergency(text)
    return None if hit is None else hit.kind


# (pattern, reason shown to staff). Order only decides which reason is reported.
_RAISERS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), reason)
    for pattern, reason in (
        (
            r"(?:小孩|孩子|宝宝|婴儿|小朋友|孙子|孙女).{0,6}(?:被困|困在|关在|锁在|在里面|在里头|在里边)",
            "儿童被困",
        ),
        (r"(?:被困|困着|关着|锁着).{0,4}(?:小孩|孩子|宝宝|婴儿|小朋友)", "儿童被困"),
        (
            r"独居|一个人住|家里只有(?:老人|老太太|老爷子|我妈|我爸)|只有老人在家|空巢老人",
            "独居或仅老人在家",
        ),
        (r"瘫痪|卧床|坐轮椅|残疾|行动不便|腿脚不[好便]|下不了楼", "行动不便的居民"),
        (r"孕妇|怀孕|大肚子", "孕妇"),
        (r"(?:婴儿|新生儿|刚出生)", "婴儿"),
        (
            r"漏电|触电|电到人|麻手|(?:插座|电线|电箱|电表|配电箱).{0,6}(?:进水|泡水|淹|湿)|水.{0,8}(?:漫|淹|流|渗|漏)到.{0,4}(?:插座|电线|电箱|电表)",
            "水电交汇有触电危险",
        ),
        (r"打火花|冒火花|电线裸露|电线掉下来", "电线隐患"),
        (r"要塌|塌了|掉下来砸|砸到人|砸伤", "有坠落或坍塌危险"),
    )
)


def raise_urgency(text: str, urgency: str) -> tuple[str, str | None]:
    """Return urgency raised one level (P4→P3→P2→P1) and the reason, or unchanged and None."""
    if urgency not in URGENCY_LEVELS:
        raise ValueError(f"unknown urgency {urgency!r}: pass one of {', '.join(URGENCY_LEVELS)}")
    compact, _ = _compact(text)
    for pattern, reason in _RAISERS:
        match = pattern.search(compact)
        if match is None or _NEGATED_BEFORE.search(compact[: match.start()]):
            continue
        if urgency == "P1":
            return urgency, None
        return URGENCY_LEVELS[URGENCY_LEVELS.index(urgency) + 1], reason
    return urgency, None
