"""Numbered choices for channels without buttons: "回复1确认，回复2修改", "确认请按一"."""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

MAX_MENU_OPTIONS = 9
_CHINESE_DIGITS = {
    "一": 1, "幺": 1, "壹": 1, "二": 2, "两": 2, "贰": 2, "三": 3, "叁": 3,
    "四": 4, "肆": 4, "五": 5, "伍": 5, "六": 6, "陆": 6, "七": 7, "柒": 7,
    "八": 8, "捌": 8, "九": 9, "玖": 9,
}
_SPOKEN_KEYS = "零一二三四五六七八九"
_CHOICE_PREFIX = re.compile(r"^(?:回复|我选|选择|选|按|第)")
_CHOICE_SUFFIX = re.compile(r"(?:号|个|项|条|键)?(?:吧|啊|呀|了|的)?$")


def keyword(text: str) -> str:
    """Fold a short reply for comparison: NFKC, case-folded, no blanks or punctuation."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if not (ch.isspace() or unicodedata.category(ch)[0] == "P"))


def _check_options(options: Sequence[str]) -> None:
    if not 1 <= len(options) <= MAX_MENU_OPTIONS:
        raise ValueError(f"give 1 to {MAX_MENU_OPTIONS} options, got {len(options)}")
    if any(not option.strip() for option in options):
        raise ValueError("menu options must not be blank")


def numbered_menu(prompt: str, options: Sequence[str]) -> str:
    """Render a reply-by-number menu, e.g. numbered_menu("信息对吗？", ["确认", "修改"])."""
    _check_options(options)
    choices = "，".join(f"回复{number}{option.strip()}" for number, option in enumerate(options, 1))
    prompt = prompt.strip()
    if prompt and not _ends_with_punct(prompt):
        prompt += "，"
    return prompt + choices


def _ends_with_punct(text: str) -> bool:
    return unicodedata.category(text[-1]).startswith("P")


def read_menu_choice(text: str, n: int, *, options: Sequence[str] = ()) -> int | None:
    """Return the 1-based option a reply picks ("1", "１", "一", "壹", "回复2", "修改"), or None."""
    if not 1 <= n <= MAX_MENU_OPTIONS:
        raise ValueError(f"n must be 1 to {MAX_MENU_OPTIONS}, got {n}")
    if options and len(options) != n:
        raise ValueError(f"pass {n} options to match n, got {len(options)}")
    word = keyword(text)
    bare = _CHOICE_SUFFIX.sub("", _CHOICE_PREFIX.sub("", word))
    # "修改", and "修改吧" / "选修改" once the filler around the option word is gone.
    for candidate in (word, bare):
        for index, option in enumerate(options, 1):
            if candidate and candidate == keyword(option):
                return index
    if len(bare) != 1:
        return None
    choice = int(bare) if bare.isdigit() else _CHINESE_DIGITS.get(bare)
    return choice if choice is not None and 1 <= choice <= n else None


def spoken_menu(options: Sequence[str]) -> str:
    """Render choices for the telephone keypad: "确认，请按一。修改，请按二。"."""
    _check_options(options)
    return "".join(f"{option.strip()}，请按{_SPOKEN_KEYS[number]}。"
                   for number, option in enumerate(options, 1))
