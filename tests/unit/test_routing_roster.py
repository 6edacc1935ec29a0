"""The roster: the shipped demo community, shift arithmetic, lookups and refused files."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from routing.catalogue import Catalogue
from routing.roster import (
    BuildingNotInGrid,
    NaiveDatetimeError,
    Roster,
    RosterError,
    Shift,
    UnknownStaff,
    parse_roster,
    roster_from_yaml,
)

pytestmark = pytest.mark.unit

BUILDINGS = tuple(str(n) for n in range(1, 17))
# Monday 2026-11-23 00:00 in Asia/Shanghai, expressed in UTC.
MONDAY = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)


def _local(day: int, hh: int, mm: int = 0) -> datetime:
    """Return the UTC instant of weekday `day` (0=Mon) at hh:mm Shanghai time."""
    return MONDAY + timedelta(days=day, hours=hh, minutes=mm)


# --- the shipped demo roster ------------------------------------------------------------


def test_shipped_roster_has_forty_people_in_the_agreed_departments(roster: Roster) -> None:
    counts: dict[str, int] = {}
    for person in roster.staff:
        counts[person.department] = counts.get(person.department, 0) + 1
    assert len(roster.staff) == 40
    assert counts["grid"] == 8
    assert counts["elevator_maintenance"] == 3
    assert 10 <= counts["property"] <= 12
    assert 4 <= counts["residents_committee"] <= 5
    for dept in ("civil_affairs", "health_center", "police", "urban_management"):
        assert counts[dept] == 2, dept
    singles = ("utilities_water", "utilities_power", "utilities_gas", "utilities_heating",
               "fire_brigade", "housing_bureau", "street_office")
    for dept in singles:
        assert counts[dept] == 1, dept
        assert roster.members(dept)[0].role == "head", dept


def test_shipped_grids_cover_sixteen_buildings_four_each(roster: Roster) -> None:
    assert [g.name for g in roster.grids] == ["网格一", "网格二", "网格三", "网格四"]
    for grid in roster.grids:
        assert len(grid.buildings) == 4 and len(grid.workers) == 2
        assert all(roster.member(w).role == "grid_worker" for w in grid.workers)
    for building in BUILDINGS:
        grid = roster.grid_for_building(building)
        assert building in grid.buildings
    assert roster.grid_for_building("7").name == "网格二"


def test_shipped_roster_has_heads_and_the_director(roster: Roster) -> None:
    director = roster.director()
    assert director is not None and director.department == "residents_committee"
    for dept in ("property", "elevator_maintenance", "residents_committee", "street_office"):
        head = roster.head(dept)
        assert head is not None and head.department == dept
    assert roster.head("grid") is None


def test_shipped_phones_are_fictional_138_numbers(roster: Roster) -> None:
    for person in roster.staff:
        assert person.phone.startswith("138") and len(person.phone) == 11, person.id
    assert len({p.phone for p in roster.staff}) == 40


def test_every_leading_department_has_someone(roster: Roster, catalogue: Catalogue) -> None:
    for category in catalogue.categories:
        for dept in (category.lead, *category.assisting, *category.alternates):
            assert roster.members(dept), f"{category.id}: nobody in {dept}"


# Round-the-clock needs: a P1 must always find someone on shift who handles it.
ALWAYS_COVERED = [
    ("elevator_maintenance", "elevator_trapped"),
    ("property", "elevator_trapped"),
    ("property", "gas_leak"),
    ("property", "water_leak"),
    ("utilities_gas", "gas_leak"),
    ("fire_brigade", "gas_leak"),
    ("utilities_power", "power_outage"),
    ("utilities_water", "water_outage"),
]


@pytest.mark.parametrize(("department", "category"), ALWAYS_COVERED)
def test_life_safety_departments_are_covered_every_quarter_hour_of_the_week(
    roster: Roster, department: str, category: str
) -> None:
    for quarter in range(7 * 24 * 4):
        now = MONDAY + timedelta(minutes=15 * quarter)
        on = [
            p.id
            for p in roster.members(department)
            if p.on_shift(now) and p.has_skill(category) and p.role != "director"
        ]
        assert on, f"{department} has nobody for {category} at {now.isoformat()}"


def test_every_grid_has_a_worker_on_each_day_time(roster: Roster) -> None:
    for grid in roster.grids:
        for day in range(7):
            now = _local(day, 10)
            assert any(p.on_shift(now) for p in roster.grid_workers(grid.id)), (grid.id, day)


# --- shifts -----------------------------------------------------------------------------

DAY = Shift(days=(0, 1, 2, 3, 4), start=time(8, 30), end=time(17, 30))
NIGHT = Shift(days=(6,), start=time(22, 0), end=time(6, 0))  # Sunday night into Monday
ALL_DAY = Shift(days=(2,), start=time(0, 0), end=time(0, 0))  # Wednesday, 24 hours


@pytest.mark.parametrize(
    ("shift", "weekday", "at", "expected"),
    [
        (DAY, 0, time(8, 30), True),
        (DAY, 0, time(8, 29), False),
        (DAY, 4, time(17, 29), True),
        (DAY, 4, time(17, 30), False),  # the end is exclusive
        (DAY, 5, time(10, 0), False),
        (NIGHT, 6, time(22, 0), True),
        (NIGHT, 6, time(21, 59), False),
        (NIGHT, 0, time(5, 59), True),  # Monday morning belongs to Sunday's shift
        (NIGHT, 0, time(6, 0), False),
        (NIGHT, 0, time(23, 0), False),  # Monday night is not on the rota
        (NIGHT, 5, time(3, 0), False),
        (ALL_DAY, 2, time(0, 0), True),
        (ALL_DAY, 2, time(23, 59), True),
        (ALL_DAY, 3, time(0, 0), False),
        (ALL_DAY, 1, time(23, 59), False),
    ],
)
def test_shift_covers(shift: Shift, weekday: int, at: time, expected: bool) -> None:
    assert shift.covers(weekday, at) is expected


def test_on_shift_compares_in_shanghai_time(roster: Roster) -> None:
    plumber = roster.member("wy02")  # Mon-Fri 08:30-17:30
    friday_0830 = datetime(2026, 11, 27, 0, 30, tzinfo=UTC)
    assert plumber.on_shift(friday_0830)
    assert not plumber.on_shift(friday_0830 - timedelta(minutes=1))
    assert not plumber.on_shift(friday_0830 + timedelta(hours=9))  # 17:30 local


def test_on_shift_refuses_a_naive_clock(roster: Roster) -> None:
    with pytest.raises(NaiveDatetimeError, match="timezone-aware"):
        roster.member("wy02").on_shift(datetime(2026, 11, 27, 9, 0))


# --- lookups ----------------------------------------------------------------------------


def test_unknown_staff_is_named(roster: Roster) -> None:
    with pytest.raises(UnknownStaff, match="'nobody'.*roster.yml"):
        roster.member("nobody")


@pytest.mark.parametrize("building", ["99", "0", ""])
def test_building_in_no_grid_is_named(roster: Roster, building: str) -> None:
    with pytest.raises(BuildingNotInGrid, match=f"building '{building}' is in no grid"):
        roster.grid_for_building(building)


def test_members_keep_roster_order_and_unknown_department_is_empty(roster: Roster) -> None:
    assert [p.id for p in roster.members("elevator_maintenance")] == ["dt01", "dt02", "dt03"]
    assert roster.members("no_such_department") == ()


def test_roster_is_immutable(roster: Roster) -> None:
    with pytest.raises(AttributeError):
        roster.member("wy01").capacity = 99  # type: ignore[misc]


# --- validation -------------------------------------------------------------------------


def _person(pid: str, dept: str = "property", role: str = "worker", **extra: Any) -> dict:
    return {
        "id": pid,
        "name": f"员工{pid}",
        "department": dept,
        "role": role,
        "skills": [],
        "capacity": 3,
        "phone": "13800000000",
        "shifts": [{"days": "mon-fri", "hours": "08:30-17:30"}],
        **extra,
    }


def _base() -> dict[str, Any]:
    return {
        "staff": [
            _person("p1", role="head"),
            _person("p2"),
            _person("d1", "residents_committee", "director"),
            _person("g1", "grid", "grid_worker"),
            _person("g2", "grid", "grid_worker"),
        ],
        "grids": [
            {"id": "ga", "name": "甲", "buildings": [1, 2], "workers": ["g1"]},
            {"id": "gb", "name": "乙", "buildings": [3], "workers": ["g2"]},
        ],
    }


SMALL_BUILDINGS = ("1", "2", "3")


def test_small_roster_is_valid(catalogue: Catalogue) -> None:
    roster = parse_roster(_base(), catalogue=catalogue, buildings=SMALL_BUILDINGS)
    assert roster.grid_for_building("3").id == "gb"
    assert roster.head("property") is not None and roster.head("property").id == "p1"


def _set(path: str, value: Any):
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _append(section: str, entry: dict):
    return lambda raw: raw[section].append(entry)


BAD_ROSTERS = [
    ("unknown department", _set("staff.1.department", "plumbing"),
     r"staff\[1\] \(p2\): unknown department 'plumbing'; use one of .*property"),
    ("duplicate id", _set("staff.1.id", "p1"), r"staff\[1\] \(p1\): duplicate staff id 'p1'"),
    ("capacity zero", _set("staff.1.capacity", 0),
     r"staff\[1\] \(p2\): 'capacity' must be a whole number >= 1, got 0"),
    ("capacity text", _set("staff.1.capacity", "3"), r"staff\[1\] \(p2\): 'capacity'"),
    ("capacity bool", _set("staff.1.capacity", True), r"staff\[1\] \(p2\): 'capacity'"),
    ("bad hours", _set("staff.1.shifts", [{"days": "mon-fri", "hours": "8-17"}]),
     r"staff\[1\] \(p2\) shifts\[0\]: bad shift hours '8-17'"),
    ("hour 25", _set("staff.1.shifts", [{"days": "mon", "hours": "08:00-25:00"}]),
     r"staff\[1\] \(p2\) shifts\[0\]: bad shift hours"),
    ("start at 24", _set("staff.1.shifts", [{"days": "mon", "hours": "24:00-08:00"}]),
     r"staff\[1\] \(p2\) shifts\[0\]: bad shift hours"),
    ("zero-length", _set("staff.1.shifts", [{"days": "mon", "hours": "08:00-08:00"}]),
     r"shifts\[0\]: shift hours '08:00-08:00' start and end together"),
    ("bad days", _set("staff.1.shifts", [{"days": "weekdays", "hours": "08:00-17:00"}]),
     r"staff\[1\] \(p2\) shifts\[0\]: bad shift days 'weekdays'"),
    ("day 7", _set("staff.1.shifts", [{"days": [0, 7], "hours": "08:00-17:00"}]),
     r"shifts\[0\]: bad shift days"),
    ("no shifts", _set("staff.1.shifts", []), r"staff\[1\] \(p2\): 'shifts' must list"),
    ("shift typo", _set("staff.1.shifts", [{"day": "mon", "hours": "08:00-17:00"}]),
     r"shifts\[0\]: unknown key 'day'"),
    ("staff typo", _set("staff.1.capcity", 3), r"staff\[1\] \(p2\): unknown key 'capcity'"),
    ("bad role", _set("staff.1.role", "boss"), r"staff\[1\] \(p2\): bad role 'boss'"),
    ("grid_worker elsewhere", _set("staff.1.role", "grid_worker"),
     r"staff\[1\] \(p2\): role 'grid_worker' goes with department 'grid'"),
    ("grid person not grid_worker", _set("staff.3.role", "worker"),
     r"staff\[3\] \(g1\): role 'grid_worker' goes with department 'grid'"),
    ("director elsewhere", _set("staff.1.role", "director"),
     r"staff\[1\] \(p2\): the director belongs to 'residents_committee'"),
    ("two heads", _set("staff.1.role", "head"), r"department 'property' has two heads"),
    ("two directors", _append("staff", _person("d2", "residents_committee", "director")),
     r"more than one 'director'"),
    ("unknown skill", _set("staff.1.skills", ["plumbing"]),
     r"staff\[1\] \(p2\): skill 'plumbing' is not a category id"),
    ("skills not a list", _set("staff.1.skills", "water_leak"), r"staff\[1\] \(p2\): 'skills'"),
    ("missing name", _set("staff.1.name", ""), r"staff\[1\] \(p2\): 'name' must be"),
    ("unknown staff in grid", _set("grids.0.workers", ["g1", "ghost"]),
     r"grids\[0\] \(ga\): unknown staff 'ghost'"),
    ("non-grid staff in grid", _set("grids.0.workers", ["g1", "p2"]),
     r"grids\[0\] \(ga\): 'p2' is in 'property'; grid workers belong to department 'grid'"),
    ("building in two grids", _set("grids.1.buildings", [3, 2]),
     r"grids\[1\] \(gb\): building '2' is already in grid 'ga'"),
    ("uncovered building", _set("grids.0.buildings", [1]), r"building '2' is in no grid"),
    ("building outside community", _set("grids.1.buildings", [3, 17]),
     r"grids\[1\] \(gb\): building '17' is not in the community"),
    ("grid worker in no grid", _set("grids.1.workers", ["g1"]),
     r"grid worker 'g2' is in no grid"),
    ("duplicate grid", _set("grids.1.id", "ga"), r"grids\[1\] \(ga\): duplicate grid id 'ga'"),
    ("grid without workers", _set("grids.1.workers", []),
     r"grids\[1\] \(gb\): 'workers' must list"),
    ("grid typo", _set("grids.1.building", [3]), r"grids\[1\] \(gb\): unknown key 'building'"),
    ("entry not a mapping", _set("staff.1", "p2"), r"staff\[1\]: must be a mapping"),
    ("no staff", _set("staff", []), r"section 'staff' must be a non-empty list"),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [c[1:] for c in BAD_ROSTERS], ids=[c[0] for c in BAD_ROSTERS]
)
def test_bad_roster_is_refused_naming_the_entry(
    catalogue: Catalogue, mutate: Any, message: str
) -> None:
    raw = copy.deepcopy(_base())
    mutate(raw)
    with pytest.raises(RosterError, match=message):
        parse_roster(raw, catalogue=catalogue, buildings=SMALL_BUILDINGS)


def test_top_level_must_be_a_mapping(catalogue: Catalogue) -> None:
    with pytest.raises(RosterError, match="top level"):
        parse_roster(["p1"], catalogue=catalogue, buildings=SMALL_BUILDINGS)


YAML_WITH_BAD_LINE = """\
staff:
  - {id: p1, name: 甲, department: property, role: worker, skills: [], capacity: 2,
     phone: "13800000001", shifts: [{days: daily, hours: "08:00-20:00"}]}
  - id: p2
    name: 乙
    department: property
    role: worker
    capacity: -1
    phone: "13800000002"
    shifts: [{days: daily, hours: "08:00-20:00"}]
