"""Normalise resident text before NLU: width, control characters, whitespace, numerals.

Chinese numerals become Arabic digits only where they are numbers of an address,
room, floor, phone number or clock time. Everything else is left alone, because
words such as 一直, 一下, 一点儿 and 万一 contain numeral characters but are not
numbers, and rewriting them would hurt the classifier more than it helps.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize", "chinese_to_arabic", "extract_digits", "NUMERAL_CHARS"]

# fmt: off
_DIGITS: dict[str, int] = {
    "零": 0, "〇": 0, "洞": 0, "一": 1, "幺": 1, "二": 2, "两": 2,
    "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9,
}
_UNITS: dict[str, int] = {"十": 10, "百": 100, "千": 1000, "万": 10000}
NUMERAL_CHARS = "".join(_DIGITS) + "".join(_UNITS)
_RUN = re.compile(f"[{NUMERAL_CHARS}]+")

# Words that hold numeral characters but are not numbers. They are copied verbatim
# and so also split a run: 五零一一直漏水 keeps 一直 and converts 五零一.
_PROTECTED = re.compile("|".join([
    r"一直", r"一下(?!午)", r"一起", r"一样", r"一些", r"一般", r"一定", r"一共", r"一切",
    r"一边", r"一会", r"一旦", r"一向", r"一律", r"一致", r"一概", r"一番", r"一阵", r"一再",
    r"一连", r"一度", r"一同", r"一齐", r"一并", r"一口气", r"一点[儿也都点不没]",
    r"一大[早堆半片]", r"一整[天晚夜]", r"一天到晚", r"一模一样", r"一层一层", r"一五一十",
    r"一清二楚", r"独一无二", r"说一不二", r"一塌糊涂", r"七上八下", r"乱七八糟", r"七七八八",
    r"三三两两", r"三番五次", r"五颜六色", r"十全十美", r"万无一失", r"千万", r"万万",
    r"(?<![点零〇一二两三四五六七八九])十分", r"百分之", r"[统万唯同单逐专划归合]一",
    r"[之其]一", r"不一[样定]?", r"两层楼?[中之]间",
]))
# fmt: on

# Address and room suffixes: a numeral run directly before one of these is a number.
_ADDRESS_SUFFIX = re.compile(r"多?(?:号|栋|幢|单元|楼|层|室|期|区|弄)")
# 一层灰 is "a layer of dust", 一楼道 is "the whole stairwell", 一房间 "a roomful".
_LAYER_NOUN = re.compile(r"层[灰水油皮膜雪冰土霜锈泥纸布层一白黑黄绿毛垢薄厚]|楼[道梯]")
# 厚厚一层, 加盖了一层, 盖了两层小楼: a count of layers or storeys, not a floor number.
_STOREY_COUNT_BEFORE = re.compile(r"[了厚薄共盖建铺刷涂高]$")
# 第一栋 is "the first building" (a position), not building No. 1.
_ORDINAL_BUILDING = re.compile(r"[栋幢座排]")
# What follows 点 when it is a clock time.
_CLOCK_AFTER = re.compile(
    r"点(?:半|钟|整|多|左右|以后|之后|以前|之前|前|后|到|至|-|~|或|[0-9零〇一二三四五六七八九十]+分|[一三]刻)"
)
_CLOCK_NOT_AFTER = re.compile(
    r"点(?:建议|意见|要求|要说|原因|问题|内容|看法|理由|想法|情况|事|东西)"
)
_TIME_OF_DAY = re.compile(
    r"(?:早上|早晨|清早|上午|中午|下午|傍晚|晚上|夜里|夜间|半夜|深夜|凌晨|白天|今天|明天|后天|"
    r"今晚|明晚|今早|明早|每天|天天|周[一二三四五六日天]|星期[一二三四五六日天]|"
    r"礼拜[一二三四五六日天]|[0-9]+[日号])\s?$"
)
_AFTER_CLOCK_RANGE = re.compile(r"[0-9]+点(?:半|[0-9]+分)?\s?(?:到|至|-|~|或)\s?$")
_WEEKDAY_PREFIX = re.compile(r"(?:周|星期|礼拜)$")
# Approximate counts: 三四五个人 is "three to five people", not room 345.
_MEASURE_AFTER = re.compile(r"[个人岁天次年只条辆位块元斤米家遍趟回]|分钟|小时")
_ADDRESS_BEFORE = re.compile(r"(?:[0-9]+(?:号楼|号院|号|栋|幢|单元|楼|层|座|期|区)|[0-9]+-)\s?$")
_ARABIC_MONTH_BEFORE = re.compile(r"[0-9]+月$")


def chinese_to_arabic(run: str) -> str | None:
    """Return the Arabic digits for a Chinese numeral run, or None if it is not a number."""
    if not run or any(ch not in _DIGITS and ch not in _UNITS for ch in run):
        return None
    if not any(ch in _UNITS for ch in run):
        return "".join(str(_DIGITS[ch]) for ch in run)
    value = _positional_value(run)
    return None if value is None else str(value)


def _positional_value(run: str) -> int | None:
    """Parse 一千八百零二, 二十三, 十二, 三百五 (colloquial 350); None when malformed."""
    if "洞" in run or run[0] in "百千万":
        return None  # 万一 and 千万 are words, not numbers
    total = 0  # value of completed 万 groups
    section = 0  # value below 万
    digit: int | None = None
    last_unit: int | None = None
    zero_seen = False
    for ch in run:
        if ch in _DIGITS:
            value = _DIGITS[ch]
            if digit is not None:
                return None  # two digits in a row (一五一十) is not positional
            if value == 0:
                zero_seen = True
            else:
                digit = value
            continue
        unit = _UNITS[ch]
        if unit == 10000:
            if total or (digit is None and section == 0):
                return None
            total = (section + (digit or 0)) * 10000
            section, digit, last_unit, zero_seen = 0, None, None, False
            continue
        if last_unit is not None and unit >= last_unit:
            return None  # units must fall: 十百 is not a number
        if digit is None:
            if unit != 10 or section:
                return None
            digit = 1  # 十二 means one ten and two
        section += digit * unit
        digit, last_unit, zero_seen = None, unit, False
    if digit is not None:
        # 三百五 is 350, 一千八 is 1800 and 两万五 is 25000; after 零 the digit is units.
        if not zero_seen and last_unit in (100, 1000) and run[-2] in _UNITS:
            section += digit * (last_unit // 10)
        elif not zero_seen and last_unit is None and run[-2] == "万":
            section += digit * 1000
        else:
            section += digit
    return total + section


def _clean(text: str) -> str:
    """Apply NFKC, drop control characters, turn line breaks into spaces, collapse spaces."""
    text = unicodedata.normalize("NFKC", text)
    chars: list[str] = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in "\r\n\t\v\f\x1c\x1d\x1e\x85" or category in ("Zs", "Zl", "Zp"):
            chars.append(" ")  # line breaks separate words; keep them as a space
        elif category in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue  # control, zero-width and unassigned characters carry nothing
        else:
            chars.append(ch)
    return re.sub(r" {2,}", " ", "".join(chars)).strip()


def normalize(text: str) -> str:
    """Return text with half-width characters, single spaces and Arabic address/time numbers."""
    cleaned = _clean(text)
    out: list[str] = []
    position = 0
    for protected in _PROTECTED.finditer(cleaned):
        segment = cleaned[position : protected.start()]
        out.append(_convert_segment(segment, "".join(out), cleaned[protected.start() :]))
        out.append(protected.group())
        position = protected.end()
    out.append(_convert_segment(cleaned[position:], "".join(out), ""))
    return "".join(out)


def _convert_segment(segment: str, before: str, after: str) -> str:
    """Convert numeral runs in a segment that holds no protected word."""
    out: list[str] = [before]
    position = 0
    for match in _RUN.finditer(segment):
        out.append(segment[position : match.start()])
        run = match.group()
        # 周六三点: the weekday numeral belongs to 周; the rest may be a clock time.
        if run[0] in "一二三四五六" and _WEEKDAY_PREFIX.search("".join(out)):
            out.append(run[0])
            run = run[1:]
        if run:
            out.append(_convert_run(run, "".join(out), segment[match.end() :] + after))
        position = match.end()
    out.append(segment[position:])
    return "".join(out)[len(before) :]


def _convert_run(run: str, left: str, right: str) -> str:
    """Return the run converted when its context says it is a number, else unchanged."""
    value = chinese_to_arabic(run)
    if value is None:
        return run
    digit_by_digit = not any(ch in _UNITS for ch in run)
    if right.startswith("点"):
        return value if _is_clock(run, left, right) else run
    if right.startswith("分") and re.search(r"[0-9]+点$", left):
        return value  # 三点十分
    if re.search(r"[0-9]+点$", left) and len(run) >= 2 and int(value) < 60:
        return value.zfill(2) if digit_by_digit else value  # 三点二十, 三点零五
    if (
        right.startswith("月")
        and int(value) <= 12
        and re.match(f"月[0-9{NUMERAL_CHARS}]+[日号]", right)
    ):
        return value
    if right[:1] in "日号" and _ARABIC_MONTH_BEFORE.search(left):
        return value
    if _ADDRESS_SUFFIX.match(right):
        if run in ("一", "两") and _LAYER_NOUN.match(right):
            return run  # 一层灰, 一楼道: a quantity, not a floor
        if right.startswith("层") and _STOREY_COUNT_BEFORE.search(left):
            return run
        if left.endswith("第") and _ORDINAL_BUILDING.match(right):
            return run
        return value
    if digit_by_digit and len(run) >= 3 and _ADDRESS_BEFORE.search(left):
        return value  # 2单元三零二家里: right after an address a spelled-out number is the door
    if digit_by_digit and len(run) >= 3 and not _is_counting(run, right):
        return value
    if len(run) >= 2 and _ADDRESS_BEFORE.search(left) and not _is_counting(run, right):
        return value  # 二单元五零 ... or 12栋八零二
    return run


def _is_clock(run: str, left: str, right: str) -> bool:
    """Tell whether numeral+点 is a clock time rather than 一点儿 or 两点建议."""
    if _CLOCK_NOT_AFTER.match(right) or re.search(r"[第这那几哪每]$", left):
        return False
    if run in ("一", "幺") and re.search(r"[差有快慢早晚多少好小大轻重高低远近]$", left):
        return False  # 差一点, 快一点: "a little"
    value = chinese_to_arabic(run)
    if value is None or int(value) > 24:
        return False
    if _TIME_OF_DAY.search(left) or _AFTER_CLOCK_RANGE.search(left) or _CLOCK_AFTER.match(right):
        return True
    # 一点 alone is usually "a little"; other hours are clock times unless a noun follows.
    return run not in ("一", "幺", "零", "〇")


def _is_counting(run: str, right: str) -> bool:
    """Tell whether a short digit run is an approximate count (三四五个) or AABB idiom."""
    if len(run) == 4 and run[0] == run[1] and run[2] == run[3] and run[0] != run[2]:
        return True
    return len(run) <= 4 and bool(_MEASURE_AFTER.match(right))


def extract_digits(text: str) -> str:
    """Return all Arabic digits of the normalised text, in order (for phone and room replies)."""
    return "".join(ch for ch in normalize(text) if ch.isdigit())
