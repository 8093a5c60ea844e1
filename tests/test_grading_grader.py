"""The instructor's grader, end to end: one CLI run over every fixture (2 workers, short time limits).

Each executed notebook costs a kernel start plus ``import torch`` (~3-5 s of CPU here), so the fixtures are
graded in a single call and the assertions read its gradebook and feedback files.
"""

import csv
import hashlib
import sys
from pathlib import Path

import nbformat
import pytest
from grading_fixtures import hidden_tests, write_submissions

from mmcourse.__main__ import main
from mmcourse.grading.grader import (
    GradingOptions,
    SubmissionOutcome,
    _detect_set,
    _feedback_name,
    _flags,
    feedback_text,
    gradebook_csv,
)
from mmcourse.grading.results import QuestionResult, SetResult, TestResult
from mmcourse.grading.spec import load_set

ROOT = Path(__file__).resolve().parent.parent
EX01 = load_set("ex01")  # the set changes as questions are written: read its points, do not copy them
FULL = f"{EX01.max_points(hidden_tests('ex01')):g}"  # ex01's total with hidden tests
PUBLIC = f"{EX01.max_points():g}"  # ... and with the public tests only


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("grading")
    submissions = base / "submissions"
    submissions.mkdir()
    kinds = write_submissions(submissions)
    before = _digest(submissions)
    out = base / "out" / "grades.csv"
    code = main(
        [
            "grade",
            str(submissions),
            "--out",
            str(out),
            "--workers",
            "2",
            "--timeout",
            "30",
            "--grading-timeout",
            "60",
            "--test-timeout",
            "10",
            "--memory-mb",
            "3000",
            "--quiet",
        ]
    )
    with out.open(encoding="utf-8", newline="") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    feedback = {p.name: p.read_text(encoding="utf-8") for p in (base / "out" / "grades_feedback").iterdir()}
    return {
        "code": code,
        "rows": rows,
        "feedback": feedback,
        "kinds": kinds,
        "before": before,
        "after": _digest(submissions),
        "out": base / "out",
    }


def _feedback(graded, name: str) -> str:
    return graded["feedback"][_feedback_name(name)]


def test_one_row_per_submission_and_submissions_untouched(graded):
    assert sorted(graded["rows"]) == sorted(graded["kinds"])
    assert graded["after"] == graded["before"], "the submissions changed"
    assert len(graded["feedback"]) == len(graded["kinds"])
    written = ["grades_written_ex01.md"] if EX01.written else []  # other sets have no submission here
    assert sorted(p.name for p in graded["out"].iterdir()) == ["grades.csv", "grades_feedback", *written], (
        "temp files left"
    )
    assert graded["code"] == 1, "not every submission could be graded, so the exit code is 1"


def test_gradebook_columns(graded):
    row = graded["rows"]["master.ipynb"]
    assert list(row) == [
        "submission",
        "set",
        "status",
        "graded",
        *(q.key for q in EX01),
        *(q.key for q in EX01.written.values()),  # written questions: empty until merged
        "total",
        "max",
        "percent",
        "total_with_written",
        "max_with_written",
        "flags",
        "message",
    ]
    assert (row["status"], row["graded"], row["total"], row["max"], row["percent"]) == (
        "ok",
        "yes",
        FULL,
        FULL,
        "100.0",
    )
    assert [row[q.key] for q in EX01] == [f"{q.max_points(hidden_tests('ex01')):g}" for q in EX01]


def test_master_and_student_notebooks(graded):
    student = graded["rows"]["Copy of ex01_overview (1).ipynb"]
    assert (student["set"], student["status"], student["total"], student["max"]) == ("ex01", "ok", "0", FULL)
    text = _feedback(graded, "Copy of ex01_overview (1).ipynb")
    assert text.count("not implemented yet: replace `raise NotImplementedError` with your code") == len(EX01.questions)


def test_the_kernel_runs_this_environments_python(graded):
    from mmcourse.grading import grader

    assert grader._kernel_manager().kernel_spec.argv[0] == sys.executable
    text = _feedback(graded, "master.ipynb")  # the grading cell reports its sys.prefix; a mismatch is noted
    assert "Status:       ok" in text and f"Score:        {FULL}/{FULL}" in text and "the kernel ran" not in text


def test_partial_credit_per_test_and_set_recognised_without_metadata(graded):
    row = graded["rows"]["partial.ipynb"]
    assert (row["set"], row["status"]) == ("ex01", "ok")
    hidden = hidden_tests("ex01")
    assert (row["ex01.early_fusion"], row["ex01.LateFusionClassifier"]) == (
        "2",
        f"{EX01['LateFusionClassifier'].max_points(hidden):g}",
    )
    assert 0 < float(row["ex01.modality_dropout"]) < EX01["modality_dropout"].max_points(hidden), "partial credit"
    text = _feedback(graded, "partial.ipynb")
    for line in (
        "✓ (B, Di) and (B, Dt) give (B, Di + Dt) (1/1)",
        "✗ the image features come first, then the text features (0/1)",
        "✓ different batch sizes raise ValueError (1/1)",
        "✗ random batch and feature sizes; inputs not modified [hidden] (0/1)",
        "✓ p = 0 returns the features unchanged (1/1)",
        "✗ p outside [0, 1] raises ValueError (0/1)",
    ):
        assert line in text, line


