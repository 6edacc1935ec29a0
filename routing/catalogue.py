"""The dispatch catalogue (派单目录): departments, categories and SLAs as validated data.

The catalogue lives in data/catalogue.yml so a community can change phone numbers or
SLA targets without touching code. Everything here is immutable once loaded; the loader
rejects a file that would route a work order wrongly, naming the bad entry.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from routing import config_fields

URGENCIES: tuple[str, ...] = ("P1", "P2", "P3", "P4")

# Fixed by the NLU intents (report_<id>); the catalogue must cover exactly these.
TAXONOMY: tuple[str, ...] = (
    "elevator_trapped",
    "elevator_fault",
    "water_leak",
    "water_outage",
    "power_outage",
    "gas_leak",
    "heating",
    "public_facility",
    "sanitation",
    "garbage_sorting",
    "neighbor_noise",
    "construction_noise",
    "neighbor_dispute",
    "illegal_construction",
    "parking",
    "fire_hazard",
    "public_security",
    "elderly_care",
    "medical_service",
    "government_service",
    "pet_nuisance",
    "greening_pest",
    "property_fee",
    "other",
)

# A complaint about a party must never be handled by that party.
FORBIDDEN_LEADS: Mapping[str, frozenset[str]] = {"property_fee": frozenset({"property"})}

DEFAULT_CATALOGUE_PATH = Path(__file__).resolve().parent.parent / "data" / "catalogue.yml"

_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class CatalogueError(ValueError):
    """The catalogue file is malformed; the message names the entry to fix."""


class UnknownCategory(LookupError):
    """A category id that the catalogue does not define."""

    def __init__(self, category_id: str, known: Sequence[str]) -> None:
        self.category_id = category_id
        self.known = tuple(known)
        super().__init__(f"unknown category {category_id!r}; use one of: {', '.join(self.known)}")

    def __str__(self) -> str:  # LookupError would quote the whole message otherwise
        return str(self.args[0])


class UnknownDepartment(LookupError):
    """A department id that the catalogue does not define."""

    def __init__(self, department_id: str, known: Sequence[str]) -> None:
        self.department_id = department_id
        self.known = tuple(known)
        super().__init__(
            f"unknown department {department_id!r}; use one of: {', '.join(self.known)}"
        )

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Department:
    id: str
    name: str
    phone: str
    emergency_phone: str | None = None


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    short_name: str
    lead: str
    assisting: tuple[str, ...]
    urgency: str
    in_home: bool
    # Who may own the order instead when the lead returns it (职能不符), best first.
    alternates: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sla:
    urgency: str
    label: str
    first_response: timedelta
    resolve: timedelta
    dispatch: timedelta | None = None
    on_site: timedelta | None = None


@dataclass(frozen=True)
class Catalogue:
    departments: tuple[Department, ...]
    categories: tuple[Category, ...]
    slas: tuple[Sla, ...]

    def category(self, category_id: str) -> Category:
        """Return the category with this id or raise UnknownCategory."""
        for category in self.categories:
            if category.id == category_id:
                return category
        raise UnknownCategory(category_id, self.category_ids)

    def department(self, department_id: str) -> Department:
        """Return the department with this id or raise UnknownDepartment."""
        for department in self.departments:
            if department.id == department_id:
                return department
        raise UnknownDepartment(department_id, [d.id for d in self.departments])

    def sla(self, urgency: str) -> Sla:
        """Return the SLA targets for an urgency level P1..P4."""
        for sla in self.slas:
            if sla.urgency == urgency:
                return sla
        raise ValueError(f"unknown urgency {urgency!r}; use one of: {', '.join(URGENCIES)}")

    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.categories)

    def has_category(self, category_id: str) -> bool:
        """Tell whether the catalogue defines this category id."""
        return any(c.id == category_id for c in self.categories)


def parse_duration(text: str | int) -> timedelta:
    """Parse '30m', '4h' or '3d' into a timedelta."""
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(f"bad duration {text!r}; write a number and m, h or d, e.g. 30m")
    amount, unit = match.groups()
    return timedelta(**{_DURATION_UNITS[unit]: int(amount)})


def load_catalogue(path: str | Path = DEFAULT_CATALOGUE_PATH) -> Catalogue:
    """Read and validate a catalogue YAML file."""
    import yaml  # local: keeps the pure parts importable without YAML installed

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CatalogueError(f"{path}: file not found; set LINLI_CATALOGUE to it") from exc
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return parse_catalogue(raw)
    except CatalogueError as exc:
        raise CatalogueError(f"{path}: {exc}") from exc


@functools.lru_cache(maxsize=1)
def default_catalogue() -> Catalogue:
    """Load data/catalogue.yml once and reuse it."""
    return load_catalogue(DEFAULT_CATALOGUE_PATH)


def parse_catalogue(raw: Any) -> Catalogue:
    """Build a validated Catalogue from already-parsed YAML data."""
    if not isinstance(raw, Mapping):
        raise CatalogueError("top level must be a mapping with sla, departments, categories")
    slas = _parse_slas(_section(raw, "sla"))
    departments = _parse_departments(_section(raw, "departments"))
    department_ids = {d.id for d in departments}
    categories = _parse_categories(_section(raw, "categories"), department_ids)
    return Catalogue(departments=departments, categories=categories, slas=slas)


def _section(raw: Mapping[str, Any], key: str) -> list[Any]:
    return config_fields.section(raw, key, CatalogueError)


def _where(section: str, index: int, entry: Any) -> str:
    ident = (entry.get("id") or entry.get("urgency")) if isinstance(entry, Mapping) else None
    return f"{section}[{index}]" + (f" ({ident})" if ident else "")


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    return config_fields.text(entry, key, where, CatalogueError)


def _optional_text(entry: Mapping[str, Any], key: str, where: str) -> str | None:
    return None if entry.get(key) is None else _text(entry, key, where)


def _duration(entry: Mapping[str, Any], key: str, where: str) -> timedelta:
    if entry.get(key) is None:
        raise CatalogueError(f"{where}: {key!r} is required, e.g. 30m")
    try:
        return parse_duration(entry[key])
    except ValueError as exc:
        raise CatalogueError(f"{where}: {key}: {exc}") from exc


def _optional_duration(entry: Mapping[str, Any], key: str, where: str) -> timedelta | None:
    return None if entry.get(key) is None else _duration(entry, key, where)


def _parse_slas(entries: list[Any]) -> tuple[Sla, ...]:
    slas: list[Sla] = []
    for index, entry in enumerate(entries):
        where = _where("sla", index, entry)
        if not isinstance(entry, Mapping):
            raise CatalogueError(f"{where}: must be a mapping")
        urgency = _text(entry, "urgency", where)
        if urgency not in URGENCIES:
            raise CatalogueError(f"{where}: bad urgency {urgency!r}; use one of {URGENCIES}")
        if any(s.urgency == urgency for s in slas):
            raise CatalogueError(f"{where}: duplicate urgency {urgency!r}")
        slas.append(
            Sla(
                urgency=urgency,
                label=_optional_text(entry, "label", where) or urgency,
                first_response=_duration(entry, "first_response", where),
                resolve=_duration(entry, "resolve", where),
                dispatch=_optional_duration(entry, "dispatch", where),
                on_site=_optional_duration(entry, "on_site", where),
            )
        )
    missing = [u for u in URGENCIES if not any(s.urgency == u for s in slas)]
    if missing:
        raise CatalogueError(f"sla: no entry for {', '.join(missing)}; add one per urgency")
    slas.sort(key=lambda s: URGENCIES.index(s.urgency))
    return tuple(slas)


def _parse_departments(entries: list[Any]) -> tuple[Department, ...]:
    departments: list[Department] = []
    for index, entry in enumerate(entries):
        where = _where("departments", index, entry)
        if not isinstance(entry, Mapping):
            raise CatalogueError(f"{where}: must be a mapping")
        dept_id = _text(entry, "id", where)
        if any(d.id == dept_id for d in departments):
            raise CatalogueError(f"{where}: duplicate department id {dept_id!r}")
        departments.append(
            Department(
                id=dept_id,
                name=_text(entry, "name", where),
                phone=_text(entry, "phone", where),
                emergency_phone=_optional_text(entry, "emergency_phone", where),
            )
        )
    return tuple(departments)


def _parse_categories(entries: list[Any], department_ids: set[str]) -> tuple[Category, ...]:
    known = ", ".join(sorted(department_ids))
    categories: list[Category] = []
    for index, entry in enumerate(entries):
        where = _where("categories", index, entry)
        if not isinstance(entry, Mapping):
            raise CatalogueError(f"{where}: must be a mapping")
        cat_id = _text(entry, "id", where)
        if any(c.id == cat_id for c in categories):
            raise CatalogueError(f"{where}: duplicate category id {cat_id!r}")
        if cat_id not in TAXONOMY:
            raise CatalogueError(
                f"{where}: {cat_id!r} is not in the taxonomy; the NLU only knows "
                f"{', '.join(TAXONOMY)}"
            )
        lead = _text(entry, "lead", where)
        if lead not in department_ids:
            raise CatalogueError(f"{where}: lead {lead!r} is not a department; use one of {known}")
        if lead in FORBIDDEN_LEADS.get(cat_id, frozenset()):
            raise CatalogueError(
                f"{where}: {lead!r} must not lead {cat_id!r}, since the complaint is about "
                f"it; let residents_committee lead instead"
            )
        assisting_raw = entry.get("assisting") or []
        if not isinstance(assisting_raw, list):
            raise CatalogueError(f"{where}: 'assisting' must be a list of department ids")
        assisting = tuple(str(a) for a in assisting_raw)
        for dept in assisting:
            if dept not in department_ids:
                raise CatalogueError(
                    f"{where}: assisting {dept!r} is not a department; use one of {known}"
                )
        if lead in assisting or len(set(assisting)) != len(assisting):
            raise CatalogueError(f"{where}: 'assisting' repeats a department or the lead")
        urgency = _text(entry, "urgency", where)
        if urgency not in URGENCIES:
            raise CatalogueError(f"{where}: bad urgency {urgency!r}; use one of {URGENCIES}")
        in_home = entry.get("in_home")
        if not isinstance(in_home, bool):
            raise CatalogueError(f"{where}: 'in_home' must be true or false")
        alternates = _alternates(entry, where, cat_id, lead, department_ids, known)
        name = _text(entry, "name", where)
        categories.append(
            Category(
                id=cat_id,
                name=name,
                short_name=_optional_text(entry, "short_name", where) or name,
                lead=lead,
                assisting=assisting,
                urgency=urgency,
                in_home=in_home,
                alternates=alternates,
            )
        )
    missing = [c for c in TAXONOMY if not any(cat.id == c for cat in categories)]
    if missing:
        raise CatalogueError(f"categories: missing from the taxonomy: {', '.join(missing)}")
    return tuple(categories)


def _alternates(
    entry: Mapping[str, Any],
    where: str,
    cat_id: str,
    lead: str,
    department_ids: set[str],
    known: str,
) -> tuple[str, ...]:
    raw = entry.get("alternates") or []
    if not isinstance(raw, list):
        raise CatalogueError(f"{where}: 'alternates' must be a list of department ids")
    alternates = tuple(str(a) for a in raw)
    for dept in alternates:
        if dept not in department_ids:
            raise CatalogueError(
                f"{where}: alternate {dept!r} is not a department; use one of {known}"
            )
        if dept in FORBIDDEN_LEADS.get(cat_id, frozenset()):
            raise CatalogueError(
                f"{where}: alternate {dept!r} must not own {cat_id!r}, since the complaint "
                f"is about it; remove it from 'alternates'"
            )
    if lead in alternates or len(set(alternates)) != len(alternates):
        raise CatalogueError(f"{where}: 'alternates' repeats a department or the lead")
    return alternates
