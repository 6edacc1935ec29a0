"""Evaluate the trained model on a held-out NLU file, per category and per intent."""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bot.triage import REPORT_INTENTS


def load_examples(path: str | Path) -> list[tuple[str, str]]:
    """Read (text, intent) pairs from a Rasa YAML NLU file without entity markup."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    pairs: list[tuple[str, str]] = []
    for block in raw.get("nlu") or []:
        if "intent" not in block:
            continue
        for line in str(block.get("examples", "")).splitlines():
            text = line.strip()
            if text.startswith("- "):
                pairs.append((text[2:].strip(), block["intent"]))
    return pairs


def predicted_label(parse: dict[str, Any]) -> str:
    """Map a parse back to the training label space: report_<category> or the intent."""
    intent = (parse.get("intent") or {}).get("name") or "nlu_fallback"
    if intent in REPORT_INTENTS:
        return "report_" + ((parse.get("category") or {}).get("name") or "other")
    return intent


def scores(truth: list[str], predicted: list[str]) -> dict[str, Any]:
    """Return accuracy, macro-F1 and per-label precision, recall, F1 and support."""
    labels = sorted(set(truth))
    per_label: dict[str, dict[str, float]] = {}
    for label in labels:
        tp = sum(1 for t, p in zip(truth, predicted) if t == label and p == label)
        fp = sum(1 for t, p in zip(truth, predicted) if t != label and p == label)
        fn = sum(1 for t, p in zip(truth, predicted) if t == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": round(precision, 4), "recall": round(recall, 4),
                            "f1": round(f1, 4), "support": tp + fn}
    accuracy = sum(1 for t, p in zip(truth, predicted) if t == p) / max(1, len(truth))
    macro = sum(v["f1"] for v in per_label.values()) / max(1, len(per_label))
    categories = [v["f1"] for k, v in per_label.items() if k.startswith("report_")]
    return {
        "examples": len(truth),
        "accuracy": round(accuracy, 4),
        "macro_f1": round(macro, 4),
        "category_macro_f1": round(sum(categories) / max(1, len(categories)), 4),
        "per_label": per_label,
    }


def evaluate(agent: Any, examples: list[tuple[str, str]]) -> dict[str, Any]:
    """Parse every example with the agent and score the predictions."""
    import asyncio

    async def parse_all() -> list[dict[str, Any]]:
        return [await agent.parse_message(text) for text, _ in examples]

    started = time.perf_counter()
    parses = asyncio.run(parse_all())
    seconds = time.perf_counter() - started
    truth = [label for _, label in examples]
    predicted = [predicted_label(parse) for parse in parses]
    report = scores(truth, predicted)
    errors = Counter((t, p) for t, p in zip(truth, predicted) if t != p)
    report["top_confusions"] = [
        {"true": t, "predicted": p, "count": n} for (t, p), n in errors.most_common(15)
    ]
    report["mistakes"] = [
        {"text": text, "true": t, "predicted": p}
        for (text, t), p in zip(examples, predicted) if t != p
    ]
    report["parse_ms_mean"] = round(1000 * seconds / max(1, len(examples)), 2)
    return report


def evaluate_file(path: str | Path, *, out: str | Path | None = None,
                  agent: Any = None) -> dict[str, Any]:
    """Evaluate the current model on a file and write the full report as JSON."""
    from bot.nluservice import load_agent

    report = evaluate(agent or load_agent(), load_examples(path))
    report["summary"] = {k: report[k] for k in
                         ("examples", "accuracy", "macro_f1", "category_macro_f1", "parse_ms_mean")}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return report
