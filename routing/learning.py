"""Learned routes (经验派单): who actually ends up owning a category's orders, per grid.

Built from closed orders: for each (category, grid) and for each category community-wide,
the department that most often owned the order at the end. A rule exists only when that
department has enough support (orders) and a clear majority (share); dispatch may then let
it lead instead of the catalogue, and returns try it first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Outcome:
    category: str
    grid: str | None  # Grid.id of the order's building, None when unknown
    first_lead: str  # department first asked to lead
    final_owner: str  # department that owned the order when it closed


@dataclass(frozen=True)
class LearnedRule:
    category: str
    grid: str | None  # None = community-wide
    department: str
    support: int  # orders the department ended up owning
    total: int  # orders of this category (and grid) seen
    share: float  # support / total


@dataclass(frozen=True)
class LearnedRoutes:
    rules: tuple[LearnedRule, ...] = ()
    _index: Mapping[tuple[str, str | None], LearnedRule] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {(r.category, r.grid): r for r in self.rules})

    @classmethod
    def from_outcomes(
        cls, outcomes: Iterable[Outcome], *, min_support: int = 3, min_share: float = 0.6
    ) -> LearnedRoutes:
        """Learn one rule per (category, grid) and per category where the evidence is clear."""
        if isinstance(min_support, bool) or not isinstance(min_support, int) or min_support < 1:
            raise ValueError(f"min_support must be a whole number >= 1, got {min_support!r}")
        if not 0.5 <= min_share <= 1.0:
            # Below one half two departments could both claim a category.
            raise ValueError(f"min_share must be between 0.5 and 1.0, got {min_share!r}")
        counts: dict[tuple[str, str | None], Counter[str]] = {}
        for outcome in outcomes:
            if not outcome.final_owner:
                continue
            counts.setdefault((outcome.category, None), Counter())[outcome.final_owner] += 1
            if outcome.grid is not None:
                key = (outcome.category, outcome.grid)
                counts.setdefault(key, Counter())[outcome.final_owner] += 1
        rules = []
        for (category, grid), owners in sorted(counts.items(), key=lambda kv: _sort_key(kv[0])):
            total = sum(owners.values())
            # Most orders first, then department id, so equal evidence decides the same way.
            department, support = min(owners.items(), key=lambda kv: (-kv[1], kv[0]))
            share = support / total
            if support >= min_support and share >= min_share:
                rules.append(LearnedRule(category, grid, department, support, total, share))
        return cls(rules=tuple(rules))

    def suggest(self, category: str, grid: str | None) -> tuple[str, int, float] | None:
        """Return (department, support, share) for a category in a grid, or None."""
        rule = self.rule(category, grid)
        return None if rule is None else (rule.department, rule.support, rule.share)

    def rule(self, category: str, grid: str | None) -> LearnedRule | None:
        """Return the grid's own rule, else the community-wide one, else None."""
        if grid is not None and (category, grid) in self._index:
            return self._index[(category, grid)]
        return self._index.get((category, None))


def _sort_key(key: tuple[str, str | None]) -> tuple[str, str]:
    category, grid = key
    return (category, "" if grid is None else grid)
