"""The request classifier's model, free of Rasa: features, estimators, report_* collapsing.

Features are TF-IDF over character n-grams of the normalised text plus TF-IDF over
the jieba tokens. Digits are folded to "0" first, so 3号楼 and 15号楼 look alike.
The estimator is chosen by name (see ESTIMATORS). The defaults (LinearSVC, C=1, char
1-2-grams, token weight 0.3, softmax scale 5) were chosen by 5-fold cross-validation on
data/nlu and checked on tests/nlu/heldout.yml; re-run with ``python -m nlu.evaluate``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ESTIMATORS",
    "REPORT_PREFIX",
    "ModelConfig",
    "RequestModel",
    "Decision",
    "decide",
]

REPORT_PREFIX = "report_"
ESTIMATORS = (
    "logreg",
    "logreg_multinomial",
    "linear_svc",
    "linear_svc_calibrated",
    "complement_nb",
)
# Regularisation chosen by 5-fold cross-validation on data/nlu (see nlu.evaluate).
DEFAULT_C = {
    "logreg": 100.0,
    "logreg_multinomial": 100.0,
    "linear_svc": 1.0,
    "linear_svc_calibrated": 1.0,
}
# Intents a life-safety rule may turn into report_emergency (not status_query, deny ...).
OVERRIDE_INTENTS = ("greet", "chitchat", "out_of_scope", "inform", "request_human")
# A life-safety kind that fixes the category whatever the classifier thought.
_KIND_TO_CATEGORY = {"trapped": "elevator_trapped", "gas": "gas_leak"}
_DIGITS = re.compile(r"\d+")
_NOISE_TOKEN = re.compile(r"^[\s\W_]+$")


class UnknownEstimatorError(ValueError):
    """Raised when the config names an estimator this module does not provide."""


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the request classifier."""

    estimator: str = "linear_svc"
    char_ngram_min: int = 1
    char_ngram_max: int = 2
    token_weight: float = 0.3  # scale of the token block; 0 leaves tokens out
    c: float | None = None  # None: the estimator's default in DEFAULT_C
    nb_alpha: float = 3.0
    # LinearSVC margins are turned into probabilities by softmax(scale * margin); 5 gave
    # the best calibration on the held-out set (expected calibration error 0.03).
    softmax_scale: float = 5.0
    random_state: int = 42

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise UnknownEstimatorError(
                f"unknown estimator {self.estimator!r}: "
                f"set 'classifier' to one of {', '.join(ESTIMATORS)}"
            )



# The RequestClassifier component's options and their defaults (config.yml may override
# any of them). Kept here, free of Rasa, so tools can build the same model without it.
CLASSIFIER_DEFAULTS: dict[str, Any] = {
    "classifier": "linear_svc",
    "C": None,
    "char_ngram_range": [1, 2],
    "token_weight": 0.3,
    "nb_alpha": 3.0,
    "softmax_scale": 5.0,
    "random_state": 42,
    "ranking_length": 10,
    "category_ranking_length": 5,
    "emergency_categories": ["elevator_trapped", "gas_leak"],
    "emergency_override_intents": [
        "greet",
        "chitchat",
        "out_of_scope",
        "inform",
        "request_human",
    ],
    "collapse_first": True,
    "min_label_probability": 0.15,
    "min_known_fraction": 0.5,
    }


def model_config_from(config: Mapping[str, Any]) -> ModelConfig:
    """Translate the component's options into the model's hyper-parameters."""
    low, high = config["char_ngram_range"]
    return ModelConfig(
        estimator=config["classifier"],
        char_ngram_min=int(low),
        char_ngram_max=int(high),
        token_weight=float(config["token_weight"]),
        c=None if config["C"] is None else float(config["C"]),
        nb_alpha=float(config["nb_alpha"]),
        softmax_scale=float(config["softmax_scale"]),
        random_state=int(config["random_state"]),
    )

def feature_text(text: str) -> str:
    """Return the text the character n-grams are taken from."""
    return _DIGITS.sub("0", text.lower())


def feature_tokens(tokens: Sequence[str]) -> list[str]:
    """Return the token features: no whitespace/punctuation, digits folded."""
    return [_DIGITS.sub("0", t.lower()) for t in tokens if t.strip() and not _NOISE_TOKEN.match(t)]


def _identity(tokens: list[str]) -> list[str]:
    # Module-level so fitted vectorizers stay picklable.
    return tokens


