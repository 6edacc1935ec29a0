"""The cached validator accepts and rejects exactly what Rasa's own check does."""
from __future__ import annotations

import pytest
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction

from bot.rasa_server import install_cached_action_validator

pytestmark = pytest.mark.integration

GOOD = {"events": [{"event": "slot", "name": "report_building", "value": "5"}],
        "responses": [{"response": "utter_ask_report_unit"}]}
BAD = [{"events": [{"event": "no_such_event"}]}, {"events": "not a list"},
       {"responses": [{"text": 5}]}]


def test_cached_validator_agrees_with_rasa(monkeypatch) -> None:
    original = RemoteAction._validate_action_result
    action = RemoteAction("action_x", None)
    verdicts = []
    for payload in [GOOD, *BAD]:
        try:
            verdicts.append(original(action, payload))
        except ValidationError:
            verdicts.append(False)
    monkeypatch.setattr(RemoteAction, "_validate_action_result", original)
    install_cached_action_validator()
    cached = []
    for payload in [GOOD, *BAD]:
        try:
            cached.append(RemoteAction._validate_action_result(action, payload))
        except ValidationError as error:
            assert "Action server response" in error.message
            cached.append(False)
    assert cached == verdicts
    assert verdicts[0] is True and False in verdicts