grids:
  - {id: ga, name: 甲, buildings: [1], workers: []}
"""


def test_yaml_errors_name_the_file_and_line(catalogue: Catalogue) -> None:
    with pytest.raises(RosterError, match=r"^demo\.yml: line 4, staff\[1\] \(p2\): 'capacity'"):
        roster_from_yaml(YAML_WITH_BAD_LINE, catalogue=catalogue, buildings=("1",),
                         source="demo.yml")


def test_yaml_syntax_error_is_reported(catalogue: Catalogue) -> None:
    with pytest.raises(RosterError, match="demo.yml: not valid YAML"):
        roster_from_yaml("staff: [", catalogue=catalogue, buildings=("1",), source="demo.yml")


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ("mon-fri", (0, 1, 2, 3, 4)),
        ("fri-mon", (0, 4, 5, 6)),  # a range may wrap over the weekend
        ("sat,sun", (5, 6)),
        ("Mon, wed-thu", (0, 2, 3)),
        ("daily", (0, 1, 2, 3, 4, 5, 6)),
        ([6, 0, 6], (0, 6)),
    ],
)
def test_shift_days_syntax(catalogue: Catalogue, days: Any, expected: tuple[int, ...]) -> None:
    raw = _base()
    raw["staff"][1]["shifts"] = [{"days": days, "hours": "22:00-06:00"}]
    roster = parse_roster(raw, catalogue=catalogue, buildings=SMALL_BUILDINGS)
    shift = roster.member("p2").shifts[0]
    assert shift.days == expected
    assert (shift.start, shift.end) == (time(22, 0), time(6, 0))


def test_round_the_clock_shift_is_written_00_to_24(catalogue: Catalogue) -> None:
    raw = _base()
    raw["staff"][1]["shifts"] = [{"days": "daily", "hours": "00:00-24:00"}]
    person = parse_roster(raw, catalogue=catalogue, buildings=SMALL_BUILDINGS).member("p2")
    for hour in range(0, 7 * 24, 5):
        assert person.on_shift(MONDAY + timedelta(hours=hour, minutes=hour % 60))
