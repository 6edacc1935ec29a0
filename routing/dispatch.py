"""One-hop dispatch (一次派准): which departments get an order, and who in each takes it.

plan_dispatch sends the order to the lead and to every assisting department at once (no
relay), plus a grid worker's verification order where the facts need checking on site.
Every order carries short Chinese reasons so the people receiving it see why it is theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from routing.catalogue import FORBIDDEN_LEADS, Catalogue, Category
from routing.learning import LearnedRoutes
from routing.roster import GRID_DEPARTMENT, BuildingNotInGrid, Grid, Roster, Staff, local_time

# Categories whose facts a grid worker checks on site (现场核实): disputes and nuisances
# between neighbours, illegal building, blocked fire lanes and parking, hoarding in
# stairwells, hygiene, and elderly people living alone whose need is confirmed at the door.
# Not the technical repairs (a plumber verifies by fixing), not police, utility or health
# matters, and never a P1 emergency, where a second visit would only slow things down.
VERIFY_CATEGORIES: frozenset[str] = frozenset(
    {
        "illegal_construction",
        "neighbor_dispute",
        "neighbor_noise",
        "parking",
        "sanitation",
        "pet_nuisance",
        "elderly_care",
        "fire_hazard",
    }
)

# Life-safety orders follow the catalogue only: the learned rules are not consulted.
NO_LEARNING_URGENCIES: frozenset[str] = frozenset({"P1"})

QUEUE_REASON = "无人在岗，进入部门队列"

# Lower tier first: a head takes orders only when no worker can; the director never does.
_ROLE_TIER = {"worker": 0, "grid_worker": 0, "head": 1}


@dataclass(frozen=True)
class TicketFacts:
    number: str
    category: str
    urgency: str
    building: str | None = None
    ranking: tuple[tuple[str, float], ...] = ()  # the classifier's category ranking, best first


@dataclass(frozen=True)
class Assignment:
    department: str
    role: str  # "lead" | "assist" | "verify"
    assignee: str | None  # staff id, or None = the department's queue
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class DispatchPlan:
    ticket: str
    orders: tuple[Assignment, ...]

    @property
    def lead(self) -> Assignment:
        """Return the lead order (首接负责)."""
        return next(order for order in self.orders if order.role == "lead")


def department_name(catalogue: Catalogue, department_id: str) -> str:
    """Return a department's Chinese name, or its id when the catalogue lacks it."""
    for department in catalogue.departments:
        if department.id == department_id:
            return department.name
    return department_id


def plan_dispatch(
    *,
    ticket: TicketFacts,
    catalogue: Catalogue,
    roster: Roster,
    open_load: Mapping[str, int],
    assigned_total: Mapping[str, int],
    learned: LearnedRoutes | None = None,
    now: datetime,
) -> DispatchPlan:
    """Plan every order of a new ticket: lead, all assisting departments, grid verification."""
    local_time(now)  # refuse a naive clock before anything is decided
    category = catalogue.category(ticket.category)
    grid_id = _grid_id(roster, ticket.building)
    lead, lead_reasons = _lead(ticket, category, catalogue, learned, grid_id)
    departments = [(lead, "lead", lead_reasons)]
    for dept in category.assisting:
        if dept != lead:
            reason = f"派单目录：{category.short_name} → {department_name(catalogue, dept)}（协同）"
            departments.append((dept, "assist", (reason,)))
    needs_check = category.id in VERIFY_CATEGORIES and ticket.urgency != "P1"
    if needs_check:
        place = f"{ticket.building}号楼" if ticket.building else "现场"
        check = f"现场核实：{category.short_name}需网格员到{place}核实"
        if any(dept == GRID_DEPARTMENT for dept, _, _ in departments):
            # The grid already has an order: it carries the check, no second order.
            departments = [
                (d, role, reasons + (check,) if d == GRID_DEPARTMENT else reasons)
                for d, role, reasons in departments
            ]
        else:
            departments.append((GRID_DEPARTMENT, "verify", (check,)))
    orders = []
    for dept, role, reasons in departments:
        assignee, why = choose_assignee(
            department=dept,
            category=category.id,
            building=ticket.building,
            roster=roster,
            open_load=open_load,
            assigned_total=assigned_total,
            now=now,
        )
        if assignee is None and role == "lead" and ticket.urgency == "P1":
            assignee, why = _life_safety_owner(dept, roster, why)
        orders.append(
            Assignment(department=dept, role=role, assignee=assignee, reasons=reasons + why)
        )
    return DispatchPlan(ticket=ticket.number, orders=tuple(orders))


