"""Benchmark Linli's request classifier against a plain baseline on any labelled CSV.

    python -m bot bench-classifier --train A.csv --test B.csv [--text-column text]
        [--label-column label] [--limit-train N] [--seed S]

Linli's side runs the steps the Rasa pipeline in config.yml runs, without loading Rasa:
nlu.normalize, jieba with the JiebaTokenizer's dictionary_path, then RequestModel with
the RequestClassifier options. The baseline is TF-IDF over raw-text character 1-2-grams
with a default LinearSVC. Both are trained on the same rows in the same run, and one JSON
object goes to stdout. Bad input exits with status 2 and a message on stderr.

Scores rank the model's own labels; the component's report_* collapsing and safety-rule
override (nlu.request_model.decide) are not applied, since they only apply to intents.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nlu.request_model import CLASSIFIER_DEFAULTS, model_config_from

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = ROOT / "config.yml"
CLASSIFIER_NAME = "nlu.components.RequestClassifier"
TOKENIZER_NAME = "JiebaTokenizer"
ENCODINGS = ("utf-8-sig", "gb18030")
REPORT_PREFIX = "report_"
EXIT_BAD_INPUT = 2
EXIT_NOT_MEASURED = 1
_INTENT_MESSAGE_PREFIX = "/"  # rasa.shared.constants.INTENT_MESSAGE_PREFIX


class BenchInputError(ValueError):
    """The input files or options cannot be benchmarked; the message says what to fix."""


@dataclass(frozen=True)
class LabelledData:
    """Texts and labels read from one CSV file, and what was skipped."""

    path: str
    encoding: str
    texts: list[str]
    labels: list[str]
    skipped_empty_text: int
    skipped_empty_label: int


class Classifier(Protocol):
    labels: list[str]

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> None: ...

    def scores(self, text: str) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------- input


def decode_file(path: Path) -> tuple[str, str]:
    """Return the file's text and the encoding (utf-8-sig, then gb18030) that decoded it."""
    if not path.is_file():
        raise BenchInputError(f"{path}: file not found; pass the path of a CSV file")
    raw = path.read_bytes()
    for encoding in ENCODINGS:
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise BenchInputError(f"{path}: neither UTF-8 nor GB18030; re-save the file as UTF-8")


def read_labelled_csv(path: str | Path, *, text_column: str, label_column: str) -> LabelledData:
    """Read (text, label) rows from a CSV file, skipping and counting empty ones."""
    path = Path(path)
    content, encoding = decode_file(path)
    if not content.strip():
        raise BenchInputError(f"{path}: the file is empty; it needs a header and labelled rows")
    try:
        rows = list(csv.reader(io.StringIO(content, newline="")))
    except csv.Error as exc:
        raise BenchInputError(f"{path}: not a valid CSV file ({exc})") from exc
    header = [name.strip() for name in rows[0]]
    if len(rows) == 1:
        raise BenchInputError(f"{path}: the file has a header but no rows; add labelled rows")
    missing = [c for c in (text_column, label_column) if c not in header]
    if missing:
        raise BenchInputError(
            f"{path}: no column {', '.join(map(repr, missing))}; the columns are "
            f"{', '.join(map(repr, header))} (choose with --text-column / --label-column)"
        )
    text_at, label_at = header.index(text_column), header.index(label_column)
    texts: list[str] = []
    labels: list[str] = []
    empty_text = empty_label = 0
    for row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue  # a blank line is not a row
        text = row[text_at].strip() if text_at < len(row) else ""
        label = row[label_at].strip() if label_at < len(row) else ""
        if not text:
            empty_text += 1
        elif not label:
            empty_label += 1
        else:
            texts.append(text)
            labels.append(label)
    if not texts:
        raise BenchInputError(
            f"{path}: no row has both a text and a label "
            f"({empty_text} without text, {empty_label} without label)"
        )
    return LabelledData(str(path), encoding, texts, labels, empty_text, empty_label)


def limit_rows(data: LabelledData, limit: int | None, seed: int) -> LabelledData:
    """Keep a seeded random sample of `limit` rows, in file order."""
    if limit is None or limit >= len(data.texts):
        return data
    keep = sorted(random.Random(seed).sample(range(len(data.texts)), limit))
    return LabelledData(
        data.path,
        data.encoding,
        [data.texts[i] for i in keep],
        [data.labels[i] for i in keep],
        data.skipped_empty_text,
        data.skipped_empty_label,
    )


# ---------------------------------------------------------------- the production settings


def component_defaults() -> dict[str, Any]:
    """Return the RequestClassifier component's default options (without importing Rasa)."""
    return copy.deepcopy(CLASSIFIER_DEFAULTS)


