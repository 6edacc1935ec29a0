"""`python -m bot bench-classifier`: Linli's classifier against a baseline on labelled CSVs."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from bot.bench_classifier import dispatch_hops, main
from bot.evaluation import load_examples
from bot.training import ROOT

pytestmark = pytest.mark.integration

SCORE_KEYS = {
    "accuracy", "macro_f1", "per_label_f1", "mean_hops", "p95_hops", "first_time_right",
    "train_seconds", "predict_ms_per_message", "n_train", "n_test", "labels",
}


def _category_rows(paths: list[Path]) -> list[tuple[str, str]]:
    """Return (text, category) for every report_* example of the Rasa NLU files."""
    return [(text, intent.removeprefix("report_"))
            for path in paths for text, intent in load_examples(path)
            if intent.startswith("report_")]


def _write_csv(path: Path, rows: list[tuple[str, str]], *, encoding: str = "utf-8",
               header: tuple[str, str] = ("text", "label")) -> Path:
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *header, "channel"])
        for number, (text, label) in enumerate(rows, start=1):
            writer.writerow([number, text, label, ("wechat", "sms", "voice")[number % 3]])
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, (json.loads(out) if out.strip() else {}), err


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train CSV from data/nlu, test CSV from the held-out file, category labels."""
    folder = tmp_path_factory.mktemp("bench-classifier")
    train = _category_rows(sorted((ROOT / "data" / "nlu").glob("*.yml")))
    test = _category_rows([ROOT / "tests" / "nlu" / "heldout.yml"])
    return _write_csv(folder / "train.csv", train), _write_csv(folder / "test.csv", test)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """A few examples of three categories, for the fast input-handling cases."""
    rows = _category_rows(sorted((ROOT / "data" / "nlu").glob("reports_a.yml")))
    wanted = ("elevator_fault", "water_leak", "heating")
    return [row for category in wanted for row in [r for r in rows if r[1] == category][:15]]


def test_heldout_split_scores_both_classifiers(
    split: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = split
    status, report, err = _run(["--train", str(train), "--test", str(test)], capsys)
    assert status == 0, err
    print(err + json.dumps(report, ensure_ascii=False, indent=2))
    assert report["departments"] == "catalogue"
    assert len(report["labels"]) == 24
    for name in ("linli", "baseline"):
        scores = report[name]
        assert SCORE_KEYS <= set(scores), name
        assert scores["n_test"] == report["n_test"] >= 150
        assert scores["n_train"] == report["n_train"] >= 500
        assert set(scores["per_label_f1"]) == set(report["labels"])
        assert 0.5 < scores["macro_f1"] <= 1.0
        assert 1.0 <= scores["mean_hops"] < 2.0
        assert 1.0 <= scores["p95_hops"] <= 15
        assert 0 < scores["first_time_right"] <= 1
        latency = scores["predict_ms_per_message"]
        assert latency["p95"] >= latency["mean"] > 0
    assert report["linli"]["config"]["estimator"] == "linear_svc"
    # The claim under test: the production pipeline beats a plain char-n-gram SVM.
    assert report["linli"]["macro_f1"] >= report["baseline"]["macro_f1"]


def test_dispatch_hops_counts_distinct_departments_until_the_right_one() -> None:
    department_of = {"elevator_fault": "property", "water_leak": "property",
                     "heating": "utilities_heating", "gas_leak": "utilities_gas"}
    ranked = ["water_leak", "elevator_fault", "gas_leak", "heating"]
    assert dispatch_hops(ranked, "elevator_fault", department_of) == 1  # same department
    assert dispatch_hops(ranked, "heating", department_of) == 3
    assert dispatch_hops(["water_leak"], "heating", department_of) is None


def test_skips_empty_text_and_reads_gb18030(
    small: list[tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _write_csv(tmp_path / "train.csv", small + [("", "heating"), ("  ", "water_leak")],
                       encoding="gb18030")
    test = _write_csv(tmp_path / "test.csv", small[::3], encoding="utf-8-sig")
    status, report, err = _run(["--train", str(train), "--test", str(test), "--seed", "7"], capsys)
    assert status == 0, err
    assert report["train"]["encoding"] == "gb18030" and "gb18030" in err
    assert report["test"]["encoding"] == "utf-8-sig"
    assert report["train"]["skipped_empty_text"] == 2
    assert report["linli"]["n_train"] == len(small)
    assert report["seed"] == 7


def test_limit_train_and_own_column_names(
    small: list[tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _write_csv(tmp_path / "train.csv", small, header=("内容", "类别"))
    test = _write_csv(tmp_path / "test.csv", small[:9], header=("内容", "类别"))
    argv = ["--train", str(train), "--test", str(test), "--text-column", "内容",
            "--label-column", "类别", "--limit-train", "30"]
    status, report, err = _run(argv, capsys)
    assert status == 0, err
    assert report["linli"]["n_train"] == report["baseline"]["n_train"] == 30


def test_labels_outside_the_catalogue_are_their_own_departments(
    small: list[tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [(text, "lift" if label == "elevator_fault" else "other_" + label)
            for text, label in small]
    train = _write_csv(tmp_path / "train.csv", rows)
    status, report, err = _run(["--train", str(train), "--test", str(train)], capsys)
    assert status == 0, err
    assert report["departments"] == "identity"
    assert report["linli"]["accuracy"] > 0.9  # scored on its own training rows


def test_two_labels_are_enough(
    small: list[tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [row for row in small if row[1] != "heating"]
    train = _write_csv(tmp_path / "train.csv", rows)
    status, report, err = _run(["--train", str(train), "--test", str(train)], capsys)
    assert status == 0, err
    assert report["baseline"]["accuracy"] > 0.9
    assert report["linli"]["accuracy"] > 0.9


def _expect_input_error(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> None:
    status, report, err = _run(argv, capsys)
    assert status == 2
    assert report == {}  # nothing on stdout
    for word in words:
        assert word in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    test = _write_csv(tmp_path / "test.csv", [("电梯坏了", "elevator_fault")])
    missing = tmp_path / "nope.csv"
    _expect_input_error(["--train", str(missing), "--test", str(test)], capsys,
                        "nope.csv", "not found")


def test_missing_column_names_the_existing_ones(
    small: list[tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _write_csv(tmp_path / "train.csv", small, header=("message", "label"))
    _expect_input_error(["--train", str(train), "--test", str(train)], capsys,
                        "'text'", "'message'", "'label'", "'channel'", "--text-column")


def test_empty_and_header_only_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    header_only = _write_csv(tmp_path / "header.csv", [])
    _expect_input_error(["--train", str(empty), "--test", str(header_only)], capsys, "empty")
    _expect_input_error(["--train", str(header_only), "--test", str(header_only)], capsys,
                        "no rows")


def test_fewer_than_two_labels(
    small: list[tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = _write_csv(tmp_path / "one.csv", [row for row in small if row[1] == "heating"])
    _expect_input_error(["--train", str(one), "--test", str(one)], capsys,
                        "only the label 'heating'", "at least two")


def test_only_empty_texts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blank = _write_csv(tmp_path / "blank.csv", [("", "heating"), (" ", "water_leak")])
    _expect_input_error(["--train", str(blank), "--test", str(blank)], capsys,
                        "2 without text")


def test_undecodable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 0x80 cannot start a GB18030 character and is not UTF-8 either.
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\n\x80\x80,heating\n")
    _expect_input_error(["--train", str(bad), "--test", str(bad)], capsys,
                        "neither UTF-8 nor GB18030")
