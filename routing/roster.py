"""The roster (值班表): who works in which department, when, on what, and which grid is whose.

Loaded from data/roster.yml and validated against the catalogue and the community's
buildings; the loader names the bad entry (and its line when read from YAML). A Roster
precomputes its lookups so dispatch stays well under a millisecond per order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from routing import config_fields
from routing.catalogue import Catalogue

ROLES: tuple[str, ...] = ("worker", "grid_worker", "head", "director")
GRID_DEPARTMENT = "grid"
DIRECTOR_DEPARTMENT = "residents_committee"
DEFAULT_ROSTER_PATH = Path(__file__).resolve().parent.parent / "data" / "roster.yml"

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_STAFF_KEYS = frozenset(
    {"id", "name", "department", "role", "skills", "shifts", "capacity", "phone"}
)
_GRID_KEYS = frozenset({"id", "name", "buildings", "workers"})
_SHIFT_KEYS = frozenset({"days", "hours"})
_LINE = "__line__"  # added by the line-aware YAML loader, never written by people


class RosterError(ValueError):
    """The roster file is malformed; the message names the entry to fix."""


class NaiveDatetimeError(ValueError):
    """A clock value without a time zone; routing compares times in Asia/Shanghai."""

    def __init__(self, what: str = "now") -> None:
        super().__init__(f"{what} must be timezone-aware; pass e.g. datetime.now(UTC)")


class UnknownStaff(LookupError):
    """A staff id that the roster does not define."""

    def __init__(self, staff_id: str) -> None:
        self.staff_id = staff_id
        super().__init__(f"unknown staff {staff_id!r}; add it to data/roster.yml or fix the id")

    def __str__(self) -> str:
        return str(self.args[0])


class BuildingNotInGrid(LookupError):
    """A building that no grid covers."""

    def __init__(self, building: str | None) -> None:
        self.building = building
        super().__init__(
            f"building {building!r} is in no grid; add it to a grid's buildings in "
            f"data/roster.yml or check the building number"
        )

    def __str__(self) -> str:
        return str(self.args[0])


@functools.lru_cache(maxsize=1)
def local_tz() -> ZoneInfo:
    """Return the community's time zone (Asia/Shanghai), loaded on first use."""
    return ZoneInfo("Asia/Shanghai")


