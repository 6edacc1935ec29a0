"""One-hop dispatch: every order goes to the right place at once, to someone who can take it."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, time, timedelta

import pytest

from routing.catalogue import TAXONOMY, Catalogue, UnknownCategory
from routing.dispatch import (
    QUEUE_REASON,
    VERIFY_CATEGORIES,
    Assignment,
    DispatchPlan,
    TicketFacts,
    choose_assignee,
    plan_dispatch,
)
from routing.learning import LearnedRoutes, LearnedRule, Outcome
from routing.roster import (
    BuildingNotInGrid,
    Grid,
    NaiveDatetimeError,
    Roster,
    Shift,
    Staff,
)

pytestmark = pytest.mark.unit

BUILDINGS = tuple(str(n) for n in range(1, 17))
MONDAY = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)  # Monday 00:00 in Shanghai
WEDNESDAY_10 = MONDAY + timedelta(days=2, hours=10)
SATURDAY_23 = MONDAY + timedelta(days=5, hours=23)


def _facts(catalogue: Catalogue, category: str, building: str | None = "7", **kw) -> TicketFacts:
    urgency = kw.pop("urgency", catalogue.category(category).urgency)
    return TicketFacts(number="GD20261125-0001", category=category, urgency=urgency,
                       building=building, **kw)


def _plan(catalogue: Catalogue, roster: Roster, ticket: TicketFacts, *,
          now: datetime = WEDNESDAY_10, open_load=None, assigned_total=None,
          learned=None) -> DispatchPlan:
    return plan_dispatch(ticket=ticket, catalogue=catalogue, roster=roster,
                         open_load=open_load or {}, assigned_total=assigned_total or {},
                         learned=learned, now=now)


# --- invariants over many random situations --------------------------------------------


def _random_learned(rng: random.Random, catalogue: Catalogue) -> LearnedRoutes | None:
    if rng.random() < 0.4:
        return None
    departments = [d.id for d in catalogue.departments]
    outcomes = [
        Outcome(category=rng.choice(catalogue.category_ids),
                grid=rng.choice([None, "grid1", "grid2", "grid3", "grid4"]),
                first_lead=rng.choice(departments),
                final_owner=rng.choice(departments + ["property"] * 6))
        for _ in range(rng.randint(0, 400))
    ]
    return LearnedRoutes.from_outcomes(outcomes, min_support=2, min_share=0.5)


def test_plan_dispatch_invariants_over_random_tickets(catalogue: Catalogue, roster: Roster) -> None:
    rng = random.Random(20261125)
    for case in range(800):
        category = catalogue.category(rng.choice(catalogue.category_ids))
        building = rng.choice([None, "99", *BUILDINGS])
        urgency = "P1" if rng.random() < 0.15 else category.urgency
        now = MONDAY + timedelta(minutes=rng.randrange(7 * 24 * 60))
        open_load = {p.id: rng.randint(0, p.capacity + 1) for p in roster.staff}
        totals = {p.id: rng.randint(0, 50) for p in roster.staff}
        learned = _random_learned(rng, catalogue) if case % 8 == 0 else None
        ticket = _facts(catalogue, category.id, building, urgency=urgency)
        plan = _plan(catalogue, roster, ticket, now=now, open_load=open_load,
                     assigned_total=totals, learned=learned)
        context = f"case {case}: {ticket} at {now.isoformat()}"

        roles = [o.role for o in plan.orders]
        assert roles[0] == "lead" and roles.count("lead") == 1, context
        assert plan.lead is plan.orders[0]
        departments = [o.department for o in plan.orders]
        assert len(set(departments)) == len(departments), context
        if learned is None or urgency == "P1":
            assert plan.lead.department == category.lead, context
        if category.id == "property_fee":
            assert plan.lead.department != "property", context
        for dept in category.assisting:
            assert dept in departments, f"{context}: assisting {dept} has no order"
        verify = [o for o in plan.orders if o.role == "verify"]
        others = [o for o in plan.orders if o.role != "verify"]
        wants_check = category.id in VERIFY_CATEGORIES and urgency != "P1"
        grid_has_order = any(o.department == "grid" for o in others)
        assert bool(verify) == (wants_check and not grid_has_order), context
        if wants_check:
            checker = verify[0] if verify else next(o for o in others if o.department == "grid")
            assert any(r.startswith("现场核实：") for r in checker.reasons), context
        for order in plan.orders:
            assert order.reasons, context
            if order.assignee is None:
                continue
            person = roster.member(order.assignee)
            assert person.department == order.department, context
            if any(r.startswith("生命安全：无人在岗") for r in order.reasons):
                # The one exception: a P1 lead names an owner even off shift or full.
                assert ticket.urgency == "P1" and order.role == "lead", context
                continue
            assert person.on_shift(now), f"{context}: {person.id} is off shift"
            assert open_load[person.id] < person.capacity, f"{context}: {person.id} is full"
            assert person.has_skill(category.id), f"{context}: {person.id} lacks the skill"
            assert person.role != "director", context
            if order.department == "grid":
                assert person.id in roster.grid_for_building(building).workers, context


# --- what the plan contains -------------------------------------------------------------


@pytest.mark.parametrize("category_id", TAXONOMY)
def test_every_assisting_department_gets_an_order_at_once(
    catalogue: Catalogue, roster: Roster, category_id: str
) -> None:
    category = catalogue.category(category_id)
    plan = _plan(catalogue, roster, _facts(catalogue, category_id))
    assert plan.ticket == "GD20261125-0001"
    assert plan.lead.department == category.lead
    assert plan.lead.reasons[0] == (
        f"派单目录：{category.short_name} → {catalogue.department(category.lead).name}（首接负责）"
    )
    assists = tuple(o.department for o in plan.orders if o.role == "assist")
    assert assists == category.assisting


def test_which_categories_get_a_grid_verification() -> None:
    assert VERIFY_CATEGORIES == {
        "illegal_construction", "neighbor_dispute", "neighbor_noise", "parking",
        "sanitation", "pet_nuisance", "elderly_care", "fire_hazard",
    }


@pytest.mark.parametrize(
    ("category_id", "grid_role"),
    [
        ("parking", "verify"),
        ("sanitation", "verify"),
        ("pet_nuisance", "verify"),
        ("elderly_care", "verify"),
        ("fire_hazard", "verify"),
        ("neighbor_dispute", "assist"),  # grid already assists: it carries the check
        ("neighbor_noise", "assist"),
        ("illegal_construction", "assist"),
        ("water_leak", None),
        ("gas_leak", None),
        ("public_security", None),
        ("property_fee", None),
    ],
)
def test_grid_verification_order(
    catalogue: Catalogue, roster: Roster, category_id: str, grid_role: str | None
) -> None:
    plan = _plan(catalogue, roster, _facts(catalogue, category_id, "7"))
    grid_orders = [o for o in plan.orders if o.department == "grid"]
    if grid_role is None:
        assert grid_orders == []
        return
    (order,) = grid_orders
    assert order.role == grid_role
    assert any(r.startswith("现场核实：") and "7号楼" in r for r in order.reasons)
    assert order.assignee == "wg21"  # 7号楼 is in 网格二; wg21 works Wednesdays
    assert "7号楼属网格二" in order.reasons


def test_no_verification_for_an_emergency(catalogue: Catalogue, roster: Roster) -> None:
    plan = _plan(catalogue, roster, _facts(catalogue, "fire_hazard", urgency="P1"))
    assert [o.role for o in plan.orders] == ["lead", "assist"]


@pytest.mark.parametrize(("building", "reason"), [(None, "楼栋未知"), ("99", "99号楼不在任何网格")])
def test_verification_without_a_known_building_goes_to_the_grid_queue(
    catalogue: Catalogue, roster: Roster, building: str | None, reason: str
) -> None:
    plan = _plan(catalogue, roster, _facts(catalogue, "parking", building))
    verify = plan.orders[-1]
    assert (verify.role, verify.department, verify.assignee) == ("verify", "grid", None)
    assert any(r.startswith(reason) and "网格站队列" in r for r in verify.reasons)


def test_property_fee_is_never_led_by_property_even_with_strong_evidence(
    catalogue: Catalogue, roster: Roster
) -> None:
    learned = LearnedRoutes(rules=(LearnedRule("property_fee", None, "property", 50, 50, 1.0),))
    plan = _plan(catalogue, roster, _facts(catalogue, "property_fee"), learned=learned)
    assert plan.lead.department == "residents_committee"
    assert "property" not in {o.department for o in plan.orders}


# --- learned rules ----------------------------------------------------------------------


def _outcomes(category: str, grid: str | None, owner: str, n: int) -> list[Outcome]:
    return [Outcome(category, grid, "x", owner)] * n


def test_strong_learned_rule_overrides_the_catalogue_lead_and_says_why(
    catalogue: Catalogue, roster: Roster
) -> None:
    learned = LearnedRoutes.from_outcomes(
        _outcomes("illegal_construction", "grid2", "housing_bureau", 4)
        + _outcomes("illegal_construction", "grid2", "urban_management", 1)
    )
    plan = _plan(catalogue, roster, _facts(catalogue, "illegal_construction", "7"),
                 learned=learned)
    assert plan.lead.department == "housing_bureau"
    assert plan.lead.reasons[0] == (
        "经验规则：本网格同类工单4单中80%最终由住建部门办结，改由其首接（目录为城管执法）"
    )
    assert [o.department for o in plan.orders] == ["housing_bureau", "grid"]


def test_rule_of_another_grid_does_not_apply(catalogue: Catalogue, roster: Roster) -> None:
    learned = LearnedRoutes.from_outcomes(
        _outcomes("illegal_construction", "grid1", "housing_bureau", 5)
        + _outcomes("illegal_construction", "grid2", "urban_management", 5)
    )
    plan = _plan(catalogue, roster, _facts(catalogue, "illegal_construction", "7"),
                 learned=learned)
    assert plan.lead.department == "urban_management"  # 7号楼 is in grid2


def test_weak_evidence_keeps_the_catalogue_lead(catalogue: Catalogue, roster: Roster) -> None:
    learned = LearnedRoutes.from_outcomes(_outcomes("water_leak", "grid2", "utilities_water", 2))
    plan = _plan(catalogue, roster, _facts(catalogue, "water_leak"), learned=learned)
    assert plan.lead.department == "property"
    assert not any("经验规则" in r for r in plan.lead.reasons)


def test_learned_lead_from_the_assisting_list_gets_one_order(
    catalogue: Catalogue, roster: Roster
) -> None:
    learned = LearnedRoutes.from_outcomes(
        _outcomes("elevator_fault", None, "elevator_maintenance", 6)
    )
    plan = _plan(catalogue, roster, _facts(catalogue, "elevator_fault"), learned=learned)
    assert [(o.department, o.role) for o in plan.orders] == [("elevator_maintenance", "lead")]
    assert "全社区同类工单6单中100%" in plan.lead.reasons[0]


def test_emergencies_ignore_learned_rules_but_say_so(catalogue: Catalogue, roster: Roster) -> None:
    learned = LearnedRoutes.from_outcomes(_outcomes("elevator_trapped", None, "property", 9))
    plan = _plan(catalogue, roster, _facts(catalogue, "elevator_trapped"), learned=learned)
    assert plan.lead.department == "elevator_maintenance"
    assert "特急工单按目录派单，未采用经验规则（建议物业服务中心）" in plan.lead.reasons


def test_rule_naming_an_unknown_department_is_ignored(catalogue: Catalogue, roster: Roster) -> None:
    learned = LearnedRoutes.from_outcomes(_outcomes("water_leak", None, "old_water_dept", 9))
    plan = _plan(catalogue, roster, _facts(catalogue, "water_leak"), learned=learned)
    assert plan.lead.department == "property"


# --- choosing the person ----------------------------------------------------------------

WEEKDAY = Shift(days=(0, 1, 2, 3, 4), start=time(8, 30), end=time(17, 30))
ALWAYS = Shift(days=tuple(range(7)), start=time(0), end=time(0))


def _staff(pid: str, dept: str = "property", role: str = "worker", *, skills=(),
           shifts=(WEEKDAY,), capacity: int = 3) -> Staff:
    return Staff(id=pid, name=f"员工{pid}", department=dept, role=role, skills=tuple(skills),
                 shifts=tuple(shifts), capacity=capacity, phone="13800000000")


SMALL = Roster(
    staff=(
        _staff("h1", role="head", shifts=(ALWAYS,)),
        _staff("w1"),
        _staff("w2"),
        _staff("w3", skills=("water_leak",)),
        _staff("n1", shifts=(Shift(days=(2,), start=time(22), end=time(6)),)),
        _staff("d1", "residents_committee", "director", shifts=(ALWAYS,)),
        _staff("g1", "grid", "grid_worker"),
        _staff("g2", "grid", "grid_worker"),
        _staff("g3", "grid", "grid_worker"),
    ),
    grids=(Grid("ga", "甲", ("1", "2"), ("g1", "g2")), Grid("gb", "乙", ("3",), ("g3",))),
)


def _choose(department: str = "property", category: str = "water_leak",
            building: str | None = "1", *, now: datetime = WEDNESDAY_10,
            load=None, total=None, roster: Roster = SMALL):
    return choose_assignee(department=department, category=category, building=building,
                           roster=roster, open_load=load or {}, assigned_total=total or {},
                           now=now)


@pytest.mark.parametrize(
    ("load", "total", "expected"),
    [
        ({}, {}, "w1"),  # all equal: lowest id
        ({"w1": 1}, {}, "w2"),  # least open load first
        ({"w1": 1, "w2": 1}, {}, "w3"),
        ({}, {"w1": 5, "w2": 3, "w3": 4}, "w2"),  # then least assigned over time
        ({"w2": 1, "w3": 1}, {"w1": 9}, "w1"),  # load beats fairness
        ({"w1": 3, "w2": 3}, {"w3": 99}, "w3"),  # the full ones are skipped
        ({"w1": 3, "w2": 3, "w3": 3}, {}, "h1"),  # head takes it when no worker can
    ],
)
def test_choose_least_loaded_then_least_assigned_then_id(load, total, expected) -> None:
    assignee, _ = _choose(load=load, total=total)
    assert assignee == expected


def test_skill_filters_and_empty_skills_mean_any() -> None:
    assignee, _ = _choose(category="power_outage", load={"w1": 3, "w2": 3})
    assert assignee == "h1"  # w3 handles only water leaks
    assignee, _ = _choose(category="water_leak", load={"w1": 3, "w2": 3})
    assert assignee == "w3"


def test_off_shift_people_are_skipped() -> None:
    wednesday_23 = MONDAY + timedelta(days=2, hours=23)
    thursday_05 = wednesday_23 + timedelta(hours=6)
    assert _choose(now=wednesday_23)[0] == "n1"
    assert _choose(now=thursday_05)[0] == "n1"  # the night shift runs past midnight
    assert _choose(now=thursday_05 + timedelta(hours=1))[0] == "h1"


def test_the_director_is_never_picked() -> None:
    assignee, reasons = _choose(department="residents_committee", category="other")
    assert assignee is None
    assert reasons[0] == QUEUE_REASON


def test_nobody_available_goes_to_the_queue_with_a_tally() -> None:
    tiny = Roster(staff=(_staff("w1"), _staff("w2", capacity=1), _staff("w3", skills=("heating",))),
                  grids=())
    assignee, reasons = _choose(load={"w2": 1}, now=WEDNESDAY_10, roster=tiny)
    assert assignee == "w1"
    assignee, reasons = _choose(load={"w1": 3, "w2": 1}, roster=tiny)
    assert (assignee, reasons) == (None, (QUEUE_REASON, "property：2人已满负荷，1人不对口"))
    assignee, reasons = _choose(now=SATURDAY_23, roster=tiny)
    assert (assignee, reasons) == (None, (QUEUE_REASON, "property：2人不在班，1人不对口"))
    assignee, reasons = _choose(department="housing_bureau", roster=tiny)
    assert (assignee, reasons) == (None, (QUEUE_REASON, "housing_bureau：暂无可派人员"))


@pytest.mark.parametrize(("building", "allowed"), [("1", {"g1", "g2"}), ("2", {"g1", "g2"}),
                                                   ("3", {"g3"})])
def test_grid_orders_stay_in_the_buildings_grid(building: str, allowed: set[str]) -> None:
    for g1_load in range(4):
        assignee, reasons = _choose(department="grid", building=building, load={"g1": g1_load})
        assert assignee in allowed | {None}
    assignee, reasons = _choose(department="grid", building=building,
                                load={"g1": 3, "g2": 3, "g3": 3})
    assert assignee is None and reasons[0] == QUEUE_REASON
    assert reasons[1].startswith(("甲：", "乙："))


def test_single_contact_head_is_picked_without_a_fallback_note(
    catalogue: Catalogue, roster: Roster
) -> None:
    plan = _plan(catalogue, roster, _facts(catalogue, "gas_leak"), now=SATURDAY_23)
    lead = plan.lead
    assert lead.assignee == "rq01"
    assert not any("负责人承接" in r for r in lead.reasons)
    assert lead.reasons[1] == "指派rq01 燃气值班员：在岗，在办0/20单，累计0单"


def test_head_fallback_is_explained(catalogue: Catalogue, roster: Roster) -> None:
    busy = {p.id: p.capacity for p in roster.members("property") if p.role == "worker"}
    plan = _plan(catalogue, roster, _facts(catalogue, "water_leak"), open_load=busy)
    assert plan.lead.assignee == "wy01"
    assert plan.lead.reasons[1:] == (
        "无对口一线人员可接，由负责人承接",
        "指派负责人wy01 周建国：在岗，在办0/6单，累计0单",
    )


# --- load spread ------------------------------------------------------------------------

TEAM = Roster(staff=tuple(_staff(f"t{i}", capacity=4, shifts=(ALWAYS,)) for i in range(5)),
              grids=())


def _simulate(durations: list[int], arrivals: list[int]) -> dict[str, int]:
    open_until: dict[str, list[datetime]] = {p.id: [] for p in TEAM.staff}
    total = {p.id: 0 for p in TEAM.staff}
    start = MONDAY + timedelta(hours=8)
    for minute, duration in zip(arrivals, durations, strict=True):
        now = start + timedelta(minutes=minute)
        load = {pid: sum(1 for t in ends if t > now) for pid, ends in open_until.items()}
        assignee, _ = _choose(category="sanitation", now=now, load=load, total=total, roster=TEAM)
        assert assignee is not None and load[assignee] < 4
        total[assignee] += 1
        open_until[assignee].append(now + timedelta(minutes=duration))
    return total


def test_instantly_closed_orders_go_round_robin() -> None:
    total = _simulate(durations=[0] * 203, arrivals=list(range(0, 609, 3)))
    assert max(total.values()) - min(total.values()) <= 1
    assert sum(total.values()) == 203


@pytest.mark.parametrize("seed", range(10))
def test_load_spreads_evenly_over_a_simulated_day(seed: int) -> None:
    rng = random.Random(seed)
    arrivals = sorted(rng.randrange(0, 12 * 60) for _ in range(240))
    durations = [rng.randint(5, 40) for _ in arrivals]
    total = _simulate(durations, arrivals)
    counts = list(total.values())
    assert sum(counts) == 240
    assert max(counts) - min(counts) <= 3, total
    assert statistics.pstdev(counts) <= 1.5, total


def test_grid_workers_of_one_grid_share_a_day(catalogue: Catalogue, roster: Roster) -> None:
    total: dict[str, int] = {}
    for k in range(40):
        now = WEDNESDAY_10 + timedelta(minutes=10 * k)
        ticket = _facts(catalogue, "parking", building=str(5 + k % 4))  # all in 网格二
        plan = _plan(catalogue, roster, ticket, now=now, assigned_total=total)
        verify = plan.orders[-1]
        assert verify.role == "verify" and verify.assignee in {"wg21", "wg22"}
        total[verify.assignee] = total.get(verify.assignee, 0) + 1
    assert total == {"wg21": 20, "wg22": 20}


# --- errors and values ------------------------------------------------------------------


def test_unknown_category_is_refused(catalogue: Catalogue, roster: Roster) -> None:
    with pytest.raises(UnknownCategory, match="'broken_window'"):
        _plan(catalogue, roster, TicketFacts(number="GD1", category="broken_window",
                                             urgency="P3"))


def test_naive_clock_is_refused(catalogue: Catalogue, roster: Roster) -> None:
    with pytest.raises(NaiveDatetimeError):
        _plan(catalogue, roster, _facts(catalogue, "water_leak"), now=datetime(2026, 11, 25, 10))
    with pytest.raises(NaiveDatetimeError):
        _choose(now=datetime(2026, 11, 25, 10))


def test_plan_values_are_frozen(catalogue: Catalogue, roster: Roster) -> None:
    plan = _plan(catalogue, roster, _facts(catalogue, "water_leak"))
    assert isinstance(plan.lead, Assignment)
    with pytest.raises(AttributeError):
        plan.lead.assignee = "someone"  # type: ignore[misc]


def test_out_of_grid_building_does_not_break_non_grid_orders(
    catalogue: Catalogue, roster: Roster
) -> None:
    with pytest.raises(BuildingNotInGrid):
        roster.grid_for_building("99")
    plan = _plan(catalogue, roster, _facts(catalogue, "water_leak", "99"))
    assert plan.lead.assignee == "wy02"


def test_a_life_safety_lead_always_names_a_person(catalogue: Catalogue, roster: Roster) -> None:
    sunday_3am = MONDAY - timedelta(hours=21)  # Sunday 03:00 in Shanghai: clinic closed
    urgent = _plan(catalogue, roster, _facts(catalogue, "medical_service", urgency="P1"),
                   now=sunday_3am)
    assert urgent.lead.department == "health_center"
    assert urgent.lead.assignee == roster.head("health_center").id
    assert any("生命安全" in reason for reason in urgent.lead.reasons)
    # An ordinary request at the same hour waits in the department's queue.
    routine = _plan(catalogue, roster, _facts(catalogue, "medical_service", urgency="P3"),
                    now=sunday_3am)
    assert routine.lead.assignee is None