def _life_safety_owner(
    department: str, roster: Roster, why: tuple[str, ...]
) -> tuple[str | None, tuple[str, ...]]:
    """Name a person for a P1 lead even when nobody is on shift: a queue is no owner at night."""
    members = roster.members(department)
    owner = roster.head(department) or (members[0] if members else None)
    if owner is None:
        return None, why
    note = f"生命安全：无人在岗，直接派给{owner.id} {owner.name}，请电话联系{owner.phone}"
    return owner.id, (*why, note)


def _grid_id(roster: Roster, building: str | None) -> str | None:
    if building is None:
        return None
    try:
        return roster.grid_for_building(building).id
    except BuildingNotInGrid:
        return None


def _lead(
    ticket: TicketFacts,
    category: Category,
    catalogue: Catalogue,
    learned: LearnedRoutes | None,
    grid_id: str | None,
) -> tuple[str, tuple[str, ...]]:
    default = category.lead
    default_name = department_name(catalogue, default)
    listed = (f"派单目录：{category.short_name} → {default_name}（首接负责）",)
    suggestion = learned.suggest(category.id, grid_id) if learned is not None else None
    if suggestion is None or suggestion[0] == default:
        return default, listed
    dept, support, share = suggestion
    name = department_name(catalogue, dept)
    if dept in FORBIDDEN_LEADS.get(category.id, frozenset()):
        return default, listed  # never let a party lead the complaint about itself
    if not any(d.id == dept for d in catalogue.departments):
        return default, listed  # a rule learned before a department was renamed
    if ticket.urgency in NO_LEARNING_URGENCIES:
        return default, listed + (f"特急工单按目录派单，未采用经验规则（建议{name}）",)
    scope = "本网格" if grid_id and _grid_rule(learned, category.id, grid_id) else "全社区"
    because = (
        f"经验规则：{scope}同类工单{support}单中{share:.0%}最终由{name}办结，"
        f"改由其首接（目录为{default_name}）"
    )
    return dept, (because,)


def _grid_rule(learned: LearnedRoutes | None, category: str, grid_id: str) -> bool:
    rule = learned.rule(category, grid_id) if learned is not None else None
    return rule is not None and rule.grid == grid_id


def choose_assignee(
    *,
    department: str,
    category: str,
    building: str | None,
    roster: Roster,
    open_load: Mapping[str, int],
    assigned_total: Mapping[str, int],
    now: datetime,
) -> tuple[str | None, tuple[str, ...]]:
    """Pick the least-loaded, least-used available person, or None for the queue, with reasons."""
    local = local_time(now)
    weekday, at = local.weekday(), local.time()
    grid: Grid | None = None
    if department == GRID_DEPARTMENT:
        try:
            grid = roster.grid_for_building(building) if building is not None else None
        except BuildingNotInGrid:
            grid = None
        if grid is None:
            where = f"{building}号楼不在任何网格" if building else "楼栋未知"
            return None, (f"{where}，进入网格站队列",)
        people = roster.grid_workers(grid.id)
    else:
        people = roster.members(department)
    off = full = unskilled = 0
    has_workers = False
    best: tuple[int, int, int, str] | None = None
    chosen: Staff | None = None
    for person in people:
        tier = _ROLE_TIER.get(person.role)
        if tier is None:
            continue
        has_workers = has_workers or tier == 0
        if not person.has_skill(category):
            unskilled += 1
            continue
        if not person.on_shift_local(weekday, at):
            off += 1
            continue
        load = open_load.get(person.id, 0)
        if load >= person.capacity:
            full += 1
            continue
        key = (tier, load, assigned_total.get(person.id, 0), person.id)
        if best is None or key < best:
            best, chosen = key, person
    if chosen is None or best is None:
        tally = ((off, "不在班"), (full, "已满负荷"), (unskilled, "不对口"))
        detail = "，".join(f"{n}人{label}" for n, label in tally if n) or "暂无可派人员"
        return None, (QUEUE_REASON, f"{_scope(department, grid)}：{detail}")
    _, load, total, _ = best
    fallback = chosen.role == "head" and has_workers
    label = "负责人" if fallback else "网格员" if chosen.role == "grid_worker" else ""
    picked = (
        f"指派{label}{chosen.id} {chosen.name}：在岗，在办{load}/{chosen.capacity}单，"
        f"累计{total}单"
    )
    if fallback:
        return chosen.id, ("无对口一线人员可接，由负责人承接", picked)
    if grid is not None:
        return chosen.id, (f"{building}号楼属{grid.name}", picked)
    return chosen.id, (picked,)


def _scope(department: str, grid: Grid | None) -> str:
    return grid.name if grid is not None else department
