"""Learned routes: a rule only where the evidence is enough and clear, the grid's own first."""

from __future__ import annotations

import random

import pytest

from routing.learning import LearnedRoutes, LearnedRule, Outcome

pytestmark = pytest.mark.unit


def _many(category: str, grid: str | None, owner: str, n: int) -> list[Outcome]:
    return [Outcome(category=category, grid=grid, first_lead="property", final_owner=owner)] * n


@pytest.mark.parametrize(
    ("owners", "expected"),
    [
        ({"a": 3}, ("a", 3, 1.0)),  # exactly min_support
        ({"a": 2}, None),  # too little support
        ({"a": 3, "b": 2}, ("a", 3, 0.6)),  # exactly min_share
        ({"a": 3, "b": 3}, None),  # no clear majority
        ({"a": 4, "b": 3}, None),  # 57% < 60%
        ({"a": 9, "b": 1, "c": 1}, ("a", 9, 9 / 11)),
        ({}, None),
    ],
)
def test_thresholds(owners: dict[str, int], expected: tuple | None) -> None:
    outcomes = [o for owner, n in owners.items() for o in _many("water_leak", None, owner, n)]
    learned = LearnedRoutes.from_outcomes(outcomes)
    assert learned.suggest("water_leak", None) == (
        None if expected is None else (expected[0], expected[1], pytest.approx(expected[2]))
    )


def test_custom_thresholds() -> None:
    outcomes = _many("parking", None, "police", 5) + _many("parking", None, "property", 5)
    assert LearnedRoutes.from_outcomes(outcomes, min_share=0.5).suggest("parking", None) == (
        "police", 5, 0.5)  # a tie goes to the lower department id, every time
    assert LearnedRoutes.from_outcomes(outcomes, min_support=6, min_share=0.5).suggest(
        "parking", None) is None


def test_grid_rule_first_then_community_wide() -> None:
    outcomes = (
        _many("illegal_construction", "grid1", "housing_bureau", 4)
        + _many("illegal_construction", "grid2", "urban_management", 6)
        + _many("illegal_construction", "grid3", "housing_bureau", 1)
    )
    learned = LearnedRoutes.from_outcomes(outcomes)
    assert learned.suggest("illegal_construction", "grid1") == ("housing_bureau", 4, 1.0)
    assert learned.suggest("illegal_construction", "grid2") == ("urban_management", 6, 1.0)
    # grid3 has too little evidence of its own, and community-wide 6 of 11 (55%) is unclear
    assert learned.suggest("illegal_construction", "grid3") is None
    more = LearnedRoutes.from_outcomes(outcomes + _many("illegal_construction", None,
                                                        "urban_management", 4))
    assert more.suggest("illegal_construction", "grid3") == ("urban_management", 10, 10 / 15)
    assert more.suggest("illegal_construction", None) == ("urban_management", 10, 10 / 15)
    rule = more.rule("illegal_construction", "grid3")
    assert rule is not None and rule.grid is None and rule.total == 15


def test_unknown_category_has_no_suggestion() -> None:
    learned = LearnedRoutes.from_outcomes(_many("water_leak", "grid1", "property", 5))
    assert learned.suggest("heating", "grid1") is None
    assert LearnedRoutes().suggest("water_leak", None) is None


def test_outcomes_without_an_owner_are_ignored() -> None:
    outcomes = _many("other", None, "", 10) + _many("other", None, "street_office", 3)
    assert LearnedRoutes.from_outcomes(outcomes).suggest("other", None) == (
        "street_office", 3, 1.0)


def test_rules_are_ordered_and_deterministic() -> None:
    rng = random.Random(7)
    outcomes = [
        Outcome(rng.choice(["water_leak", "parking"]), rng.choice([None, "grid1", "grid2"]),
                "property", rng.choice(["property", "property", "police"]))
        for _ in range(300)
    ]
    first = LearnedRoutes.from_outcomes(outcomes)
    again = LearnedRoutes.from_outcomes(list(reversed(outcomes)))
    assert first == again
    keys = [(r.category, r.grid or "") for r in first.rules]
    assert keys == sorted(keys)
    for rule in first.rules:
        assert isinstance(rule, LearnedRule)
        assert rule.support >= 3 and rule.share >= 0.6
        assert rule.share == pytest.approx(rule.support / rule.total)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_support": 0}, "min_support"),
        ({"min_support": True}, "min_support"),
        ({"min_share": 0.4}, "min_share"),
        ({"min_share": 1.1}, "min_share"),
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LearnedRoutes.from_outcomes([], **kwargs)


def test_learned_routes_are_immutable() -> None:
    learned = LearnedRoutes.from_outcomes(_many("water_leak", None, "property", 3))
    with pytest.raises(AttributeError):
        learned.rules = ()  # type: ignore[misc]
