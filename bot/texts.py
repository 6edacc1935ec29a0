"""Resident-facing texts the hub sends itself, read from the Rasa domain's responses."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

DOMAIN_DIR = Path(__file__).resolve().parent.parent / "domain"


@lru_cache(maxsize=1)
def domain_texts(domain_dir: Path = DOMAIN_DIR) -> dict[str, str]:
    """Return the first text of every response in the domain, keyed by response name."""
    texts: dict[str, str] = {}
    for path in sorted(domain_dir.glob("*.yml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for name, variants in (raw.get("responses") or {}).items():
            if variants and "text" in variants[0]:
                texts[name] = variants[0]["text"]
    return texts


def text(name: str, **values: object) -> str:
    """Return a domain response filled with values, e.g. text("utter_handoff", wait="5分钟")."""
    template = domain_texts()[name]
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template
