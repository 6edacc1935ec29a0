"""Integration fixtures: the trained Rasa model loaded once, in-process."""
from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def nlu_agent() -> Any:
    from bot.nluservice import load_agent

    return load_agent()
