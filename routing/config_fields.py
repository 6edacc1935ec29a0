"""Reading the hand-written YAML of the catalogue and the roster: sections and text fields.

Both files are written by people; each module raises its own error class (CatalogueError,
RosterError) with the entry's position, so the checks take the class to raise.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def section(raw: Mapping[str, Any], key: str, error: type[ValueError]) -> list[Any]:
    """Return the non-empty list under `key`, or raise `error`."""
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise error(f"section {key!r} must be a non-empty list")
    return value


def text(entry: Mapping[str, Any], key: str, where: str, error: type[ValueError]) -> str:
    """Return `entry[key]` as a stripped, non-empty string (numbers allowed), or raise."""
    value = entry.get(key)
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value).strip() == "":
        raise error(f"{where}: {key!r} must be a non-empty string")
    return str(value).strip()
