"""Compare request-classifier estimators on the held-out set (and by cross-validation).

Run from the project root:
    .venv/bin/python -m nlu.evaluate [--train data/nlu] [--heldout tests/nlu/heldout.yml]
                                     [--estimators logreg linear_svc ...] [--cv 5]

Texts go through the same ChineseNormalizer and JiebaTokenizer (with nlu/jieba) as
in the Rasa pipeline, so the numbers match what `rasa train` produces.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

from nlu.request_model import ESTIMATORS, REPORT_PREFIX, ModelConfig, RequestModel, decide
from nlu.safety import detect_emergency

DEFAULT_DICTIONARY = Path(__file__).parent / "jieba"


@dataclass(frozen=True)
class Example:
    """One normalised, tokenised example."""

    text: str
    tokens: list[str]
    label: str


@dataclass(frozen=True)
class Scores:
    """Measured quality and cost of one estimator."""

    accuracy: float
    macro_f1: float
    intent_accuracy: float
    category_accuracy: float
    train_seconds: float
    predict_ms: float
    low_confidence: float
    errors_caught: float


def load_examples(path: str, dictionary: Path = DEFAULT_DICTIONARY) -> list[Example]:
    """Load Rasa NLU data and run it through the normalizer and the jieba tokenizer."""
    from rasa.nlu.constants import TOKENS_NAMES
    from rasa.nlu.tokenizers.jieba_tokenizer import JiebaTokenizer
    from rasa.shared.nlu.constants import INTENT, TEXT
    from rasa.shared.nlu.training_data.loading import load_data

    from nlu.components import ChineseNormalizer

    data = load_data(path)
    ChineseNormalizer().process_training_data(data)
    config = {**JiebaTokenizer.get_default_config(), "dictionary_path": str(dictionary)}
    tokenizer = JiebaTokenizer.create(config, None, None, None)  # type: ignore[arg-type]
    tokenizer.process_training_data(data)
    return [
        Example(m.get(TEXT), [t.text for t in m.get(TOKENS_NAMES[TEXT])], m.get(INTENT))
        for m in data.intent_examples
    ]


def collapsed(label: str) -> str:
    """Return the intent a label shows after collapsing (report_* → report)."""
    return "report" if label.startswith(REPORT_PREFIX) else label


def score(
    config: ModelConfig,
    train: Sequence[Example],
    test: Sequence[Example],
    fallback_threshold: float = 0.3,
) -> Scores:
    """Fit on train and measure on test."""
    from sklearn.metrics import accuracy_score, f1_score

    model = RequestModel(config=config)
    started = time.perf_counter()
    model.fit([e.text for e in train], [e.tokens for e in train], [e.label for e in train])
    train_seconds = time.perf_counter() - started

    started = time.perf_counter()
    rows = [model.predict_proba([e.text], [e.tokens])[0] for e in test]
    predict_ms = (time.perf_counter() - started) * 1000 / max(len(test), 1)

    predicted = [model.labels[int(row.argmax())] for row in rows]
    gold = [e.label for e in test]
    intents_ok = categories_ok = reports = low = wrong = wrong_low = 0
    for example, row in zip(test, rows, strict=True):
        decision = decide(model.labels, row.tolist(), emergency_kind=detect_emergency(example.text))
        shown = "report" if decision.is_report else decision.intent
        intents_ok += shown == collapsed(example.label)
        low += decision.confidence < fallback_threshold
        if shown != collapsed(example.label):
            wrong += 1
            wrong_low += decision.confidence < fallback_threshold
        if example.label.startswith(REPORT_PREFIX):
            reports += 1
            categories_ok += REPORT_PREFIX + decision.category == example.label
    return Scores(
        accuracy=accuracy_score(gold, predicted),
        macro_f1=f1_score(gold, predicted, average="macro", zero_division=0),
        intent_accuracy=intents_ok / max(len(test), 1),
        category_accuracy=categories_ok / max(reports, 1),
        train_seconds=train_seconds,
        predict_ms=predict_ms,
        low_confidence=low / max(len(test), 1),
        errors_caught=wrong_low / wrong if wrong else 1.0,
    )


def cross_validate(config: ModelConfig, data: Sequence[Example], folds: int) -> tuple[float, float]:
    """Return mean accuracy and macro-F1 over stratified folds."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.random_state)
    labels = [e.label for e in data]
    accuracies, f1s = [], []
    for train_index, test_index in splitter.split(labels, labels):
        result = score(config, [data[i] for i in train_index], [data[i] for i in test_index])
        accuracies.append(result.accuracy)
        f1s.append(result.macro_f1)
    return statistics.mean(accuracies), statistics.mean(f1s)


def main(argv: Sequence[str] | None = None) -> None:
    """Print a markdown table comparing the estimators."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", default="data/nlu")
    parser.add_argument("--heldout", default="tests/nlu/heldout.yml")
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    parser.add_argument("--c", type=float, nargs="+", default=[None], help="default: per estimator")
    parser.add_argument("--scale", type=float, nargs="+", default=[ModelConfig().softmax_scale])
    parser.add_argument("--ngram-max", type=int, nargs="+", default=[ModelConfig().char_ngram_max])
    parser.add_argument(
        "--no-tokens", action="store_true", help="also measure without token features"
    )
    parser.add_argument("--cv", type=int, default=0, help="also run k-fold CV on the training data")
    args = parser.parse_args(argv)

    train = load_examples(args.train)
    heldout = load_examples(args.heldout) if Path(args.heldout).exists() else []
    labels = len({e.label for e in train})
    print(f"train: {len(train)} examples, {labels} labels; heldout: {len(heldout)}")
    header = (
        "| estimator | C | ngram | tokens | scale | acc | macro-F1 | intent acc | category acc"
        " | train s | predict ms | conf<0.3 | errors<0.3 |"
    )
    if args.cv:
        header += f" cv{args.cv} acc | cv{args.cv} F1 |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for estimator in args.estimators:
        for c in args.c:
            for ngram_max in args.ngram_max:
                for use_tokens, scale in product(
                    [True, False] if args.no_tokens else [True], args.scale
                ):
                    config = replace(
                        ModelConfig(estimator=estimator),
                        c=c,
                        char_ngram_max=ngram_max,
                        use_tokens=use_tokens,
                        softmax_scale=scale,
                    )
                    print(_row(config, train, heldout, args.cv), flush=True)


def _row(config: ModelConfig, train: Sequence[Example], heldout: Sequence[Example], cv: int) -> str:
    c = "default" if config.c is None else f"{config.c:g}"
    line = (
        f"| {config.estimator} | {c} | {config.char_ngram_min}-{config.char_ngram_max} |"
        f" {'yes' if config.use_tokens else 'no'} | {config.softmax_scale:g} |"
    )
    result = score(config, train, heldout) if heldout else None
    if result is not None:
        line += (
            f" {result.accuracy:.3f} | {result.macro_f1:.3f} | {result.intent_accuracy:.3f} |"
            f" {result.category_accuracy:.3f} | {result.train_seconds:.2f} |"
            f" {result.predict_ms:.2f} |"
            f" {result.low_confidence:.3f} | {result.errors_caught:.2f} |"
        )
    else:
        line += " - | - | - | - | - | - | - | - |"
    if cv:
        cv_acc, cv_f1 = cross_validate(config, train, cv)
        line += f" {cv_acc:.3f} | {cv_f1:.3f} |"
    return line


if __name__ == "__main__":
    main()
