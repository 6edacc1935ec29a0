"""Rasa's own conversation tests, run against the trained model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.training import ROOT, ensure_model

pytestmark = pytest.mark.integration


def test_every_conversation_flow_is_predicted_exactly(tmp_path: Path) -> None:
    model, _ = ensure_model()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "rasa", "test", "core", "--model", str(model),
         "--stories", "tests/conversations", "--fail-on-prediction-errors",
         "--out", str(tmp_path / "results")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    failed = tmp_path / "results" / "failed_test_stories.yml"
    assert not failed.exists() or "story:" not in failed.read_text(encoding="utf-8")
    # The run really evaluated our stories, not an empty set.
    assert "Correct:" in result.stdout + result.stderr
