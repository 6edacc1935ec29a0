"""The catalogue's optional `alternates` list: parsed, validated, and sane in the shipped file."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from routing.catalogue import DEFAULT_CATALOGUE_PATH, CatalogueError, parse_catalogue

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def raw_shipped() -> dict[str, Any]:
    # Reads the committed data file once; it is test input, not external I/O.
    return yaml.safe_load(DEFAULT_CATALOGUE_PATH.read_text(encoding="utf-8"))


@pytest.fixture
def raw(raw_shipped: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(raw_shipped)


def _category(raw: dict[str, Any], category_id: str) -> dict[str, Any]:
    return next(c for c in raw["categories"] if c["id"] == category_id)


def test_shipped_alternates(raw_shipped: dict[str, Any]) -> None:
    catalogue = parse_catalogue(raw_shipped)
    alternates = {c.id: c.alternates for c in catalogue.categories if c.alternates}
    assert alternates["water_leak"] == ("utilities_water",)
    assert alternates["property_fee"] == ("street_office",)
    assert catalogue.category("gas_leak").alternates == ()
    for category in catalogue.categories:
        assert category.lead not in category.alternates, category.id


def test_alternates_are_optional(raw: dict[str, Any]) -> None:
    for entry in raw["categories"]:
        entry.pop("alternates", None)
    catalogue = parse_catalogue(raw)
    assert all(c.alternates == () for c in catalogue.categories)


@pytest.mark.parametrize(
    ("category", "alternates", "message"),
    [
        ("heating", ["boiler_room"], r"\(heating\): alternate 'boiler_room' is not a department"),
        ("heating", "property", r"\(heating\): 'alternates' must be a list"),
        ("heating", ["utilities_heating"], r"\(heating\): 'alternates' repeats"),
        ("heating", ["police", "police"], r"\(heating\): 'alternates' repeats"),
        ("property_fee", ["property"], r"alternate 'property' must not own 'property_fee'"),
    ],
)
def test_bad_alternates_are_refused(
    raw: dict[str, Any], category: str, alternates: Any, message: str
) -> None:
    _category(raw, category)["alternates"] = alternates
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(raw)
