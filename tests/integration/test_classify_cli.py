"""`python -m bot classify`: JSON lines in, one triage per line out, from the trained model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bot.training import ROOT, ensure_model

pytestmark = pytest.mark.integration


def test_classify_reads_json_lines_and_writes_one_line_each() -> None:
    ensure_model()
    lines = [
        {"text": "喂 五号楼二单元的电梯又坏了 我腿脚不好下不了楼"},
        {"text": "家里一股煤气味"},
        {"text": "物业费凭什么又涨了 物业啥也不干"},
        "not json",
        {"no_text": 1},
        {"text": ""},
        {"text": "楼上装修天天电钻响"},
    ]
    stdin = "\n".join(json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else x
                      for x in lines) + "\n"
    result = subprocess.run(
        [sys.executable, "-m", "bot", "classify"], input=stdin, cwd=ROOT, capture_output=True,
        text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(out) == len(lines)
    elevator, gas, fee, bad_json, no_text, empty, noise = out
    assert elevator["category"] == "elevator_fault"
    assert elevator["lead_department"] == "property"
    assert elevator["entities"]["building"] == "5" and elevator["entities"]["unit"] == "2"
    assert gas["category"] == "gas_leak" and gas["urgency"] == "P1"
    assert gas["lead_department"] == "utilities_gas"
    assert fee["category"] == "property_fee" and fee["lead_department"] == "residents_committee"
    assert "error" in bad_json and "error" in no_text
    assert empty["urgency"] in ("P1", "P2", "P3", "P4")
    assert noise["category"] == "neighbor_noise"
    for item in (elevator, gas, fee, noise):
        assert 0.0 <= item["confidence"] <= 1.0
        assert item["urgency"] in ("P1", "P2", "P3", "P4")