@pytest.mark.parametrize(
    "name, status, total, note",
    [
        ("infinite_loop.ipynb", "timeout", FULL, "was interrupted"),
        ("sys_exit.ipynb", "cell-error", FULL, "raised SystemExit: 3"),
        ("raise_at_import.ipynb", "cell-error", FULL, "raised ModuleNotFoundError"),
        ("syntax_error.ipynb", "cell-error", FULL, "raised SyntaxError"),
        ("prints_megabytes.ipynb", "ok", FULL, None),
        ("memory_bomb.ipynb", "memory", FULL, "raised MemoryError"),
        ("deletes_files.ipynb", "ok", FULL, None),
    ],
)
def test_misbehaving_notebooks_still_get_graded(graded, name, status, total, note):
    row = graded["rows"][name]
    assert (row["status"], row["graded"], row["total"]) == (status, "yes", total), row
    if note:
        assert note in _feedback(graded, name)


def test_monkeypatching_the_checker_earns_nothing_and_is_flagged(graded):
    row = graded["rows"]["monkeypatch.ipynb"]
    assert (row["status"], row["total"]) == ("ok", "0")
    assert "touches the grader's modules" in row["flags"]
    assert "mentions the grader's result marker" in row["flags"]


@pytest.mark.parametrize(
    "name, status",
    [
        ("os_exit.ipynb", "kernel-died"),
        ("unknown_set.ipynb", "unknown-set"),
        ("essay.pdf", "not-a-notebook"),
        ("broken.ipynb", "not-a-notebook"),
        ("alice/answers.txt", "not-a-notebook"),
        ("link.ipynb", "not-a-notebook"),
    ],
)
def test_ungradable_submissions_get_a_row(graded, name, status):
    row = graded["rows"][name]
    assert (row["status"], row["graded"], row["total"]) == (status, "no", "0")
    assert row["message"]
    assert f"Status:       {status}" in _feedback(graded, name)


def test_public_only_grading_exits_zero_when_everything_is_graded(tmp_path):
    submissions = tmp_path / "in"
    submissions.mkdir()
    nb = nbformat.read(str(ROOT / "exercises" / "instructor" / "masters" / "ex01_overview.ipynb"), as_version=4)
    nbformat.write(nb, str(submissions / "only.ipynb"))
    out = tmp_path / "grades.csv"
    code = main(["grade", str(submissions), "--out", str(out), "--public-only", "--timeout", "60", "--quiet"])
    assert code == 0
    with out.open(encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    assert (row["status"], row["total"], row["max"]) == ("ok", PUBLIC, PUBLIC)
    assert "graded with the public tests only" in (tmp_path / "grades_feedback" / "only.ipynb.txt").read_text()


# ----------------------------------------------------------------------------------------------------------------
# Pieces that need no kernel
# ----------------------------------------------------------------------------------------------------------------
def test_options_and_cli_arguments_are_validated(tmp_path, capsys):
    with pytest.raises(ValueError, match="workers"):
        GradingOptions(workers=0)
    with pytest.raises(ValueError, match="timeout"):
        GradingOptions(timeout=-1)
    with pytest.raises(ValueError, match="memory_mb"):
        GradingOptions(memory_mb=10)
    assert main(["grade", str(tmp_path / "missing"), "--out", str(tmp_path / "g.csv"), "--public-only"]) == 2
    inside = tmp_path / "subs"
    inside.mkdir()
    assert main(["grade", str(inside), "--out", str(inside / "g.csv"), "--public-only"]) == 2
    assert "outside the submissions folder" in capsys.readouterr().err
    assert main(["grade", str(inside), "--out", str(tmp_path / "g.csv"), "--workers", "0", "--public-only"]) == 2


def test_set_detection_and_flags():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('check("ex03.lengths_to_mask")')])
    assert _detect_set(nb, None) == "ex03"
    assert _detect_set(nb, "ex05") == "ex05"
    nb.metadata["mmcourse"] = {"exercise_set": "ex02", "version": 1}
    assert _detect_set(nb, None) == "ex02"
    two = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('check("ex03.a")\ncheck("ex04.b")')])
    assert _detect_set(two, None) is None, "ambiguous check() calls identify no set"
    clean = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("from mmcourse.grading import check")])
    assert _flags(clean) == []
    sneaky = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import sys\nsys.modules['x'] = 1\ntorch.allclose = lambda *a: True")]
    )
    assert _flags(sneaky) == ["edits sys.modules", "assigns to a torch attribute"]


def test_gradebook_and_feedback_text():
    result = SetResult(
        "ex01",
        1,
        [
            QuestionResult("ex01.f", "F", [TestResult("t", "does t", 2.0, True)]),
            QuestionResult("ex01.g", "G", [TestResult("u", "does u", 1.5, False, ["bad"])]),
        ],
    )
    outcomes = [
        SubmissionOutcome("a.ipynb", "ok", "ex01", result, 3.5, version=1),
        SubmissionOutcome("b, with comma.ipynb", "timeout", "ex01", None, 3.5, message="took too long"),
        SubmissionOutcome("c.txt", "not-a-notebook", message="not a notebook"),
    ]
    text = gradebook_csv(outcomes, [("ex01", "f"), ("ex01", "g")])
    assert text.splitlines() == [
        "submission,set,status,graded,ex01.f,ex01.g,total,max,percent,total_with_written,max_with_written,flags,message",
        "a.ipynb,ex01,ok,yes,2,0,2,3.5,57.1,2,3.5,,",
        '"b, with comma.ipynb",ex01,timeout,no,0,0,0,3.5,0.0,0,3.5,,took too long',
        "c.txt,,not-a-notebook,no,,,0,0,,0,0,,not a notebook",
    ]
    feedback = feedback_text(outcomes[0])
    assert "Score:        2/3.5" in feedback and "✗ does u (0/1.5)" in feedback and "bad" in feedback
    assert "No tests could run" in feedback_text(outcomes[1])
    assert _feedback_name("alice/Copy of ex01 (1).ipynb") == "alice__Copy of ex01 (1).ipynb.txt"
