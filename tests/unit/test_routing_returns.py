"""Returned orders: one bounded hop to the next-best department, then arbitration."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from routing.catalogue import TAXONOMY, Catalogue
from routing.dispatch import TicketFacts
from routing.learning import LearnedRoutes, LearnedRule, Outcome
from routing.returns import (
    ARBITRATION,
    RETURN_REASONS,
    Reroute,
    UnknownReturnReason,
    reroute,
)

pytestmark = pytest.mark.unit


def _ticket(category: str, ranking: tuple[tuple[str, float], ...] = ()) -> TicketFacts:
    return TicketFacts(number="GD20261125-0002", category=category, urgency="P3",
                       building="3", ranking=ranking)


def test_return_reason_codes() -> None:
    assert RETURN_REASONS == {"not_our_function": "职能不符", "not_our_area": "属地不符",
                              "incomplete": "信息不全", "duplicate": "重复"}
    assert ARBITRATION == ("residents_committee", "street_office")


def test_unknown_reason_lists_the_known_ones(catalogue: Catalogue) -> None:
    with pytest.raises(UnknownReturnReason, match="'too_busy'.*not_our_function.*duplicate"):
        reroute(ticket=_ticket("water_leak"), returned_by=["property"], reason="too_busy",
                catalogue=catalogue)


def test_empty_returned_by_is_refused(catalogue: Catalogue) -> None:
    with pytest.raises(ValueError, match="returned_by must list"):
        reroute(ticket=_ticket("water_leak"), returned_by=[], reason="not_our_function",
                catalogue=catalogue)


@pytest.mark.parametrize(
    ("reason", "says"),
    [("incomplete", "补全信息"), ("duplicate", "按重复件关闭")],
)
@pytest.mark.parametrize("returned_by", [["property"], ["property", "utilities_water"]])
def test_incomplete_and_duplicate_do_not_move_the_order(
    catalogue: Catalogue, reason: str, says: str, returned_by: list[str]
) -> None:
    result = reroute(ticket=_ticket("water_leak"), returned_by=returned_by, reason=reason,
                     catalogue=catalogue)
    assert (result.department, result.arbitration) == (None, False)
    assert result.reasons[0].startswith(f"退回原因：{RETURN_REASONS[reason]}（")
    assert says in result.reasons[1]


@pytest.mark.parametrize(
    ("category", "ranking", "returned_by", "expected", "because"),
    [
        # catalogue alternates first
        ("water_leak", (), ["property"], "utilities_water", "备选部门"),
        ("construction_noise", (), ["urban_management"], "housing_bureau", "备选部门"),
        # then the assisting departments
        ("elevator_fault", (), ["property"], "elevator_maintenance", "协同部门"),
        ("water_outage", (), ["utilities_water"], "property", "协同部门"),
        ("medical_service", (("medical_service", 0.5),), ["health_center"], "civil_affairs",
         "备选部门"),
        ("public_facility", (("public_facility", 0.4), ("power_outage", 0.35)),
         ["property"], "urban_management", "备选部门"),
        # the classifier's next category only after them
        ("water_leak", (("water_leak", 0.4), ("heating", 0.35)),
         ["property"], "utilities_water", "备选部门"),
        ("fire_hazard", (("fire_hazard", 0.5), ("illegal_construction", 0.3)),
         ["property"], "fire_brigade", "协同部门"),
    ],
)
def test_next_best_department(
    catalogue: Catalogue, category: str, ranking: tuple, returned_by: list[str],
    expected: str, because: str
) -> None:
    result = reroute(ticket=_ticket(category, ranking), returned_by=returned_by,
                     reason="not_our_function", catalogue=catalogue)
    assert result == Reroute(expected, False, result.reasons)
    assert result.reasons[0].endswith("退回，第1次）")
    assert result.reasons[1].startswith(f"改派{catalogue.department(expected).name}：")
    assert because in result.reasons[1]


def _bare(catalogue: Catalogue, category_id: str) -> Catalogue:
    """Return the catalogue with one category stripped of alternates and assisting."""
    categories = tuple(
        replace(c, alternates=(), assisting=()) if c.id == category_id else c
        for c in catalogue.categories
    )
    return replace(catalogue, categories=categories)


@pytest.mark.parametrize(
    ("ranking", "expected"),
    [
        ((("water_leak", 0.5), ("heating", 0.3)), "utilities_heating"),
        ((("heating", 0.5), ("water_leak", 0.3)), "utilities_heating"),  # own category skipped
        ((("ufo", 0.5), ("gas_leak", 0.3)), "utilities_gas"),  # unknown category skipped
        ((("sanitation", 0.5), ("public_security", 0.3)), "police"),  # property returned
        ((("public_facility", 0.9),), "residents_committee"),  # nothing left: arbitration
        ((), "residents_committee"),
    ],
)
def test_classifier_ranking_supplies_the_next_candidates(
    catalogue: Catalogue, ranking: tuple, expected: str
) -> None:
    bare = _bare(catalogue, "water_leak")
    result = reroute(ticket=_ticket("water_leak", ranking), returned_by=["property"],
                     reason="not_our_area", catalogue=bare)
    assert result.department == expected
    if expected == "residents_committee":
        assert result.arbitration and "没有其他合适部门" in result.reasons
    else:
        assert not result.arbitration and "可能属于" in result.reasons[1]


def test_learned_suggestion_comes_first(catalogue: Catalogue) -> None:
    learned = LearnedRoutes(rules=(LearnedRule("water_leak", None, "police", 5, 5, 1.0),))
    result = reroute(ticket=_ticket("water_leak"), returned_by=["property"],
                     reason="not_our_function", catalogue=catalogue, learned=learned)
    assert result.department == "police"
    assert "经验规则，同类工单5单中100%由其办结" in result.reasons[1]


def test_learned_suggestion_already_returned_is_skipped(catalogue: Catalogue) -> None:
    learned = LearnedRoutes.from_outcomes(
        [Outcome("water_leak", None, "property", "property")] * 5
    )
    result = reroute(ticket=_ticket("water_leak"), returned_by=["property"],
                     reason="not_our_function", catalogue=catalogue, learned=learned)
    assert result.department == "utilities_water"


def test_catalogue_lead_is_tried_when_a_learned_lead_returned_it(catalogue: Catalogue) -> None:
    result = reroute(ticket=_ticket("illegal_construction"), returned_by=["housing_bureau"],
                     reason="not_our_function", catalogue=catalogue)
    assert result.department == "urban_management"
    assert "首接部门" in result.reasons[1]


@pytest.mark.parametrize(
    ("returned_by", "expected"),
    [
        (["property", "utilities_water"], "residents_committee"),
        (["residents_committee", "grid"], "street_office"),
        (["grid", "residents_committee"], "street_office"),
        (["property", "utilities_water", "residents_committee"], "street_office"),
    ],
)
def test_second_return_goes_to_arbitration(
    catalogue: Catalogue, returned_by: list[str], expected: str
) -> None:
    result = reroute(ticket=_ticket("water_leak"), returned_by=returned_by,
                     reason="not_our_function", catalogue=catalogue)
    assert (result.department, result.arbitration) == (expected, True)
    assert f"已退回{len(returned_by)}次" in result.reasons[1]
    assert "兜底" in result.reasons[-1]


def test_when_both_arbiters_returned_it_the_director_decides(catalogue: Catalogue) -> None:
    result = reroute(ticket=_ticket("other"), returned_by=["residents_committee", "street_office"],
                     reason="not_our_function", catalogue=catalogue)
    assert (result.department, result.arbitration) == (None, True)
    assert "社区主任" in result.reasons[-1]


def test_committee_returning_other_hands_it_to_the_street_office(catalogue: Catalogue) -> None:
    # other: lead residents_committee, alternate street_office; a first return is no
    # arbitration yet, even though the street office is also the last arbiter.
    result = reroute(ticket=_ticket("other"), returned_by=["residents_committee"],
                     reason="not_our_function", catalogue=catalogue)
    assert (result.department, result.arbitration) == ("street_office", False)


def test_property_never_owns_the_complaint_about_itself(catalogue: Catalogue) -> None:
    learned = LearnedRoutes(rules=(LearnedRule("property_fee", None, "property", 9, 9, 1.0),))
    ticket = _ticket("property_fee", (("property_fee", 0.5), ("water_leak", 0.4)))
    result = reroute(ticket=ticket, returned_by=["residents_committee"],
                     reason="not_our_function", catalogue=catalogue, learned=learned)
    assert result.department == "street_office"  # the alternate, not property


# --- invariants over many random return chains -----------------------------------------


def test_reroute_invariants_over_random_cases(catalogue: Catalogue) -> None:
    rng = random.Random(42)
    departments = [d.id for d in catalogue.departments]
    for case in range(1500):
        category = rng.choice(catalogue.category_ids)
        ranking = tuple((c, rng.random()) for c in rng.sample(catalogue.category_ids, 3))
        returned_by = rng.sample(departments, rng.randint(1, 4))
        learned = None
        if rng.random() < 0.5:
            learned = LearnedRoutes(rules=(LearnedRule(category, None, rng.choice(departments),
                                                       5, 5, 1.0),))
        reason = rng.choice(["not_our_function", "not_our_area"])
        result = reroute(ticket=_ticket(category, ranking), returned_by=returned_by,
                         reason=reason, catalogue=catalogue, learned=learned)
        context = f"case {case}: {category} {returned_by} -> {result}"
        assert result.department not in returned_by, context
        if category == "property_fee":
            assert result.department != "property", context
        if len(returned_by) >= 2:
            assert result.arbitration, context
        if result.arbitration:
            assert result.department in (*ARBITRATION, None), context
        if result.department is None:
            assert result.arbitration and set(ARBITRATION) <= set(returned_by), context
        assert result.reasons and all(isinstance(r, str) and r for r in result.reasons)


@pytest.mark.parametrize("category", TAXONOMY)
def test_a_chain_of_returns_reaches_arbitration_after_two(
    catalogue: Catalogue, category: str
) -> None:
    ticket = _ticket(category, ((category, 0.6), ("other", 0.2)))
    holder = catalogue.category(category).lead
    returned_by: list[str] = []
    for _ in range(2):
        returned_by.append(holder)
        result = reroute(ticket=ticket, returned_by=returned_by, reason="not_our_function",
                         catalogue=catalogue)
        assert result.department not in returned_by
        if result.arbitration:
            break
        assert result.department is not None
        holder = result.department
    assert result.arbitration, f"{category}: {returned_by}"
    assert len(returned_by) <= 2