def local_time(now: datetime) -> datetime:
    """Convert an aware datetime to Asia/Shanghai; refuse a naive one."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise NaiveDatetimeError()
    return now.astimezone(local_tz())


@dataclass(frozen=True)
class Shift:
    days: tuple[int, ...]  # 0=Mon..6=Sun: the day the shift starts
    start: time
    end: time  # end <= start: the shift runs past midnight (end == start: 24 hours)

    def covers(self, weekday: int, at: time) -> bool:
        """Tell whether a local weekday and wall-clock time fall inside this shift."""
        if self.start < self.end:
            return weekday in self.days and self.start <= at < self.end
        return (weekday in self.days and at >= self.start) or (
            (weekday - 1) % 7 in self.days and at < self.end
        )


@dataclass(frozen=True)
class Staff:
    id: str
    name: str
    department: str
    role: str  # "worker" | "grid_worker" | "head" | "director"
    skills: tuple[str, ...]  # category ids; empty = any category of the department
    shifts: tuple[Shift, ...]
    capacity: int  # open orders this person can hold at once
    phone: str

    def on_shift(self, now: datetime) -> bool:
        """Tell whether this person is working at `now` (aware; judged in Asia/Shanghai)."""
        local = local_time(now)
        return self.on_shift_local(local.weekday(), local.time())

    def on_shift_local(self, weekday: int, at: time) -> bool:
        """Tell whether this person works at a local weekday and time (no conversion)."""
        return any(shift.covers(weekday, at) for shift in self.shifts)

    def has_skill(self, category: str) -> bool:
        """Tell whether this person handles the category (no skills listed = all)."""
        return not self.skills or category in self.skills


@dataclass(frozen=True)
class Grid:
    id: str
    name: str
    buildings: tuple[str, ...]
    workers: tuple[str, ...]  # staff ids of the grid's workers


@dataclass(frozen=True)
class Roster:
    staff: tuple[Staff, ...]
    grids: tuple[Grid, ...]
    # Indexes built once: dispatch looks people up many times per order.
    _by_id: Mapping[str, Staff] = field(init=False, repr=False, compare=False)
    _by_department: Mapping[str, tuple[Staff, ...]] = field(
        init=False, repr=False, compare=False
    )
    _grid_by_building: Mapping[str, Grid] = field(init=False, repr=False, compare=False)
    _grid_staff: Mapping[str, tuple[Staff, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {s.id: s for s in self.staff}
        by_department: dict[str, list[Staff]] = {}
        for person in self.staff:
            by_department.setdefault(person.department, []).append(person)
        grid_by_building = {b: g for g in reversed(self.grids) for b in g.buildings}
        grid_staff = {
            g.id: tuple(by_id[w] for w in g.workers if w in by_id) for g in self.grids
        }
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(
            self, "_by_department", {d: tuple(p) for d, p in by_department.items()}
        )
        object.__setattr__(self, "_grid_by_building", grid_by_building)
        object.__setattr__(self, "_grid_staff", grid_staff)

    def member(self, staff_id: str) -> Staff:
        """Return the staff member with this id or raise UnknownStaff."""
        try:
            return self._by_id[staff_id]
        except KeyError:
            raise UnknownStaff(staff_id) from None

    def members(self, department: str) -> tuple[Staff, ...]:
        """Return everyone in a department, in roster order."""
        return self._by_department.get(department, ())

    def head(self, department: str) -> Staff | None:
        """Return the department's head, or None if it has none."""
        return next((s for s in self.members(department) if s.role == "head"), None)

    def director(self) -> Staff | None:
        """Return the community director (residents_committee), or None."""
        return next((s for s in self.staff if s.role == "director"), None)

    def grid_for_building(self, building: str) -> Grid:
        """Return the grid covering a building or raise BuildingNotInGrid."""
        grid = self._grid_by_building.get(str(building)) if building is not None else None
        if grid is None:
            raise BuildingNotInGrid(building)
        return grid

    def grid_workers(self, grid_id: str) -> tuple[Staff, ...]:
        """Return the staff of one grid, in the grid's order."""
        return self._grid_staff.get(grid_id, ())