@dataclass
class RequestModel:
    """Vectorizers plus one sklearn estimator, predicting a probability per training label."""

    config: ModelConfig = field(default_factory=ModelConfig)
    char_vectorizer: Any = None
    token_vectorizer: Any = None
    estimator: Any = None
    labels: list[str] = field(default_factory=list)
    # Every word seen in training; unseen words mean the model is guessing.
    vocabulary: frozenset[str] = frozenset()

    def fit(
        self, texts: Sequence[str], tokens: Sequence[Sequence[str]], labels: Sequence[str]
    ) -> None:
        """Fit vectorizers and estimator on normalised texts, their tokens and their labels."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        if len(set(labels)) < 2:
            raise ValueError("training needs at least two intents: add examples for more intents")
        cfg = self.config
        self.char_vectorizer = TfidfVectorizer(
            analyzer="char",
            ngram_range=(cfg.char_ngram_min, cfg.char_ngram_max),
            sublinear_tf=True,
            min_df=1,
        )
        self.token_vectorizer = (
            TfidfVectorizer(analyzer=_identity, sublinear_tf=True, min_df=1)
            if cfg.token_weight > 0
            else None
        )
        matrix = self._features(texts, tokens, fit=True)
        self.vocabulary = frozenset(word for row in tokens for word in feature_tokens(row))
        self.estimator = _build_estimator(cfg)
        self.estimator.fit(matrix, np.asarray(labels))
        _fortran_weights(self.estimator)
        self.labels = [str(label) for label in self.estimator.classes_]

    def predict_proba(self, texts: Sequence[str], tokens: Sequence[Sequence[str]]) -> np.ndarray:
        """Return an (n_texts, n_labels) array of probabilities in the order of self.labels."""
        if self.estimator is None:
            raise RuntimeError(
                "the request model is not trained: call fit() or load a trained model"
            )
        matrix = self._features(texts, tokens, fit=False)
        if self.config.estimator == "linear_svc":
            scores = np.asarray(self.estimator.decision_function(matrix), dtype=float)
            if scores.ndim == 1:
                # Two labels: LinearSVC gives one margin, positive for the second label.
                scores = np.column_stack([-scores, scores])
            return _softmax(scores * self.config.softmax_scale)
        return np.asarray(self.estimator.predict_proba(matrix), dtype=float)

    def known_fraction(self, tokens: Sequence[str]) -> float:
        """Return the share of a message's words seen in training (1.0 for no words)."""
        words = feature_tokens(tokens)
        if not words or not self.vocabulary:
            return 1.0
        return sum(1 for word in words if word in self.vocabulary) / len(words)

    def _features(self, texts: Sequence[str], tokens: Sequence[Sequence[str]], *, fit: bool) -> Any:
        from scipy.sparse import hstack

        char_input = [feature_text(t) for t in texts]
        parts = [
            self.char_vectorizer.fit_transform(char_input)
            if fit
            else self.char_vectorizer.transform(char_input)
        ]
        if self.token_vectorizer is not None:
            token_input = [feature_tokens(t) for t in tokens]
            block = (
                self.token_vectorizer.fit_transform(token_input)
                if fit
                else self.token_vectorizer.transform(token_input)
            )
            parts.append(block * self.config.token_weight)
        return hstack(parts).tocsr()


def _build_estimator(cfg: ModelConfig) -> Any:
    c = cfg.c if cfg.c is not None else DEFAULT_C.get(cfg.estimator, 1.0)
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import ComplementNB
    from sklearn.svm import LinearSVC

    if cfg.estimator == "logreg":
        # liblinear one-vs-rest: 0.5 s here against 15 s for the multinomial lbfgs fit.
        return LogisticRegression(
            C=c, solver="liblinear", class_weight="balanced", random_state=cfg.random_state
        )
    if cfg.estimator == "logreg_multinomial":
        return LogisticRegression(
            C=c,
            solver="saga",
            max_iter=3000,
            class_weight="balanced",
            random_state=cfg.random_state,
        )
    if cfg.estimator == "linear_svc":
        return LinearSVC(C=c, class_weight="balanced", random_state=cfg.random_state)
    if cfg.estimator == "linear_svc_calibrated":
        base = LinearSVC(C=c, class_weight="balanced", random_state=cfg.random_state)
        return CalibratedClassifierCV(base, cv=3, method="sigmoid")
    return ComplementNB(alpha=cfg.nb_alpha)


