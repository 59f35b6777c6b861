"""Problems: their order, and whether the error suggests skipping rows."""

from __future__ import annotations

from pathlib import Path

from sibnet.data.problems import DataError, Problem, order_problems, write_rejects


def test_problems_are_ordered_by_file_then_row_whole_file_first(tmp_path: Path) -> None:
    found = [
        Problem("valid.csv", 3, "c"),
        Problem("train.csv", 9, "b"),
        Problem("train.csv", 2, "a"),
        Problem("train.csv", None, "the val split is empty"),
        Problem("train.csv", 2, "a second reason, kept after the first"),
    ]
    ordered = order_problems(found, files=["train.csv", "valid.csv"])
    assert [(p.file, p.row, p.reason[0]) for p in ordered] == [
        ("train.csv", None, "t"),
        ("train.csv", 2, "a"),
        ("train.csv", 2, "a"),
        ("train.csv", 9, "b"),
        ("valid.csv", 3, "c"),
    ]
    assert order_problems(ordered) == ordered  # ordering twice changes nothing
    # without a file order, files come in the order of their first problem
    assert order_problems(found)[0].file == "valid.csv"
    assert DataError(list(reversed(ordered))).problems == order_problems(reversed(ordered))
    write_rejects(tmp_path / "rejects.csv", list(reversed(ordered)))
    lines = (tmp_path / "rejects.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in lines[1:]] == ["3", "", "2", "2", "9"]


def test_only_skippable_problems_suggest_skip_invalid() -> None:
    problem = Problem("labels.csv", 4, "unknown label value 'x'")
    assert "--skip-invalid" in str(DataError([problem]))
    message = str(DataError([problem], skippable=False))
    assert "--skip-invalid" not in message and "skip_invalid" not in message
    assert message.endswith("Fix them:\n  - labels.csv, row 4: unknown label value 'x'")
