"""Rule-based entities over NORMALISED text: address parts, phone, time window, emergency.

Address numbers are found with a spaCy Matcher over a blank Chinese pipeline, whose
default segmenter yields one token per character: a digit run is a sequence of digit
tokens without whitespace, and the token after it says what the number is (号楼, 单元,
室 ...). Phone numbers and time phrases are flat strings, so they use regular
expressions on the same text. The spaCy pipeline is built once per process and reused
(measured here: importing spaCy 1.4 s, building blank("zh") + Matcher 0.05-0.16 s, one
nlp() call 55 µs, a whole find_entities() 0.4 ms), so build it at model load (warm_up).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from nlu.safety import find_emergency

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.matcher import Matcher
    from spacy.tokens import Doc, Span

__all__ = [
    "ENTITY_TYPES",
    "EXTRACTOR_NAME",
    "Entity",
    "extract_entities",
    "find_entities",
    "warm_up",
]

EXTRACTOR_NAME = "CommunityEntityExtractor"
ENTITY_TYPES = ("building", "unit", "room", "floor", "phone", "time", "emergency")

_RUN_INNER = {"IS_DIGIT": True, "SPACY": False, "OP": "*"}
_RUN_LAST = {"IS_DIGIT": True}
_RUN = [_RUN_INNER, _RUN_LAST]
_PATTERNS: dict[str, list[list[dict[str, Any]]]] = {
    "BUILDING": [
        [*_RUN, {"ORTH": "号"}, {"ORTH": "楼"}],
        [*_RUN, {"ORTH": {"IN": ["栋", "幢", "座"]}}],
    ],
    "BUILDING_OR_DATE": [[*_RUN, {"ORTH": "号"}]],
    "UNIT": [[*_RUN, {"ORTH": "单"}, {"ORTH": "元"}]],
    "UNIT_OR_DOOR": [[*_RUN, {"ORTH": "门"}]],
    "FLOOR": [
        [*_RUN, {"ORTH": {"IN": ["楼", "层"]}}],
        [{"ORTH": {"IN": ["负", "-"]}}, *_RUN, {"ORTH": {"IN": ["楼", "层"]}}],
        [{"ORTH": "地"}, {"ORTH": "下"}, *_RUN, {"ORTH": {"IN": ["楼", "层"]}}],
    ],
    "ROOM": [[*_RUN, {"ORTH": {"IN": ["室", "房", "户"]}, "OP": "?"}]],
    "DASHED": [
        [*_RUN, {"ORTH": "-"}, *_RUN, {"ORTH": "-"}, *_RUN],
        [*_RUN, {"ORTH": "-"}, *_RUN],
    ],
}
# A bare 3-4 digit number is not a room when one of these follows it.
_NOT_ROOM_AFTER = re.compile(
    r"^(?:[元块米年岁天次个号楼层栋幢座点分度平斤万千百人只条辆位届期路线%]|家(?![里中])|单元|毫|公|"
    r"小时|分钟|多)"
)
_ADDRESS_BEFORE_ROOM = re.compile(r"(?:单元|号楼|栋|幢)\s?$")
_NOT_ROOM_BEFORE = re.compile(r"(?:打|拨|报|叫|call|第|共|约|大概|\d[:.])\s?$")
_PHONE_MOBILE = re.compile(r"(?<![\d-])1[3-9]\d(?:[ -]?\d){8}(?![\d-])")
_PHONE_LANDLINE = re.compile(r"(?<![\d-])(0\d{2,3})[ -]?(\d{7,8})(?![\d-])")
_PHONE_LOCAL = re.compile(r"(?:电话|座机|号码|打)(?:是|号)?\s?(?<!\d)(\d{8})(?!\d)")

_DAY = (
    r"(?:大后天|今天|明天|后天|今儿|明儿|今晚|明晚|今早|明早|工作日|周末|"
    r"(?:这|下下?)?(?:个)?(?:周|星期|礼拜)[一二三四五六日天末]|"
    r"\d{1,2}月\d{1,2}[日号]|\d{1,2}[日号](?=早|上午|中午|下午|傍晚|晚|之前|以前|前|以后|之后))"
)
_PERIOD = r"(?:早上|早晨|上午|中午|下午|傍晚|晚上|夜里|白天|凌晨)"
_CLOCK = r"(?:\d{1,2}(?::\d{2}|点(?:半|\d{1,2}分?|钟)?)(?:左右|多)?)"
_MODIFIER = r"(?:以后|之后|以前|之前|以内|之内|左右|前|后)"
_TIME = re.compile(
    rf"(?:{_DAY}\s?)?(?:{_PERIOD}\s?)?{_CLOCK}(?:\s?(?:到|至|-|~)\s?{_PERIOD}?{_CLOCK})?{_MODIFIER}?"
    rf"|(?:{_DAY}\s?)?{_PERIOD}(?:\s?(?:到|至|-|~)\s?{_PERIOD})?{_MODIFIER}?"
    rf"|{_DAY}{_MODIFIER}?"
    r"|随时|任何时候|什么时候都(?:行|可以)|全天|越快越好|尽快|马上|立刻|下班(?:以后|之后|后)"
    r"|(?<![到至从])现在(?=\s?(?:就|可以|过来|来|有人|在家|方便|吧|行)|\s?$)"
)


@dataclass(frozen=True)
class Entity:
    """One extracted entity; start/end index the normalised text."""

    entity: str
    value: str
    start: int
    end: int

    def as_rasa(self) -> dict[str, Any]:
        """Return the entity as a Rasa entity dict."""
        return {
            "entity": self.entity,
            "value": self.value,
            "start": self.start,
            "end": self.end,
            "confidence": 1.0,
            "extractor": EXTRACTOR_NAME,
        }


@lru_cache(maxsize=1)
def _pipeline() -> tuple[Language, Matcher]:
    """Build the blank Chinese pipeline and the address matcher once per process."""
    import spacy
    from spacy.matcher import Matcher

    nlp = spacy.blank("zh")
    matcher = Matcher(nlp.vocab)
    for label, patterns in _PATTERNS.items():
        matcher.add(label, patterns, greedy="LONGEST")
    return nlp, matcher


def warm_up() -> None:
    """Build the spaCy pipeline now (about 1.5 s on first use), e.g. while a model loads."""
    _pipeline()


def extract_entities(text: str) -> list[dict[str, Any]]:
    """Return Rasa entity dicts for the rule-based entities of normalised text."""
    return [entity.as_rasa() for entity in find_entities(text)]


def find_entities(text: str) -> list[Entity]:
    """Return the rule-based entities of normalised text, ordered by position."""
    if not text.strip():
        return []
    phones = _phones(text)
    taken = [(e.start, e.end) for e in phones]
    found = list(phones)
    for entity in _addresses(text):
        if not _overlaps(entity.start, entity.end, taken):
            found.append(entity)
    address_spans = [(e.start, e.end) for e in found]
    for entity in _times(text):
        if not _overlaps(entity.start, entity.end, address_spans):
            found.append(entity)
    hit = find_emergency(text)
    if hit is not None:
        found.append(Entity("emergency", hit.kind, hit.start, hit.end))
    return sorted(found, key=lambda e: (e.start, e.end, e.entity))


def _overlaps(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return any(start < other_end and other_start < end for other_start, other_end in spans)


def _phones(text: str) -> list[Entity]:
    found: list[Entity] = []
    for match in _PHONE_MOBILE.finditer(text):
        found.append(Entity("phone", re.sub(r"\D", "", match.group()), match.start(), match.end()))
    for match in _PHONE_LANDLINE.finditer(text):
        if _overlaps(match.start(), match.end(), _spans(found)):
            continue
        area, number = match.groups()
        if len(match.group()) == len(area) + len(number):
            area, number = _split_area_code(area + number)  # no separator was typed
        found.append(Entity("phone", f"{area}-{number}", match.start(), match.end()))
    for match in _PHONE_LOCAL.finditer(text):
        if not _overlaps(match.start(1), match.end(1), _spans(found)):
            found.append(Entity("phone", match.group(1), match.start(1), match.end(1)))
    return found


def _split_area_code(digits: str) -> tuple[str, str]:
    """Split 01012345678 into 010 and 12345678: 01x/02x codes have 3 digits, others 4."""
    size = 3 if digits[1] in "12" else 4
    return digits[:size], digits[size:]


def _spans(entities: list[Entity]) -> list[tuple[int, int]]:
    return [(e.start, e.end) for e in entities]


def _times(text: str) -> list[Entity]:
    """Return time phrases; adjacent ones (明天 3号上午) are merged into one window."""
    spans: list[tuple[int, int]] = []
    for match in _TIME.finditer(text):
        start, end = match.start(), match.end()
        if not match.group().strip():
            continue
        if spans and not text[spans[-1][1] : start].strip():
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return [Entity("time", re.sub(r"\s", "", text[s:e]), s, e) for s, e in spans]


def _addresses(text: str) -> list[Entity]:
    nlp, matcher = _pipeline()
    doc = nlp(text)
    spans = sorted(
        ((doc.vocab.strings[label], doc[start:end]) for label, start, end in matcher(doc)),
        key=lambda item: (item[1].start, -len(item[1])),
    )
    found: list[Entity] = []
    used: list[tuple[int, int]] = []
    for label, span in spans:
        if _overlaps(span.start_char, span.end_char, used):
            continue
        entities = _read_span(label, span, doc, found)
        if entities:
            found.extend(entities)
            used.append((span.start_char, span.end_char))
    return found


def _digits(span: Span) -> str:
    return "".join(token.text for token in span if token.is_digit)


def _digit_spans(span: Span) -> list[Span]:
    """Split a span into its digit runs, in order."""
    runs: list[Span] = []
    start: int | None = None
    for token in span:
        if token.is_digit and start is None:
            start = token.i
        elif not token.is_digit and start is not None:
            runs.append(span.doc[start : token.i])
            start = None
    if start is not None:
        runs.append(span.doc[start : span.end])
    return runs


def _entity(kind: str, span: Span, value: str | None = None) -> Entity:
    return Entity(
        kind, value if value is not None else _digits(span), span.start_char, span.end_char
    )


def _read_span(label: str, span: Span, doc: Doc, found: list[Entity]) -> list[Entity]:
    """Turn one matcher span into entities, or none when its context says otherwise."""
    after = doc.text[span.end_char :]
    before = doc.text[: span.start_char]
    # The address part right before this span (allowing one space), e.g. building before 2门.
    last_kind = found[-1].entity if found and span.start_char - found[-1].end in (0, 1) else None
    runs = _digit_spans(span)
    if label == "BUILDING":
        return [_entity("building", span, _strip_zeros(runs[0].text))]
    if label == "UNIT":
        return [_entity("unit", span, _strip_zeros(runs[0].text))]
    if label == "UNIT_OR_DOOR":
        # 3号楼2门 is Beijing usage for unit 2; a bare 2门 is usually a gate.
        return (
            [_entity("unit", span, _strip_zeros(runs[0].text))] if last_kind == "building" else []
        )
    if label == "BUILDING_OR_DATE":
        if len(runs[0]) in (3, 4) and not re.match(r"\s?(?:线|路|上午|下午|晚上)", after):
            return [_entity("room", span, runs[0].text)]
        if re.match(r"\s?(?:\d+\s?(?:单元|门)|\d{3,4}(?!\d)|-\d)", after):
            return [_entity("building", span, _strip_zeros(runs[0].text))]
        return []  # 3号 alone is more often a date
    if label == "FLOOR":
        value = _strip_zeros(runs[0].text)
        if re.match(r"\s?\d+\s?(?:单元|门)", after) and span.text[0].isdigit():
            return [_entity("building", span, value)]  # 5楼2单元: a building said as 楼
        if span.text[0] in "负-" or span.text.startswith("地下"):
            value = f"-{value}"
        return [_entity("floor", span, value)] if len(runs[0]) <= 2 else []
    if label == "ROOM":
        return _read_room(span, runs[0], before, after, last_kind)
    if label == "DASHED":
        return _read_dashed(runs, before, last_kind)
    return []


def _read_room(
    span: Span, run: Span, before: str, after: str, last_kind: str | None
) -> list[Entity]:
    digits = run.text
    if not 3 <= len(digits) <= 4 or digits[0] == "0":
        return []
    has_suffix = span.end > run.end
    # Right after a unit or building (5号楼1单元302家里) the number is the door, whatever follows,
    # unless it is money or a clock time.
    after_address = bool(_ADDRESS_BEFORE_ROOM.search(before)) and not re.match(r"[元块点分]", after)
    if not has_suffix and not after_address and (
        _NOT_ROOM_AFTER.match(after) or _NOT_ROOM_BEFORE.search(before)
    ):
        return []
    if not has_suffix and last_kind is None and re.search(r"[:.]\s?$", before):
        return []
    return [_entity("room", span if has_suffix else run, digits)]


def _read_dashed(runs: list[Span], before: str, last_kind: str | None) -> list[Entity]:
    """Read 3-2-501 (building, unit, room) or 3-501 / 2-501 after a building."""
    if re.search(r"\d[:.]\s?$", before):
        return []
    if len(runs) == 3:
        building, unit, room = runs
        if len(room) < 3:
            return []
        return [
            _entity("building", building, _strip_zeros(building.text)),
            _entity("unit", unit, _strip_zeros(unit.text)),
            _entity("room", room),
        ]
    first, room = runs
    if len(room) < 3 or len(first) > 3:
        return []
    kind = "unit" if last_kind == "building" else "building"
    return [_entity(kind, first, _strip_zeros(first.text)), _entity("room", room)]


def _strip_zeros(digits: str) -> str:
    return digits.lstrip("0") or "0"
