"""Tests for nlu.request_model: the report_* collapse and the sklearn model wrapper."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from nlu.request_model import ESTIMATORS, ModelConfig, RequestModel, UnknownEstimatorError, decide

LABELS = [
    "greet",
    "status_query",
    "chitchat",
    "report_water_leak",
    "report_elevator_fault",
    "report_elevator_trapped",
]


def test_report_label_collapses_into_report_problem_with_summed_confidence() -> None:
    decision = decide(LABELS, [0.1, 0.1, 0.0, 0.5, 0.2, 0.1])
    assert decision.intent == "report_problem"
    assert decision.confidence == pytest.approx(0.8)
    assert decision.category == "water_leak"
    assert decision.category_confidence == pytest.approx(0.5 / 0.8)
    assert [r["name"] for r in decision.category_ranking] == [
        "water_leak",
        "elevator_fault",
        "elevator_trapped",
    ]
    assert decision.is_report


def test_ranking_holds_one_report_entry_and_the_other_intents() -> None:
    decision = decide(LABELS, [0.15, 0.05, 0.0, 0.5, 0.2, 0.1])
    assert [r["name"] for r in decision.ranking] == [
        "report_problem",
        "greet",
        "status_query",
        "chitchat",
    ]
    assert decision.ranking[0]["confidence"] == pytest.approx(0.8)


@pytest.mark.parametrize("category", ["elevator_trapped"])
def test_emergency_category_gives_report_emergency(category: str) -> None:
    decision = decide(LABELS, [0.0, 0.0, 0.0, 0.1, 0.2, 0.7])
    assert decision.intent == "report_emergency"
    assert decision.category == category


def test_safety_rule_turns_any_report_into_an_emergency() -> None:
    decision = decide(LABELS, [0.0, 0.0, 0.0, 0.8, 0.1, 0.1], emergency_kind="medical")
    assert decision.intent == "report_emergency"
    assert decision.category == "water_leak"


def test_trapped_rule_fixes_the_category() -> None:
    decision = decide(LABELS, [0.0, 0.0, 0.0, 0.1, 0.6, 0.3], emergency_kind="trapped")
    assert decision.intent == "report_emergency"
    assert decision.category == "elevator_trapped"
    assert decision.category_confidence == pytest.approx(0.3)


def test_non_report_intent_keeps_its_name_and_still_gets_a_category() -> None:
    decision = decide(LABELS, [0.7, 0.1, 0.0, 0.05, 0.1, 0.05])
    assert decision.intent == "greet"
    assert decision.confidence == pytest.approx(0.7)
    assert decision.category == "elevator_fault"
    assert not decision.is_report


def test_emergency_overrides_chitchat_but_not_status_query() -> None:
    probabilities = [0.0, 0.0, 0.6, 0.2, 0.1, 0.1]
    assert decide(LABELS, probabilities, emergency_kind="fire").intent == "report_emergency"
    probabilities = [0.0, 0.6, 0.0, 0.2, 0.1, 0.1]
    assert decide(LABELS, probabilities, emergency_kind="fire").intent == "status_query"


def test_overridden_intent_is_first_in_the_ranking() -> None:
    decision = decide(LABELS, [0.0, 0.0, 0.7, 0.1, 0.1, 0.1], emergency_kind="fire")
    assert decision.ranking[0]["name"] == "report_emergency"


def test_collapse_first_lets_the_report_mass_win() -> None:
    probabilities = [0.35, 0.05, 0.0, 0.2, 0.2, 0.2]
    assert decide(LABELS, probabilities).intent == "report_problem"
    assert decide(LABELS, probabilities, collapse_first=False).intent == "greet"
    assert decide(LABELS, probabilities, collapse_first=False).ranking[0]["name"] == "greet"


def test_ranking_lengths_are_applied() -> None:
    decision = decide(
        LABELS, [0.1, 0.1, 0.1, 0.3, 0.2, 0.2], ranking_length=2, category_ranking_length=1
    )
    assert len(decision.ranking) == 2
    assert len(decision.category_ranking) == 1


def test_decide_rejects_mismatched_input() -> None:
    with pytest.raises(ValueError):
        decide(LABELS, [1.0])
    with pytest.raises(ValueError):
        decide([], [])


TEXTS = {
    "greet": ["你好", "您好", "喂 你好", "早上好", "哈喽", "你好啊"],
    "report_water_leak": [
        "厨房漏水了",
        "楼上往下渗水",
        "卫生间漏水",
        "水管爆了 漏水",
        "天花板渗水",
        "墙在漏水",
    ],
    "report_elevator_fault": [
        "电梯坏了",
        "电梯不动了",
        "电梯又坏了",
        "电梯门关不上",
        "电梯按钮坏了",
        "电梯异响",
    ],
}


def _train(estimator: str) -> RequestModel:
    texts = [t for items in TEXTS.values() for t in items]
    labels = [label for label, items in TEXTS.items() for _ in items]
    model = RequestModel(config=ModelConfig(estimator=estimator))
    model.fit(texts, [list(t) for t in texts], labels)
    return model


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_estimator_learns_a_toy_task(estimator: str) -> None:
    model = _train(estimator)
    probabilities = model.predict_proba(
        ["电梯又不动了", "你好啊"], [list("电梯又不动了"), list("你好啊")]
    )
    assert probabilities.shape == (2, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert model.labels[int(probabilities[0].argmax())] == "report_elevator_fault"
    assert model.labels[int(probabilities[1].argmax())] == "greet"


def test_model_survives_pickling() -> None:
    model = _train("logreg")
    restored = pickle.loads(pickle.dumps(model))
    text = ["卫生间漏水了"]
    assert np.allclose(
        restored.predict_proba(text, [list(text[0])]), model.predict_proba(text, [list(text[0])])
    )


def test_digits_are_folded_so_building_numbers_do_not_matter() -> None:
    model = _train("logreg")
    a = model.predict_proba(["3号楼电梯坏了"], [["3", "号楼", "电梯", "坏", "了"]])
    b = model.predict_proba(["15号楼电梯坏了"], [["15", "号楼", "电梯", "坏", "了"]])
    assert np.allclose(a, b)


def test_unknown_estimator_is_rejected_with_the_choices() -> None:
    with pytest.raises(UnknownEstimatorError, match="logreg"):
        ModelConfig(estimator="random_forest")


def test_predict_before_fit_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        RequestModel().predict_proba(["你好"], [["你好"]])


def test_fit_needs_two_intents() -> None:
    with pytest.raises(ValueError, match="two intents"):
        RequestModel().fit(["你好", "您好"], [["你好"], ["您好"]], ["greet", "greet"])


FLAT = [1 / len(LABELS)] * len(LABELS)


def test_unfamiliar_text_is_not_a_confident_report() -> None:
    decision = decide(LABELS, FLAT, min_label_probability=0.2)
    assert decision.confidence == pytest.approx(1 / len(LABELS))
    assert decision.intent != "report_emergency"
    assert not decision.is_report


def test_unfamiliar_text_with_an_emergency_rule_is_still_an_emergency() -> None:
    decision = decide(
        LABELS, [0.1, 0.1, 0.3, 0.2, 0.2, 0.1], emergency_kind="gas", min_label_probability=0.5
    )
    assert decision.intent == "report_emergency"
    assert decision.confidence == pytest.approx(0.5)


def test_familiarity_gate_can_be_switched_off() -> None:
    decision = decide(LABELS, FLAT, min_label_probability=0.0)
    assert decision.intent == "report_problem"  # three of six flat labels are reports
    assert decision.confidence == pytest.approx(0.5)


def test_mostly_unknown_words_are_not_a_confident_report() -> None:
    labels = ["report_water_leak", "report_heating", "greet"]
    probabilities = [0.5, 0.3, 0.2]
    familiar = decide(labels, probabilities, known_fraction=1.0)
    assert familiar.intent == "report_problem" and familiar.confidence == pytest.approx(0.8)
    unknown = decide(labels, probabilities, known_fraction=0.0)
    assert unknown.confidence == 0.0
    partly = decide(labels, probabilities, known_fraction=0.4)
    assert partly.confidence == pytest.approx(0.5 * 0.4)
    # A safety cue is never silenced by unfamiliar words.
    urgent = decide(labels, probabilities, known_fraction=0.0, emergency_kind="fire")
    assert urgent.intent == "report_emergency" and urgent.confidence > 0.5


def test_known_fraction_counts_words_seen_in_training() -> None:
    model = RequestModel()
    model.fit(["电梯坏了", "你好"], [["电梯", "坏", "了"], ["你好"]], ["report_elevator_fault", "greet"])
    assert model.known_fraction(["电梯", "坏", "了"]) == 1.0
    assert model.known_fraction(["zxcv", "qwer"]) == 0.0
    assert model.known_fraction(["电梯", "broken"]) == 0.5
    assert model.known_fraction([" ", "？"]) == 1.0


def test_two_labels_give_two_probabilities() -> None:
    model = RequestModel(ModelConfig(estimator="linear_svc"))
    model.fit(["电梯坏了", "电梯不动了", "你好", "您好啊"],
              [["电梯", "坏", "了"], ["电梯", "不动", "了"], ["你好"], ["您好", "啊"]],
              ["report_elevator_fault", "report_elevator_fault", "greet", "greet"])
    probabilities = model.predict_proba(["电梯又坏了"], [["电梯", "又", "坏", "了"]])
    assert probabilities.shape == (1, 2)
    assert model.labels[int(probabilities[0].argmax())] == "report_elevator_fault"
    assert probabilities.sum() == pytest.approx(1.0)