def _fortran_weights(estimator: Any) -> None:
    """Store weight matrices column-major so sparse @ weights.T needs no copy.

    scipy copies a non-contiguous dense operand on every product; with 37 labels x 26k
    features that copy was 3-7 ms of each single-message prediction.
    """
    inner = [estimator]
    for calibrated in getattr(estimator, "calibrated_classifiers_", []):
        inner.append(
            getattr(calibrated, "base_estimator", None) or getattr(calibrated, "estimator", None)
        )
    for item in inner:
        for name in ("coef_", "feature_log_prob_"):
            weights = getattr(item, name, None)
            if isinstance(weights, np.ndarray) and weights.ndim == 2:
                setattr(item, name, np.asfortranarray(weights))


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Decision:
    """The collapsed prediction for one message."""

    intent: str
    confidence: float
    ranking: list[dict[str, Any]]
    category: str
    category_confidence: float
    category_ranking: list[dict[str, Any]]
    is_report: bool


def decide(
    labels: Sequence[str],
    probabilities: Sequence[float],
    *,
    emergency_kind: str | None = None,
    emergency_categories: Sequence[str] = ("elevator_trapped", "gas_leak"),
    override_intents: Sequence[str] = OVERRIDE_INTENTS,
    ranking_length: int = 10,
    category_ranking_length: int = 5,
    collapse_first: bool = True,
    min_label_probability: float = 0.15,
    known_fraction: float = 1.0,
    min_known_fraction: float = 0.5,
) -> Decision:
    """Collapse report_* labels into report_problem/report_emergency and pick a category.

    The report intent's confidence is the summed probability of all report_* labels.
    Category confidences are conditional on the message being a report (p / sum), so a
    category can be read for any text. With ``collapse_first`` the report_* mass competes
    as one intent; otherwise only the single best label decides.

    Unfamiliar text, where no label reaches ``min_label_probability``, keeps the best
    single probability as its confidence: summing 24 flat report_* probabilities would
    otherwise make gibberish a confident report (FallbackClassifier then takes it).

    Text whose words were mostly never seen in training (``known_fraction`` below
    ``min_known_fraction``: "zxcv qwer", a foreign language) is unfamiliar too, and its
    confidence is scaled by the share of known words, so it reaches the fallback.

    A safety-rule ``emergency_kind`` turns a report into report_emergency, and also the
    intents in ``override_intents`` (a frightened 救命 着火了 must never end as chitchat).
    """
    if len(labels) != len(probabilities) or not labels:
        raise ValueError("labels and probabilities must be non-empty and of equal length")
    pairs = [(str(label), float(p)) for label, p in zip(labels, probabilities, strict=True)]
    reports = sorted(
        ((label[len(REPORT_PREFIX) :], p) for label, p in pairs if label.startswith(REPORT_PREFIX)),
        key=lambda item: -item[1],
    )
    others = [(label, p) for label, p in pairs if not label.startswith(REPORT_PREFIX)]
    report_mass = sum(p for _, p in reports)
    best_label, best_p = max(pairs, key=lambda item: item[1])
    familiar = best_p >= min_label_probability and known_fraction >= min_known_fraction

    category_ranking = [
        {"name": name, "confidence": (p / report_mass) if report_mass > 0 else 0.0}
        for name, p in reports[:category_ranking_length]
    ]
    category = reports[0][0] if reports else "other"
    category_confidence = category_ranking[0]["confidence"] if category_ranking else 0.0
    if emergency_kind in _KIND_TO_CATEGORY and reports:
        category = _KIND_TO_CATEGORY[emergency_kind]
        category_confidence = next(
            (p / report_mass for name, p in reports if name == category and report_mass > 0), 0.0
        )

    best_other = max((p for _, p in others), default=0.0)
    if collapse_first and familiar and reports and report_mass > best_other:
        best_label = REPORT_PREFIX + reports[0][0]  # together the reports outweigh any intent
    overridden = emergency_kind is not None and bool(reports) and best_label in override_intents
    is_report = best_label.startswith(REPORT_PREFIX) or overridden
    emergency = emergency_kind is not None or (familiar and category in emergency_categories)
    report_intent = "report_emergency" if is_report and emergency else "report_problem"

    if is_report:
        intent = report_intent
        confidence = report_mass if familiar or emergency_kind is not None else best_p
    else:
        intent, confidence = best_label, dict(pairs)[best_label]
    if emergency_kind is None and known_fraction < min_known_fraction:
        confidence *= known_fraction
    ranking = sorted(
        [{"name": report_intent, "confidence": report_mass}]
        + [{"name": label, "confidence": p} for label, p in others],
        key=lambda item: -item["confidence"],
    )
    # Keep the ranking in step with the decision (FallbackClassifier reads both).
    ranking = [{"name": intent, "confidence": confidence}] + [
        r for r in ranking if r["name"] != intent
    ]
    return Decision(
        intent=intent,
        confidence=confidence,
        ranking=ranking[:ranking_length],
        category=category,
        category_confidence=category_confidence,
        category_ranking=category_ranking,
        is_report=is_report,
    )
