"""Returned orders (退单): where an order goes when a department says it is not theirs.

One bounded hop at a time: the next-best department that has not returned it yet, and
after two returns the community's arbitration (兜底) decides, so an order never ping-pongs.
"Incomplete" and "duplicate" returns do not move the order at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from routing.catalogue import FORBIDDEN_LEADS, Catalogue
from routing.dispatch import TicketFacts, department_name
from routing.learning import LearnedRoutes

RETURN_REASONS: dict[str, str] = {
    "not_our_function": "职能不符",
    "not_our_area": "属地不符",
    "incomplete": "信息不全",
    "duplicate": "重复",
}
ARBITRATION: tuple[str, str] = ("residents_committee", "street_office")  # 兜底
MAX_RETURNS = 2  # the second return of an order goes to arbitration
_STAYS = frozenset({"incomplete", "duplicate"})


class UnknownReturnReason(ValueError):
    """A return reason code that is not in RETURN_REASONS."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        codes = ", ".join(f"{k}（{v}）" for k, v in RETURN_REASONS.items())
        super().__init__(f"unknown return reason {reason!r}; use one of: {codes}")


@dataclass(frozen=True)
class Reroute:
    department: str | None  # None: the order does not move (or nobody is left, see reasons)
    arbitration: bool
    reasons: tuple[str, ...]


def reroute(
    *,
    ticket: TicketFacts,
    returned_by: Sequence[str],
    reason: str,
    catalogue: Catalogue,
    learned: LearnedRoutes | None = None,
) -> Reroute:
    """Decide where a returned order goes next; returned_by lists returners, oldest first."""
    if reason not in RETURN_REASONS:
        raise UnknownReturnReason(reason)
    if not returned_by:
        raise ValueError("returned_by must list at least the department returning the order now")
    category = catalogue.category(ticket.category)
    returner = department_name(catalogue, returned_by[-1])
    why = f"退回原因：{RETURN_REASONS[reason]}（{returner}退回，第{len(returned_by)}次）"
    if reason == "incomplete":
        return Reroute(None, False, (why, "不转派：请坐席联系居民补全信息后重新派给原部门"))
    if reason == "duplicate":
        return Reroute(None, False, (why, "不转派：与已有工单重复，请核对后按重复件关闭"))
    if len(returned_by) >= MAX_RETURNS:
        names = "、".join(department_name(catalogue, d) for d in returned_by)
        return _arbitrate(catalogue, returned_by, (why, f"已退回{len(returned_by)}次（{names}）"))
    excluded = set(returned_by) | FORBIDDEN_LEADS.get(category.id, frozenset())
    known = {d.id for d in catalogue.departments}
    for dept, because in _candidates(ticket, catalogue, learned):
        if dept in known and dept not in excluded:
            return Reroute(dept, False, (why, f"改派{department_name(catalogue, dept)}：{because}"))
    return _arbitrate(catalogue, returned_by, (why, "没有其他合适部门"))


def _candidates(
    ticket: TicketFacts, catalogue: Catalogue, learned: LearnedRoutes | None
) -> list[tuple[str, str]]:
    """List (department, why) to try: learned, catalogue lead, alternates, assisting, ranking."""
    category = catalogue.category(ticket.category)
    found: list[tuple[str, str]] = []
    # No roster here, so the community-wide rule is the one that applies.
    suggestion = learned.suggest(category.id, None) if learned is not None else None
    if suggestion is not None:
        dept, support, share = suggestion
        found.append((dept, f"经验规则，同类工单{support}单中{share:.0%}由其办结"))
    # Matters when a learned rule, not the catalogue, chose the department that returned it.
    found.append((category.lead, f"派单目录中{category.short_name}的首接部门"))
    found.extend((d, f"派单目录中{category.short_name}的备选部门") for d in category.alternates)
    found.extend((d, f"派单目录中{category.short_name}的协同部门") for d in category.assisting)
    for other, _score in ticket.ranking:
        if other != category.id and catalogue.has_category(other):
            alt = catalogue.category(other)
            found.append((alt.lead, f"可能属于“{alt.short_name}”，该类由其首接"))
    return found


def _arbitrate(catalogue: Catalogue, returned_by: Sequence[str], why: tuple[str, ...]) -> Reroute:
    committee, street = ARBITRATION
    if committee not in returned_by:
        target = committee
    elif street not in returned_by:
        target = street
    else:
        return Reroute(None, True, why + ("居委会与街道均已退回，请社区主任协调定责",))
    name = department_name(catalogue, target)
    return Reroute(target, True, why + (f"转{name}兜底协调，定责后派单",))
