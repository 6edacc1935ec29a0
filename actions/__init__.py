"""Rasa custom actions; rasa_sdk imports every module listed here."""
from actions import emergency, followup, handoff, report  # noqa: F401