def production_settings(config_path: Path = CONFIG_PATH) -> tuple[dict[str, Any], list[Path]]:
    """Return the classifier's merged options and the jieba dictionaries config.yml names."""
    import yaml

    raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    pipeline = raw.get("pipeline") or []
    entries = {str(step.get("name")): step for step in pipeline if isinstance(step, Mapping)}
    if CLASSIFIER_NAME not in entries:
        raise RuntimeError(f"{config_path}: the pipeline has no {CLASSIFIER_NAME} step")
    options = {k: v for k, v in entries[CLASSIFIER_NAME].items() if k != "name"}
    merged = {**component_defaults(), **options}
    dictionaries: list[Path] = []
    directory = (entries.get(TOKENIZER_NAME) or {}).get("dictionary_path")
    if directory is not None:
        folder = Path(directory) if Path(directory).is_absolute() else ROOT / directory
        # Rasa loads every file in the folder (glob "*"); sorted for a stable order.
        dictionaries = sorted(p for p in folder.glob("*") if p.is_file())
    return merged, dictionaries


# ---------------------------------------------------------------- the two classifiers


class LinliClassifier:
    """ChineseNormalizer + JiebaTokenizer + RequestModel, as the Rasa pipeline runs them."""

    def __init__(self, config: Mapping[str, Any], dictionaries: Sequence[Path]) -> None:
        """Load jieba and the community dictionaries (not part of the training time)."""
        import jieba

        from nlu.request_model import RequestModel

        self._model = RequestModel(config=model_config_from(config))
        self._jieba = jieba.Tokenizer()
        self._jieba.initialize()
        for dictionary in dictionaries:
            self._jieba.load_userdict(str(dictionary))
        self.labels: list[str] = []

    def prepare(self, text: str) -> tuple[str, list[str]]:
        """Return the normalised text and its jieba tokens."""
        from nlu.normalize import normalize

        if text and not text.startswith(_INTENT_MESSAGE_PREFIX):
            text = normalize(text)
        return text, [word for word, _start, _end in self._jieba.tokenize(text)] if text else []

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        """Fit on the examples whose normalised text is not empty, as the component does."""
        prepared = [(*self.prepare(t), label) for t, label in zip(texts, labels, strict=True)]
        kept = [item for item in prepared if item[0]]
        self._model.fit([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept])
        self.labels = list(self._model.labels)

    def scores(self, text: str) -> np.ndarray:
        """Return one probability per label for a raw message."""
        normalised, tokens = self.prepare(text)
        return self._model.predict_proba([normalised], [tokens])[0]

    def describe(self) -> dict[str, Any]:
        """Return the hyper-parameters used."""
        from dataclasses import asdict

        return asdict(self._model.config)


