"""The dispatch catalogue: the shipped file matches the taxonomy; bad files are refused."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
import yaml

from routing.catalogue import (
    DEFAULT_CATALOGUE_PATH,
    TAXONOMY,
    Catalogue,
    CatalogueError,
    UnknownCategory,
    UnknownDepartment,
    parse_catalogue,
    parse_duration,
)

pytestmark = pytest.mark.unit

# The brief's taxonomy table: category -> (lead, assisting, urgency).
EXPECTED_ROUTING: dict[str, tuple[str, tuple[str, ...], str]] = {
    "elevator_trapped": ("elevator_maintenance", ("property",), "P1"),
    "elevator_fault": ("property", ("elevator_maintenance",), "P2"),
    "water_leak": ("property", (), "P2"),
    "water_outage": ("utilities_water", ("property",), "P2"),
    "power_outage": ("utilities_power", ("property",), "P2"),
    "gas_leak": ("utilities_gas", ("fire_brigade", "property"), "P1"),
    "heating": ("utilities_heating", ("property",), "P2"),
    "public_facility": ("property", (), "P3"),
    "sanitation": ("property", (), "P3"),
    "garbage_sorting": ("residents_committee", ("property",), "P4"),
    "neighbor_noise": ("residents_committee", ("grid",), "P3"),
    "construction_noise": ("urban_management", (), "P3"),
    "neighbor_dispute": ("residents_committee", ("grid",), "P3"),
    "illegal_construction": ("urban_management", ("grid",), "P3"),
    "parking": ("property", ("police",), "P3"),
    "fire_hazard": ("property", ("fire_brigade",), "P2"),
    "public_security": ("police", ("property",), "P2"),
    "elderly_care": ("civil_affairs", ("residents_committee",), "P2"),
    "medical_service": ("health_center", (), "P3"),
    "government_service": ("street_office", (), "P4"),
    "pet_nuisance": ("residents_committee", ("police",), "P3"),
    "greening_pest": ("property", (), "P4"),
    "property_fee": ("residents_committee", ("housing_bureau",), "P3"),
    "other": ("residents_committee", (), "P4"),
}


@pytest.fixture(scope="module")
def raw_shipped() -> dict[str, Any]:
    # Reads the committed data file once; it is test input, not external I/O.
    return yaml.safe_load(DEFAULT_CATALOGUE_PATH.read_text(encoding="utf-8"))


@pytest.fixture
def raw(raw_shipped: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(raw_shipped)


@pytest.fixture(scope="module")
def catalogue(raw_shipped: dict[str, Any]) -> Catalogue:
    return parse_catalogue(raw_shipped)


def _category(raw: dict[str, Any], category_id: str) -> dict[str, Any]:
    return next(c for c in raw["categories"] if c["id"] == category_id)


def test_shipped_catalogue_routes_every_category_as_the_taxonomy_says(
    catalogue: Catalogue,
) -> None:
    assert catalogue.category_ids == TAXONOMY
    actual = {c.id: (c.lead, c.assisting, c.urgency) for c in catalogue.categories}
    assert actual == EXPECTED_ROUTING


def test_shipped_catalogue_has_the_fifteen_departments(catalogue: Catalogue) -> None:
    assert {d.id: d.name for d in catalogue.departments} == {
        "property": "物业服务中心",
        "elevator_maintenance": "电梯维保单位",
        "residents_committee": "社区居委会",
        "grid": "网格站",
        "street_office": "街道办事处",
        "civil_affairs": "民政/养老服务站",
        "health_center": "社区卫生服务中心",
        "police": "社区警务室",
        "urban_management": "城管执法",
        "utilities_water": "供水公司",
        "utilities_power": "供电公司",
        "utilities_gas": "燃气公司",
        "utilities_heating": "供热公司",
        "fire_brigade": "消防救援",
        "housing_bureau": "住建部门",
    }
    assert catalogue.department("fire_brigade").emergency_phone == "119"


def test_in_home_categories_need_a_time_window(catalogue: Catalogue) -> None:
    in_home = {c.id for c in catalogue.categories if c.in_home}
    assert in_home == {
        "water_leak",
        "heating",
        "power_outage",
        "gas_leak",
        "medical_service",
        "elderly_care",
    }


def test_sla_targets(catalogue: Catalogue) -> None:
    p1 = catalogue.sla("P1")
    assert (p1.dispatch, p1.first_response, p1.on_site, p1.resolve) == (
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=4),
    )
    assert (catalogue.sla("P2").first_response, catalogue.sla("P2").resolve) == (
        timedelta(minutes=30),
        timedelta(hours=24),
    )
    assert (catalogue.sla("P3").first_response, catalogue.sla("P3").resolve) == (
        timedelta(hours=2),
        timedelta(days=3),
    )
    assert (catalogue.sla("P4").first_response, catalogue.sla("P4").resolve) == (
        timedelta(hours=24),
        timedelta(days=7),
    )
    assert catalogue.sla("P2").dispatch is None
    with pytest.raises(ValueError, match="P1, P2, P3, P4"):
        catalogue.sla("P9")


def test_catalogue_is_immutable(catalogue: Catalogue) -> None:
    with pytest.raises(AttributeError):
        catalogue.category("other").lead = "property"  # type: ignore[misc]


def test_unknown_category_lists_the_known_ids(catalogue: Catalogue) -> None:
    with pytest.raises(UnknownCategory) as info:
        catalogue.category("broken_window")
    message = str(info.value)
    assert "'broken_window'" in message
    assert "water_leak" in message and "other" in message
    assert info.value.known == TAXONOMY


def test_unknown_department_lists_the_known_ids(catalogue: Catalogue) -> None:
    with pytest.raises(UnknownDepartment, match="'plumber'.*property"):
        catalogue.department("plumber")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1m", timedelta(minutes=1)), ("4h", timedelta(hours=4)), (" 3d ", timedelta(days=3))],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "5 weeks", "h4", "-1h"])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="e.g. 30m"):
        parse_duration(text)


def test_unknown_lead_department_is_named(raw: dict[str, Any]) -> None:
    _category(raw, "heating")["lead"] = "boiler_room"
    with pytest.raises(CatalogueError, match=r"categories\[6\] \(heating\): lead 'boiler_room'"):
        parse_catalogue(raw)


def test_unknown_assisting_department_is_named(raw: dict[str, Any]) -> None:
    _category(raw, "parking")["assisting"] = ["traffic_police"]
    with pytest.raises(CatalogueError, match=r"\(parking\): assisting 'traffic_police'"):
        parse_catalogue(raw)


def test_duplicate_category_id_is_refused(raw: dict[str, Any]) -> None:
    raw["categories"].append(copy.deepcopy(_category(raw, "other")))
    with pytest.raises(CatalogueError, match="duplicate category id 'other'"):
        parse_catalogue(raw)


def test_duplicate_department_id_is_refused(raw: dict[str, Any]) -> None:
    raw["departments"].append({"id": "grid", "name": "网格站二", "phone": "x"})
    with pytest.raises(CatalogueError, match="duplicate department id 'grid'"):
        parse_catalogue(raw)


@pytest.mark.parametrize("urgency", ["P5", "p1", "high", None])
def test_bad_category_urgency_is_refused(raw: dict[str, Any], urgency: Any) -> None:
    _category(raw, "sanitation")["urgency"] = urgency
    with pytest.raises(CatalogueError, match=r"\(sanitation\)"):
        parse_catalogue(raw)


def test_property_fee_must_not_be_led_by_property(raw: dict[str, Any]) -> None:
    entry = _category(raw, "property_fee")
    entry["lead"], entry["assisting"] = "property", ["housing_bureau"]
    with pytest.raises(CatalogueError, match="'property' must not lead 'property_fee'"):
        parse_catalogue(raw)


def test_category_missing_from_the_taxonomy_is_named(raw: dict[str, Any]) -> None:
    raw["categories"] = [c for c in raw["categories"] if c["id"] != "gas_leak"]
    with pytest.raises(CatalogueError, match="missing from the taxonomy: gas_leak"):
        parse_catalogue(raw)


def test_category_outside_the_taxonomy_is_refused(raw: dict[str, Any]) -> None:
    raw["categories"].append({**_category(raw, "other"), "id": "ufo_sighting"})
    with pytest.raises(CatalogueError, match="'ufo_sighting' is not in the taxonomy"):
        parse_catalogue(raw)


def test_lead_listed_as_assisting_is_refused(raw: dict[str, Any]) -> None:
    _category(raw, "water_leak")["assisting"] = ["property"]
    with pytest.raises(CatalogueError, match=r"\(water_leak\): 'assisting' repeats"):
        parse_catalogue(raw)


def test_in_home_must_be_a_boolean(raw: dict[str, Any]) -> None:
    _category(raw, "heating")["in_home"] = "yes"
    with pytest.raises(CatalogueError, match=r"\(heating\): 'in_home' must be true or false"):
        parse_catalogue(raw)


def test_missing_sla_level_is_named(raw: dict[str, Any]) -> None:
    raw["sla"] = [s for s in raw["sla"] if s["urgency"] != "P3"]
    with pytest.raises(CatalogueError, match="no entry for P3"):
        parse_catalogue(raw)


def test_bad_sla_duration_is_named(raw: dict[str, Any]) -> None:
    raw["sla"][0]["resolve"] = "soon"
    with pytest.raises(CatalogueError, match=r"sla\[0\] \(P1\): resolve: bad duration 'soon'"):
        parse_catalogue(raw)


def test_missing_section_is_named(raw: dict[str, Any]) -> None:
    del raw["departments"]
    with pytest.raises(CatalogueError, match="section 'departments'"):
        parse_catalogue(raw)


def test_not_a_mapping_is_refused() -> None:
    with pytest.raises(CatalogueError, match="top level"):
        parse_catalogue(["not", "a", "catalogue"])
