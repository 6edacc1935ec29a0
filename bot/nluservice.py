"""Load the trained Rasa model in-process and parse text with it, as the Rasa server does."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from bot.training import ensure_model


def load_agent(model: Path | None = None) -> Any:
    """Load the Rasa agent for the current model (training it first if it is missing)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from rasa.core.agent import Agent  # heavy import: only when a model is really needed

    path = model or ensure_model()[0]
    return Agent.load(str(path))


def parse_many(agent: Any, texts: list[str]) -> list[dict[str, Any]]:
    """Parse texts with the agent's NLU pipeline, in order."""

    async def run() -> list[dict[str, Any]]:
        return [await agent.parse_message(text) for text in texts]

    return asyncio.run(run())