def load_roster(
    path: str | Path = DEFAULT_ROSTER_PATH, *, catalogue: Catalogue, buildings: Iterable[str]
) -> Roster:
    """Read and validate a roster YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise RosterError(f"{path}: file not found; point the roster path at it") from exc
    return roster_from_yaml(text, catalogue=catalogue, buildings=buildings, source=str(path))


def roster_from_yaml(
    text: str, *, catalogue: Catalogue, buildings: Iterable[str], source: str = "roster"
) -> Roster:
    """Validate roster YAML text; errors carry the file name and line of the bad entry."""
    import yaml  # local: keeps the pure parts importable without YAML installed

    try:
        raw = yaml.load(text, Loader=_line_loader())  # a SafeLoader that notes lines
    except yaml.YAMLError as exc:
        raise RosterError(f"{source}: not valid YAML: {exc}") from exc
    try:
        return parse_roster(raw, catalogue=catalogue, buildings=buildings)
    except RosterError as exc:
        raise RosterError(f"{source}: {exc}") from exc


@functools.lru_cache(maxsize=1)
def _line_loader() -> type:
    import yaml

    class LineLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            mapping = super().construct_mapping(node, deep=deep)
            mapping[_LINE] = node.start_mark.line + 1
            return mapping

    return LineLoader


def parse_roster(raw: Any, *, catalogue: Catalogue, buildings: Iterable[str]) -> Roster:
    """Build a validated Roster from parsed YAML data (a dict with staff and grids)."""
    if not isinstance(raw, Mapping):
        raise RosterError("top level must be a mapping with 'staff' and 'grids' lists")
    departments = {d.id for d in catalogue.departments}
    categories = set(catalogue.category_ids)
    staff = _parse_staff(_section(raw, "staff"), departments, categories)
    grids = _parse_grids(_section(raw, "grids"), staff, {str(b) for b in buildings})
    return Roster(staff=staff, grids=grids)


def _section(raw: Mapping[str, Any], key: str) -> list[Any]:
    return config_fields.section(raw, key, RosterError)


def _where(section: str, index: int, entry: Any) -> str:
    line = entry.get(_LINE) if isinstance(entry, Mapping) else None
    ident = entry.get("id") if isinstance(entry, Mapping) else None
    name = f"{section}[{index}]" + (f" ({ident})" if ident else "")
    return f"line {line}, {name}" if line else name


def _check_keys(entry: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in entry if k != _LINE and k not in allowed)
    if unknown:
        raise RosterError(f"{where}: unknown key {unknown[0]!r}; use {', '.join(sorted(allowed))}")


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    return config_fields.text(entry, key, where, RosterError)


def _parse_staff(
    entries: list[Any], departments: set[str], categories: set[str]
) -> tuple[Staff, ...]:
    staff: list[Staff] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = _where("staff", index, entry)
        if not isinstance(entry, Mapping):
            raise RosterError(f"{where}: must be a mapping")
        _check_keys(entry, _STAFF_KEYS, where)
        staff_id = _text(entry, "id", where)
        if staff_id in seen:
            raise RosterError(f"{where}: duplicate staff id {staff_id!r}; give each person one id")
        seen.add(staff_id)
        department = _text(entry, "department", where)
        if department not in departments:
            raise RosterError(
                f"{where}: unknown department {department!r}; use one of "
                f"{', '.join(sorted(departments))}"
            )
        role = _role(entry, where, department)
        skills_raw = entry.get("skills") or []
        if not isinstance(skills_raw, list):
            raise RosterError(f"{where}: 'skills' must be a list of category ids (empty = any)")
        skills = tuple(str(s) for s in skills_raw)
        for skill in skills:
            if skill not in categories:
                raise RosterError(f"{where}: skill {skill!r} is not a category id of the catalogue")
        capacity = entry.get("capacity")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise RosterError(f"{where}: 'capacity' must be a whole number >= 1, got {capacity!r}")
        staff.append(
            Staff(
                id=staff_id,
                name=_text(entry, "name", where),
                department=department,
                role=role,
                skills=skills,
                shifts=_parse_shifts(entry.get("shifts"), where),
                capacity=capacity,
                phone=_text(entry, "phone", where),
            )
        )
    heads = [s.department for s in staff if s.role == "head"]
    twice = sorted({d for d in heads if heads.count(d) > 1})
    if twice:
        raise RosterError(f"staff: department {twice[0]!r} has two heads; keep one 'head'")
    if sum(s.role == "director" for s in staff) > 1:
        raise RosterError("staff: more than one 'director'; the community has one director")
    return tuple(staff)


def _role(entry: Mapping[str, Any], where: str, department: str) -> str:
    role = _text(entry, "role", where)
    if role not in ROLES:
        raise RosterError(f"{where}: bad role {role!r}; use one of {', '.join(ROLES)}")
    if (role == "grid_worker") != (department == GRID_DEPARTMENT):
        raise RosterError(
            f"{where}: role 'grid_worker' goes with department {GRID_DEPARTMENT!r} and "
            f"only with it; got role {role!r} in {department!r}"
        )
    if role == "director" and department != DIRECTOR_DEPARTMENT:
        raise RosterError(f"{where}: the director belongs to {DIRECTOR_DEPARTMENT!r}")
    return role


def _parse_shifts(raw: Any, where: str) -> tuple[Shift, ...]:
    if not isinstance(raw, list) or not raw:
        raise RosterError(f"{where}: 'shifts' must list at least one shift")
    shifts = []
    for number, entry in enumerate(raw):
        at = f"{where} shifts[{number}]"
        if not isinstance(entry, Mapping):
            raise RosterError(f"{at}: bad shift; write {{days: mon-fri, hours: '08:30-17:30'}}")
        _check_keys(entry, _SHIFT_KEYS, at)
        start, end = _parse_hours(entry.get("hours"), at)
        shifts.append(Shift(days=_parse_days(entry.get("days"), at), start=start, end=end))
    return tuple(shifts)


def _parse_days(raw: Any, where: str) -> tuple[int, ...]:
    hint = "write e.g. mon-fri, 'sat,sun', daily, or a list of 0..6 (0 = Monday)"
    if isinstance(raw, list) and raw and all(type(d) is int and 0 <= d <= 6 for d in raw):
        return tuple(sorted(set(raw)))
    if not isinstance(raw, str) or not raw.strip():
        raise RosterError(f"{where}: bad shift days {raw!r}; {hint}")
    text = raw.strip().lower()
    if text == "daily":
        return tuple(range(7))
    days: set[int] = set()
    for part in text.split(","):
        ends = [p.strip() for p in part.split("-")]
        if len(ends) > 2 or any(e not in _DAY_NAMES for e in ends):
            raise RosterError(f"{where}: bad shift days {raw!r}; {hint}")
        first, last = _DAY_NAMES.index(ends[0]), _DAY_NAMES.index(ends[-1])
        days.update((first + k) % 7 for k in range((last - first) % 7 + 1))
    return tuple(sorted(days))


def _parse_hours(raw: Any, where: str) -> tuple[time, time]:
    match = _HOURS.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise RosterError(f"{where}: bad shift hours {raw!r}; write e.g. '08:30-17:30'")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    # "24:00" may close a shift (midnight); nothing may start at 24:00.
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise RosterError(f"{where}: bad shift hours {raw!r}; times run 00:00..24:00")
    start, end = time(h1, m1), time(h2 % 24, m2)
    if start == end and (h1, m1) != (0, 0):
        raise RosterError(
            f"{where}: shift hours {raw!r} start and end together; for round the clock "
            f"write '00:00-24:00'"
        )
    return start, end


def _parse_grids(
    entries: list[Any], staff: tuple[Staff, ...], buildings: set[str]
) -> tuple[Grid, ...]:
    by_id = {s.id: s for s in staff}
    grids: list[Grid] = []
    owner: dict[str, str] = {}
    for index, entry in enumerate(entries):
        where = _where("grids", index, entry)
        if not isinstance(entry, Mapping):
            raise RosterError(f"{where}: must be a mapping")
        _check_keys(entry, _GRID_KEYS, where)
        grid_id = _text(entry, "id", where)
        if any(g.id == grid_id for g in grids):
            raise RosterError(f"{where}: duplicate grid id {grid_id!r}")
        numbers = entry.get("buildings")
        workers = entry.get("workers")
        if not isinstance(numbers, list) or not numbers:
            raise RosterError(f"{where}: 'buildings' must list the grid's building numbers")
        if not isinstance(workers, list) or not workers:
            raise RosterError(f"{where}: 'workers' must list the grid's staff ids")
        for number in (str(n) for n in numbers):
            if number not in buildings:
                raise RosterError(f"{where}: building {number!r} is not in the community")
            if number in owner:
                raise RosterError(
                    f"{where}: building {number!r} is already in grid {owner[number]!r}; "
                    f"a building belongs to one grid"
                )
            owner[number] = grid_id
        for worker in (str(w) for w in workers):
            person = by_id.get(worker)
            if person is None:
                raise RosterError(f"{where}: unknown staff {worker!r}; list it under staff first")
            if person.department != GRID_DEPARTMENT:
                raise RosterError(
                    f"{where}: {worker!r} is in {person.department!r}; grid workers belong "
                    f"to department {GRID_DEPARTMENT!r}"
                )
        grids.append(
            Grid(
                id=grid_id,
                name=_text(entry, "name", where),
                buildings=tuple(str(n) for n in numbers),
                workers=tuple(str(w) for w in workers),
            )
        )
    uncovered = sorted(buildings - owner.keys(), key=lambda b: (len(b), b))
    if uncovered:
        raise RosterError(f"grids: building {uncovered[0]!r} is in no grid; add it to one")
    placed = {w for g in grids for w in g.workers}
    for person in staff:
        if person.department == GRID_DEPARTMENT and person.id not in placed:
            raise RosterError(f"grids: grid worker {person.id!r} is in no grid; add it to one")
    return tuple(grids)
