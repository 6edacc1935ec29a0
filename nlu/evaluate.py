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

from nlu.normalize import normalize
from nlu.request_model import ESTIMATORS, REPORT_PREFIX, ModelConfig, RequestModel, decide
from nlu.safety import detect_emergency

DEFAULT_DICTIONARY = Path(__file__).parent / "jieba"
# Probes no intent covers; handled = nlu_fallback, out_of_scope or chitchat, never a report.
OUT_OF_DOMAIN = [
    "asdfgh",
    "。。。",
    "？？？",
    "呵呵",
    "测试",
    "😀😀",
    "123abc",
    "qwerty uiop",
    "zxcvbn",
    "啊啊啊啊",
    "阿斯顿发顺丰",
    "的了吗",
    "量子力学的基本原理是什么",
    "帮我写一首诗",
    "世界杯谁是冠军",
    "比特币现在多少钱",
    "推荐一部电影",
    "怎么做红烧肉",
    "火星离地球多远",
    "翻译一下hello world",
]


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
    fallback_rate: float
    out_of_domain_handled: float


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
    min_label_probability: float = 0.15,
) -> Scores:
    """Fit on train and measure on test; a confidence under the threshold counts as fallback."""
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
    intents_ok = categories_ok = reports = fallbacks = 0
    for example, row in zip(test, rows, strict=True):
        shown = _shown(model, row.tolist(), example.text, fallback_threshold, min_label_probability)
        fallbacks += shown == "nlu_fallback"
        intents_ok += shown == collapsed(example.label)
        if example.label.startswith(REPORT_PREFIX):
            reports += 1
            decision = decide(
                model.labels, row.tolist(), emergency_kind=detect_emergency(example.text)
            )
            categories_ok += REPORT_PREFIX + decision.category == example.label
    import jieba

    texts = [normalize(t) for t in OUT_OF_DOMAIN]
    probes = model.predict_proba(texts, [jieba.lcut(t) for t in texts])
    handled = ("nlu_fallback", "out_of_scope", "chitchat")
    ood_ok = sum(
        _shown(model, row.tolist(), text, fallback_threshold, min_label_probability) in handled
        for text, row in zip(texts, probes, strict=True)
    )
    return Scores(
        accuracy=accuracy_score(gold, predicted),
        macro_f1=f1_score(gold, predicted, average="macro", zero_division=0),
        intent_accuracy=intents_ok / max(len(test), 1),
        category_accuracy=categories_ok / max(reports, 1),
        train_seconds=train_seconds,
        predict_ms=predict_ms,
        fallback_rate=fallbacks / max(len(test), 1),
        out_of_domain_handled=ood_ok / len(OUT_OF_DOMAIN),
    )


def _shown(
    model: RequestModel, row: list[float], text: str, threshold: float, min_label_probability: float
) -> str:
    """Return the intent the pipeline shows: report, another intent, or nlu_fallback."""
    decision = decide(
        model.labels,
        row,
        emergency_kind=detect_emergency(text),
        min_label_probability=min_label_probability,
    )
    if decision.confidence < threshold:
        return "nlu_fallback"
    return "report" if decision.is_report else decision.intent


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
        "--token-weight", type=float, nargs="+", default=[ModelConfig().token_weight]
    )
    parser.add_argument("--min-prob", type=float, nargs="+", default=[0.15])
    parser.add_argument("--cv", type=int, default=0, help="also run k-fold CV on the training data")
    args = parser.parse_args(argv)

    train = load_examples(args.train)
    heldout = load_examples(args.heldout) if Path(args.heldout).exists() else []
    labels = len({e.label for e in train})
    print(f"train: {len(train)} examples, {labels} labels; heldout: {len(heldout)}")
    header = (
        "| estimator | C | char n-grams | token weight | softmax scale | min p | acc | macro-F1"
        " | intent acc | category acc | train s | predict ms | fallback | OOD handled |"
    )
    if args.cv:
        header += f" cv{args.cv} acc | cv{args.cv} F1 |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for estimator in args.estimators:
        for c in args.c:
            for ngram_max in args.ngram_max:
                for token_weight, scale, min_p in product(
                    args.token_weight, args.scale, args.min_prob
                ):
                    config = replace(
                        ModelConfig(estimator=estimator),
                        c=c,
                        char_ngram_max=ngram_max,
                        token_weight=token_weight,
                        softmax_scale=scale,
                    )
                    print(_row(config, train, heldout, args.cv, min_p), flush=True)


def _row(
    config: ModelConfig,
    train: Sequence[Example],
    heldout: Sequence[Example],
    cv: int,
    min_label_probability: float,
) -> str:
    c = "default" if config.c is None else f"{config.c:g}"
    line = (
        f"| {config.estimator} | {c} | {config.char_ngram_min}-{config.char_ngram_max} |"
        f" {config.token_weight:g} | {config.softmax_scale:g} | {min_label_probability:g} |"
    )
    result = (
        score(config, train, heldout, min_label_probability=min_label_probability)
        if heldout
        else None
    )
    if result is not None:
        line += (
            f" {result.accuracy:.3f} | {result.macro_f1:.3f} | {result.intent_accuracy:.3f} |"
            f" {result.category_accuracy:.3f} | {result.train_seconds:.2f} |"
            f" {result.predict_ms:.2f} |"
            f" {result.fallback_rate:.3f} | {result.out_of_domain_handled:.2f} |"
        )
    else:
        line += " - | - | - | - | - | - | - | - |"
    if cv:
        cv_acc, cv_f1 = cross_validate(config, train, cv)
        line += f" {cv_acc:.3f} | {cv_f1:.3f} |"
    return line


if __name__ == "__main__":
    main()
