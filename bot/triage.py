"""Turn one NLU parse into a triage: category, lead department, urgency and entities."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nlu.safety import detect_emergency, raise_urgency
from routing.catalogue import Catalogue

REPORT_INTENTS = ("report_problem", "report_emergency")
EMERGENCY_URGENCY = "P1"
EMERGENCY_REASONS = {
    "trapped": "有人被困",
    "gas": "燃气泄漏",
    "fire": "火情",
    "medical": "急症或摔倒",
    "violence": "暴力危险",
}


@dataclass(frozen=True)
class Triage:
    """What Linli concluded about a request, the same for a live turn and for the CLI."""

    intent: str
    category: str
    lead_department: str
    urgency: str
    urgency_reason: str | None
    confidence: float
    emergency: str | None
    entities: dict[str, str] = field(default_factory=dict)
    # The classifier's category ranking, best first, for re-routing after a return.
    ranking: tuple[tuple[str, float], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "lead_department": self.lead_department,
            "urgency": self.urgency,
            "confidence": round(self.confidence, 4),
            "entities": self.entities,
            "intent": self.intent,
            "emergency": self.emergency,
            "urgency_reason": self.urgency_reason,
        }


def entity_values(parse: dict[str, Any]) -> dict[str, str]:
    """Return the first value of each entity in a parse, category excluded."""
    values: dict[str, str] = {}
    for entity in parse.get("entities") or []:
        name = entity.get("entity")
        if name and name != "category" and name not in values:
            values[name] = str(entity.get("value"))
    return values


def triage(parse: dict[str, Any], catalogue: Catalogue, *, text: str | None = None) -> Triage:
    """Triage a Rasa parse result with the catalogue's defaults and the conversation's cues."""
    intent = (parse.get("intent") or {}).get("name") or "nlu_fallback"
    category_info = parse.get("category") or {}
    category = category_info.get("name") or "other"
    if not catalogue.has_category(category):
        category = "other"
    confidence = float(category_info.get("confidence") or 0.0)
    ranking = tuple((str(item["name"]), round(float(item["confidence"]), 4))
                    for item in category_info.get("ranking") or () if "name" in item)
    entry = catalogue.category(category)
    words = text if text is not None else str(parse.get("original_text") or parse.get("text") or "")
    entities = entity_values(parse)
    emergency = entities.get("emergency") or detect_emergency(words)
    if emergency:
        urgency = EMERGENCY_URGENCY
        reason = f"生命安全：{EMERGENCY_REASONS.get(emergency, emergency)}"
    else:
        urgency, reason = raise_urgency(words, entry.urgency)
    return Triage(
        intent=intent,
        category=category,
        lead_department=entry.lead,
        urgency=urgency,
        urgency_reason=reason,
        confidence=confidence,
        emergency=emergency,
        entities=entities,
        ranking=ranking,
    )