class BaselineClassifier:
    """TF-IDF over raw-text character 1-2-grams with a default LinearSVC."""

    def __init__(self, seed: int) -> None:
        """Create the untrained pipeline."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        self._vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2))
        self._estimator = LinearSVC(random_state=seed)
        self.labels: list[str] = []

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        """Fit vectorizer and estimator."""
        self._estimator.fit(self._vectorizer.fit_transform(texts), np.asarray(labels))
        self.labels = [str(label) for label in self._estimator.classes_]

    def scores(self, text: str) -> np.ndarray:
        """Return one margin per label for a raw message."""
        margins = np.asarray(
            self._estimator.decision_function(self._vectorizer.transform([text])), dtype=float
        )
        if margins.ndim == 1:  # two labels: sklearn gives the positive class's margin only
            return np.array([-margins[0], margins[0]])
        return margins[0]

    def describe(self) -> dict[str, Any]:
        """Return the hyper-parameters used."""
        return {"vectorizer": "TfidfVectorizer(analyzer='char', ngram_range=(1, 2))",
                "estimator": "LinearSVC()"}


# ---------------------------------------------------------------- scoring


def department_map(labels: Sequence[str]) -> tuple[dict[str, str], str]:
    """Map labels to departments: by catalogue lead when all are Linli categories."""
    from routing.catalogue import default_catalogue

    catalogue = default_catalogue()
    bare = {label: label.removeprefix(REPORT_PREFIX) for label in labels}
    if all(catalogue.has_category(category) for category in bare.values()):
        return {label: catalogue.category(bare[label]).lead for label in labels}, "catalogue"
    return {label: label for label in labels}, "identity"


def dispatch_hops(
    ranked: Sequence[str], truth: str, department_of: Mapping[str, str]
) -> int | None:
    """Count dispatch attempts until the true department, trying distinct departments in order.

    None when no ranked label leads to the true department (it was never trained).
    """
    target = department_of[truth]
    tried: list[str] = []
    for label in ranked:
        department = department_of[label]
        if department in tried:
            continue
        tried.append(department)
        if department == target:
            return len(tried)
    return None


def evaluate(
    classifier: Classifier,
    train: LabelledData,
    test: LabelledData,
    department_of: Mapping[str, str],
) -> dict[str, Any]:
    """Fit on train, predict test one message at a time, and return the scores."""
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    classifier.fit(train.texts, train.labels)
    train_seconds = time.perf_counter() - started

    classifier.scores(test.texts[0])  # warm-up: the first call pays one-off setup costs
    predicted: list[str] = []
    hops: list[int] = []
    unreachable = 0
    latencies_ms: list[float] = []
    for text, truth in zip(test.texts, test.labels, strict=True):
        started = time.perf_counter()
        row = classifier.scores(text)
        latencies_ms.append((time.perf_counter() - started) * 1000)
        order = np.argsort(-row, kind="stable")
        ranked = [classifier.labels[i] for i in order]
        predicted.append(ranked[0])
        count = dispatch_hops(ranked, truth, department_of)
        if count is None:
            unreachable += 1
        else:
            hops.append(count)

    labels = sorted(set(test.labels) | set(predicted))
    per_label = f1_score(test.labels, predicted, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": _round(accuracy_score(test.labels, predicted)),
        "macro_f1": _round(
            f1_score(test.labels, predicted, labels=labels, average="macro", zero_division=0)
        ),
        "per_label_f1": {label: _round(f) for label, f in zip(labels, per_label, strict=True)},
        "mean_hops": _round(statistics.fmean(hops)) if hops else None,
        "p95_hops": _round(float(np.percentile(hops, 95))) if hops else None,
        "first_time_right": _round(hops.count(1) / len(test.texts)),
        "unreachable_department": unreachable,
        "train_seconds": _round(train_seconds),
        "predict_ms_per_message": {
            "mean": _round(statistics.fmean(latencies_ms)),
            "p95": _round(float(np.percentile(latencies_ms, 95))),
        },
        "n_train": len(train.texts),
        "n_test": len(test.texts),
        "labels": list(classifier.labels),
        "config": classifier.describe(),
    }


def _round(value: float) -> float:
    return round(float(value), 4)


def _file_summary(data: LabelledData) -> dict[str, Any]:
    return {
        "path": data.path,
        "encoding": data.encoding,
        "rows_used": len(data.texts),
        "skipped_empty_text": data.skipped_empty_text,
        "skipped_empty_label": data.skipped_empty_label,
    }


def run(args: argparse.Namespace, note: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    """Read both files, score both classifiers and return the report and the exit status."""
    columns = {"text_column": args.text_column, "label_column": args.label_column}
    train = read_labelled_csv(args.train, **columns)
    test = read_labelled_csv(args.test, **columns)
    for data in (train, test):
        if data.encoding != "utf-8-sig":
            note(f"{data.path} is not UTF-8; read it as {data.encoding}")
        skipped = data.skipped_empty_text + data.skipped_empty_label
        if skipped:
            note(f"{data.path}: skipped {data.skipped_empty_text} rows without text and "
                 f"{data.skipped_empty_label} without label")
    config, dictionaries = production_settings()
    seed = int(config["random_state"]) if args.seed is None else args.seed
    config = {**config, "random_state": seed}
    train = limit_rows(train, args.limit_train, seed)
    train_labels = sorted(set(train.labels))
    if len(train_labels) < 2:
        raise BenchInputError(
            f"{train.path}: the training rows have only the label {train_labels[0]!r}; "
            f"a classifier needs at least two labels"
        )
    unseen = sorted(set(test.labels) - set(train_labels))
    if unseen:
        note(f"test labels never seen in training (always wrong): {', '.join(unseen)}")
    department_of, mapping = department_map(sorted(set(train.labels) | set(test.labels)))

    report: dict[str, Any] = {
        "train": _file_summary(train),
        "test": _file_summary(test),
        "n_train": len(train.texts),
        "n_test": len(test.texts),
        "labels": train_labels,
        "unseen_test_labels": unseen,
        "departments": mapping,
        "seed": seed,
    }
    status = 0
    contenders: list[tuple[str, Callable[[], Classifier]]] = [
        ("linli", lambda: LinliClassifier(config, dictionaries)),
        ("baseline", lambda: BaselineClassifier(seed)),
    ]
    for name, build in contenders:
        try:
            report[name] = evaluate(build(), train, test, department_of)
        except Exception as exc:  # noqa: BLE001 - one failed contender must not hide the other
            logging.getLogger(__name__).debug("%s failed", name, exc_info=True)
            note(f"{name} classifier failed: {type(exc).__name__}: {exc}")
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
            status = EXIT_NOT_MEASURED
    if status == 0:
        linli, baseline = report["linli"]["macro_f1"], report["baseline"]["macro_f1"]
        report["linli_macro_f1_minus_baseline"] = _round(linli - baseline)
    return report, status


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bot bench-classifier",
        description="Train Linli's request classifier and a char-n-gram LinearSVC baseline on "
        "a labelled CSV and print one JSON object comparing them.",
    )
    parser.add_argument("--train", required=True, help="CSV file to train on")
    parser.add_argument("--test", required=True, help="CSV file to score on")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--limit-train", type=_positive_int, default=None,
                        help="train on a seeded random sample of N rows")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed for sampling and both estimators (default: config.yml)")
    return parser


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of rows, got {value}")
    return number


def main(argv: list[str]) -> int:
    """Run the benchmark; print the JSON report on stdout and return the exit status."""
    args = build_parser().parse_args(argv)

    def note(message: str) -> None:
        print(f"bench-classifier: {message}", file=sys.stderr)

    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary-cache messages are noise here
    try:
        report, status = run(args, note)
    except BenchInputError as exc:
        note(str(exc))
        return EXIT_BAD_INPUT
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return status
