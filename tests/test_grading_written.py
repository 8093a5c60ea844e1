"""Written questions: authoring (answer → YOUR ANSWER HERE, rubric removed), check(), the grader's export of
answers next to the rubric, and merging a person's points from a scores.csv.

Everything runs on a fixture set of our own (``grading_fixtures.written_set``), not on the real sets, whose
written questions are being written; one end-to-end grading run (3 small submissions) covers the CLI.
"""

import csv
import hashlib
import importlib
import json
from pathlib import Path

import nbformat
import pytest
from grading_fixtures import (
    MODEL_ANSWER,
    RUBRIC_LINES,
    WRITTEN_HEADINGS,
    WRITTEN_POINTS,
    answer_cell,
    with_answer,
    written_master,
    written_set,
)

from mmcourse.__main__ import main
from mmcourse.grading import authoring, grader
from mmcourse.grading.authoring import (
    answer_text,
    leak_markers,
    release,
    scan_for_leaks,
    strip_written,
    student_notebook,
)
from mmcourse.grading.grader import (
    SubmissionOutcome,
    gradebook_csv,
    gradebook_rows,
    merge_manual_scores,
    merge_scores_into_gradebook,
    read_manual_scores,
    submission_answers,
    written_export,
)
from mmcourse.grading.layout import MASTERS_DIR, STUDENT_DIR
from mmcourse.grading.results import QuestionResult, SetResult, TestResult
from mmcourse.grading.spec import ExerciseSet, load_set

URL = "https://github.com/a/b"
check_module = importlib.import_module("mmcourse.grading.check")  # the package's `check` is the function
REAL_LOAD_SET = load_set


def _student(master=None, exercise_set=None):
    exercise_set = exercise_set or written_set()
    master = master if master is not None else _tiny_master()
    return student_notebook(master, notebook_relpath="exercises/ex01_x.ipynb", url=URL, exercise_set=exercise_set)


def _tiny_master(*extra_cells, names=("why_late", "missing_modality")):
    cells = [nbformat.v4.new_markdown_cell("# Fixture"), nbformat.v4.new_code_cell("x = 1")]
    for name in names:
        cells += [nbformat.v4.new_markdown_cell(WRITTEN_HEADINGS[name]), answer_cell(name)]
    nb = nbformat.v4.new_notebook(cells=[*cells, *extra_cells])
    nb.metadata["mmcourse"] = {"exercise_set": "ex01", "role": "master"}
    return nb


def _answer_cells(nb):
    return {c.metadata["mmcourse"]["written"]: c for c in nb.cells if "mmcourse" in c.metadata}


# ----------------------------------------------------------------------------------------------------------------
# Authoring
# ----------------------------------------------------------------------------------------------------------------
def test_the_student_gets_your_answer_here_and_never_the_rubric():
    student = _student()
    cells = _answer_cells(student)
    assert sorted(cells) == ["missing_modality", "why_late"]
    for cell in cells.values():
        assert cell.cell_type == "markdown"
        assert cell.source == "**Your answer:**\n\nYOUR ANSWER HERE"
    text = nbformat.writes(student)
    assert MODEL_ANSWER not in text
    for line in RUBRIC_LINES:
        assert line not in text
    assert "RUBRIC" not in text and "SOLUTION" not in text
    headings = [c.source for c in student.cells if c.source.startswith("## ")]
    assert headings == list(WRITTEN_HEADINGS.values()), "the question headings stay"


def test_strip_written_keeps_the_prompt_and_tidies_blank_lines():
    source = "Explain.\n\n<!-- BEGIN SOLUTION -->\nAnswer.\n<!-- END SOLUTION -->\n\n<!-- BEGIN RUBRIC -->\n- x\n"
    source += "<!-- END RUBRIC -->\n\nIn at most 3 sentences."
    assert strip_written(source) == "Explain.\n\nYOUR ANSWER HERE\n\nIn at most 3 sentences."


@pytest.mark.parametrize(
    "source, problem",
    [
        ("<!-- BEGIN SOLUTION -->\nA\n<!-- BEGIN RUBRIC -->\n- r\n<!-- END RUBRIC -->", "inside another block"),
        ("<!-- BEGIN SOLUTION -->\nA\n<!-- END SOLUTION -->", "exactly one <!-- BEGIN RUBRIC --> block, found 0"),
        ("<!-- BEGIN RUBRIC -->\n- r\n<!-- END RUBRIC -->", "exactly one <!-- BEGIN SOLUTION --> block, found 0"),
        ("<!-- BEGIN SOLUTION -->\nA\n<!-- END SOLUTION -->\n<!-- BEGIN RUBRIC -->\n- r", "never closed"),
        ("A\n<!-- END SOLUTION -->\n<!-- BEGIN RUBRIC -->\n- r\n<!-- END RUBRIC -->", "without its BEGIN"),
        ("x <!-- BEGIN SOLUTION --> A\n<!-- END SOLUTION -->", "malformed marker"),
    ],
)
def test_broken_answer_cells_are_refused(source, problem):
    cell = nbformat.v4.new_markdown_cell(source, metadata={"mmcourse": {"written": "why_late"}})
    master = _tiny_master(names=("missing_modality",))
    master.cells.append(cell)
    with pytest.raises(ValueError, match=problem):
        _student(master)


def test_markers_outside_an_answer_cell_are_refused():
    stray = nbformat.v4.new_markdown_cell("<!-- BEGIN RUBRIC -->\n- 1 point\n<!-- END RUBRIC -->")
    with pytest.raises(ValueError, match="metadata holds"):
        _student(_tiny_master(stray))
    code = nbformat.v4.new_code_cell("x = 2", metadata={"mmcourse": {"written": "why_late"}})
    master = _tiny_master(names=("missing_modality",))
    master.cells.append(code)
    with pytest.raises(ValueError, match="must be a markdown cell"):
        _student(master)


def test_written_questions_and_answer_cells_must_match_one_to_one():
    with pytest.raises(ValueError, match=r"ex01: written question 'missing_modality' has no answer cell"):
        _student(_tiny_master(names=("why_late",)))
    undeclared = _tiny_master(answer_cell("not_declared"))
    with pytest.raises(ValueError, match=r"ex01: .* answer cell for written question 'not_declared'.*declares no"):
        _student(undeclared)
    twice = _tiny_master(answer_cell("why_late"))
    with pytest.raises(ValueError, match=r"ex01: .* 2 answer cells for written question 'why_late'"):
        _student(twice)
    hidden = _tiny_master(names=("why_late",))
    hidden.cells.append(answer_cell("missing_modality"))
    hidden.cells[-1].metadata["tags"] = ["instructor-only"]
    with pytest.raises(ValueError, match="instructor-only"):
        _student(hidden)


@pytest.fixture
def fixture_course(tmp_path, monkeypatch):
    """A course checkout whose only master is ours; ``load_set("ex01")`` gives the fixture set."""
    root = tmp_path / "course"
    (root / MASTERS_DIR).mkdir(parents=True)
    (root / "exercises" / "instructor" / "hidden").mkdir()
    nbformat.write(_tiny_master(), str(root / MASTERS_DIR / "ex01_fixture.ipynb"))
    monkeypatch.setattr(authoring, "load_set", lambda set_id: written_set())
    return root


def test_generate_and_release_never_ship_the_rubric(fixture_course, tmp_path):
    report = authoring.generate(fixture_course, url=URL)
    student_text = (fixture_course / STUDENT_DIR / "ex01_fixture.ipynb").read_text(encoding="utf-8")
    assert [p.name for p in report.written] == ["ex01_fixture.ipynb"]
    assert "YOUR ANSWER HERE" in student_text and MODEL_ANSWER not in student_text
    assert not [line for line in RUBRIC_LINES if line in student_text]

    markers = leak_markers(fixture_course)
    assert set(RUBRIC_LINES) <= markers["rubric"] and MODEL_ANSWER in markers["solution"]
    out = release(tmp_path / "release", fixture_course)
    released = "\n".join(p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file())
    assert MODEL_ANSWER not in released and not [line for line in RUBRIC_LINES if line in released]
    assert scan_for_leaks(out, fixture_course) == []

    # a rubric line (or a marker) planted in a student notebook is caught
    path = out / STUDENT_DIR / "ex01_fixture.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell(RUBRIC_LINES[1]))
    nb.cells.append(nbformat.v4.new_markdown_cell("<!-- BEGIN RUBRIC -->"))
    nbformat.write(nb, str(path))
    problems = "\n".join(scan_for_leaks(out, fixture_course))
    assert f"contains rubric text {RUBRIC_LINES[1]!r}" in problems
    assert "contains 'BEGIN RUBRIC'" in problems


# ----------------------------------------------------------------------------------------------------------------
# check()
# ----------------------------------------------------------------------------------------------------------------
def _check_set():
    exercise_set = written_set()
    double = exercise_set.question("double", "Double a number")

    @double.test(points=1)
    def doubles_two(fn):
        """double(2) == 4"""
        assert fn(2) == 4

    return exercise_set


@pytest.fixture
def check_env(monkeypatch, tmp_path):
    exercise_set = _check_set()
    monkeypatch.setattr(check_module, "load_set", lambda set_id: exercise_set)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    student = _student(exercise_set=written_set())
    path = tmp_path / "Copy of ex01.ipynb"
    nb = with_answer(student, "why_late", "Because each encoder is trained on its own.")
    nb = with_answer(nb, "missing_modality", None)
    nbformat.write(nb, str(path))
    return path


def test_check_a_written_question_reports_its_points_and_its_state(check_env):
    from mmcourse.grading import check

    report = check("ex01.why_late", notebook=check_env, quiet=True)
    assert report.text.splitlines() == [
        "ex01.why_late — Why late fusion?: 3 points, graded by a person (written)",
        "  ✓ your answer cell has an answer (in Copy of ex01.ipynb as last saved)",
    ]
    assert (report.points, report.max_points, report.passed) == (0, 3, True)
    missing = check("ex01.missing_modality", notebook=check_env, quiet=True)
    assert "✗ no answer cell for this question" in missing.text

    untouched = check_env.with_name("untouched.ipynb")
    nbformat.write(_student(exercise_set=written_set()), str(untouched))
    assert "still says YOUR ANSWER HERE" in check("ex01.why_late", notebook=untouched, quiet=True).text


def test_check_without_the_notebook_file_says_only_the_points(check_env, capsys):
    from mmcourse.grading import check

    for notebook in (None, check_env.with_name("gone.ipynb")):
        report = check("ex01.why_late", notebook=notebook)
        assert report.text == "ex01.why_late — Why late fusion?: 3 points, graded by a person (written)"
        assert report.text in capsys.readouterr().out
    check_env.with_name("bad.ipynb").write_text("{not json", encoding="utf-8")
    assert "\n" not in check("ex01.why_late", notebook=check_env.with_name("bad.ipynb"), quiet=True).text


def test_check_finds_the_notebook_the_kernel_was_told_about(check_env, monkeypatch):
    from mmcourse.grading import check

    monkeypatch.setenv("JPY_SESSION_NAME", str(check_env))  # what Jupyter Server >= 2 sets
    assert "✓ your answer cell has an answer" in check("ex01.why_late", quiet=True).text
    assert "✓ your answer cell has an answer" in check("ex01.why_late", namespace={}, quiet=True).text


def test_check_of_a_set_lists_written_questions_after_the_auto_graded_ones(check_env):
    from mmcourse.grading import check

    def double(x):
        return 2 * x

    report = check("ex01", namespace={"double": double}, notebook=check_env, quiet=True)
    text = report.text
    assert text.index("ex01.double — Double a number: 1/1 points") < text.index("ex01.why_late — Why late fusion?")
    assert text.index("ex01.why_late") < text.index("ex01.missing_modality — A missing modality: 2 points")
    assert "Written questions are graded by a person." in text
    assert [w.state for w in report.written] == ["answered", "missing"]
    assert report.points == 1 and report.passed, "written questions do not change the auto-graded numbers"
    with pytest.raises(ValueError, match="takes no answer"):
        check("ex01.why_late", double)


# ----------------------------------------------------------------------------------------------------------------
# Answers, export, gradebook, manual scores (no kernel)
# ----------------------------------------------------------------------------------------------------------------
def test_answers_are_read_from_the_cells_metadata_or_after_the_heading():
    exercise_set = written_set()
    master = authoring.master_written(_tiny_master())
    student = _student()
    assert answer_text("**Your answer:**\n\nYOUR ANSWER HERE", master["why_late"][0].student) is None
    assert answer_text("YOUR ANSWER HERE\nBecause.") == "Because."

    answers, notes = submission_answers(student, exercise_set.written, master)
    assert answers == {"why_late": None, "missing_modality": None} and notes == {}
    nb = with_answer(student, "why_late", "**Your answer:**\n\nIndependent encoders.")
    nb = with_answer(nb, "missing_modality", "Zero it out.")
    answers, notes = submission_answers(nb, exercise_set.written, master)
    assert answers == {"why_late": "**Your answer:**\n\nIndependent encoders.", "missing_modality": "Zero it out."}
    assert notes == {}

    stripped = with_answer(nb, "why_late", None)  # the answer cell deleted: no answer, not the next heading
    assert submission_answers(stripped, exercise_set.written, master)[0]["why_late"] is None
    for cell in stripped.cells:  # a tool dropped every cell's metadata: the cell after the heading is taken
        cell.metadata.pop("mmcourse", None)
    answers, notes = submission_answers(stripped, exercise_set.written, master)
    assert answers == {"why_late": None, "missing_modality": "Zero it out."}
    assert list(notes) == ["missing_modality"] and "after the question's heading" in notes["missing_modality"]
    answers, _ = submission_answers(stripped, exercise_set.written)  # without the master: no fallback
    assert answers["missing_modality"] is None


def _outcomes():
    result = SetResult("ex01", 1, [QuestionResult("ex01.f", "F", [TestResult("t", "does t", 2.0, True)])])
    return [
        SubmissionOutcome(
            "alice.ipynb", "ok", "ex01", result, 2.0, answers={"why_late": "Encoders!", "missing_modality": None}
        ),
        SubmissionOutcome(
            "bob/b.ipynb", "kernel-died", "ex01", None, 2.0, answers={"why_late": None, "missing_modality": "Drop."}
        ),
        SubmissionOutcome("c.txt", "not-a-notebook"),
    ]


def test_the_export_puts_each_answer_next_to_the_rubric():
    exercise_set = written_set()
    text = written_export(exercise_set, _outcomes(), authoring.master_written(_tiny_master()))
    first, second = text.split("## ex01.missing_modality")
    assert "## ex01.why_late — Why late fusion? (3 points)" in first
    for part in (first, second):
        assert part.index("### Rubric") < part.index(RUBRIC_LINES[0]) < part.index("### Model answer")
        assert part.index(MODEL_ANSWER) < part.index("#### alice.ipynb") < part.index("#### bob/b.ipynb")
    assert "#### alice.ipynb\n\n> Encoders!" in first and "#### bob/b.ipynb\n\n(no answer)" in first
    assert "#### alice.ipynb\n\n(no answer)" in second and "#### bob/b.ipynb\n\n> Drop." in second
    assert "c.txt" not in text
    without_master = written_export(exercise_set, _outcomes(), None, "no masters folder was given")
    assert "no masters folder was given" in without_master and "(not found in the master)" in without_master


def _rows():
    exercise_set = _check_set()  # written questions + one auto-graded question, "double"
    return gradebook_rows(_outcomes(), [("ex01", "f")], list(exercise_set.written.values())), exercise_set


def test_the_gradebook_has_written_columns_empty_until_merged():
    exercise_set = written_set()
    text = gradebook_csv(_outcomes(), [("ex01", "f")], list(exercise_set.written.values()))
    assert text.splitlines() == [
        "submission,set,status,graded,ex01.f,ex01.why_late,ex01.missing_modality,total,max,percent,"
        "total_with_written,max_with_written,flags,message",
        "alice.ipynb,ex01,ok,yes,2,,,2,2,100.0,,7,,",
        "bob/b.ipynb,ex01,kernel-died,no,0,,,0,2,0.0,,7,,",
        "c.txt,,not-a-notebook,no,,,,0,0,,0,0,,",
    ]


def _scores(tmp_path, *lines, header="submission,question,points"):
    path = tmp_path / "scores.csv"
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def test_merging_manual_scores_fills_the_columns_and_the_totals(tmp_path):
    rows, exercise_set = _rows()
    before = json.dumps(rows)
    scores = _scores(
        tmp_path,
        "alice.ipynb,ex01.why_late,2.5",
        "alice.ipynb,ex01.missing_modality,0",
        "bob/b.ipynb,ex01.missing_modality,2",
        "bob/b.ipynb,ex01.why_late,",  # not graded yet
    )
    merged = merge_manual_scores(rows, scores, sets={"ex01": exercise_set})
    assert json.dumps(rows) == before, "the rows given are not modified"
    alice, bob, other = merged
    assert (alice["ex01.why_late"], alice["ex01.missing_modality"], alice["total"]) == ("2.5", "0", "2")
    assert (alice["total_with_written"], alice["max_with_written"]) == ("4.5", "7")
    assert (bob["ex01.missing_modality"], bob["ex01.why_late"], bob["total_with_written"]) == ("2", "", "")
    assert (other["total_with_written"], other["max_with_written"]) == ("0", "0")


@pytest.mark.parametrize(
    "lines, header, problem",
    [
        (["carol.ipynb,ex01.why_late,1"], None, "line 2: unknown submission 'carol.ipynb'"),
        (["alice.ipynb,ex01.nope,1"], None, "line 2: unknown question 'ex01.nope'"),
        (["alice.ipynb,ex01.double,1"], None, "unknown question 'ex01.double' .*auto-graded"),
        (["alice.ipynb,why_late,1"], None, "unknown question 'why_late'"),
        (["alice.ipynb,ex01.why_late,-1"], None, r"line 2: points for ex01.why_late must be between 0 and 3, got -1"),
        (["alice.ipynb,ex01.why_late,3.5"], None, "between 0 and 3, got 3.5"),
        (["alice.ipynb,ex01.why_late,three"], None, "points must be a number"),
        (["alice.ipynb,ex01.why_late,nan"], None, "between 0 and 3"),
        (["alice.ipynb,ex01.why_late,1", "alice.ipynb,ex01.why_late,2"], None, "line 3: duplicate row .*line 2"),
        (["alice.ipynb,ex01.why_late"], "submission,question", "missing column.*points"),
        (["alice.ipynb,1"], "student,points", "missing column.*submission, question"),
    ],
)
def test_bad_manual_scores_are_refused(tmp_path, lines, header, problem):
    rows, exercise_set = _rows()
    scores = _scores(tmp_path, *lines, **({"header": header} if header else {}))
    with pytest.raises(ValueError, match=problem):
        merge_manual_scores(rows, scores, sets={"ex01": exercise_set})


def test_a_score_for_another_sets_question_is_refused(tmp_path):
    rows, exercise_set = _rows()
    other = written_set(set_id="ex02")
    scores = _scores(tmp_path, "alice.ipynb,ex02.why_late,1")
    with pytest.raises(ValueError, match="ex02.why_late is not a question of 'alice.ipynb'"):
        merge_manual_scores(rows, scores, sets={"ex01": exercise_set, "ex02": other})
    with pytest.raises(ValueError, match="cannot read"):
        read_manual_scores(tmp_path / "missing.csv", sets={"ex01": exercise_set})
    extra = _scores(tmp_path, "alice.ipynb,ex01.why_late,1,good", header="\ufeffsubmission,question,points,comment")
    assert read_manual_scores(extra, sets={"ex01": exercise_set}) == {("alice.ipynb", "ex01.why_late"): 1.0}


# ----------------------------------------------------------------------------------------------------------------
# End to end: mmcourse grade --manual (one kernel per submission)
# ----------------------------------------------------------------------------------------------------------------
def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture
def e2e(tmp_path, monkeypatch):
    exercise_set = written_set(REAL_LOAD_SET("ex01"))
    monkeypatch.setattr(grader, "load_set", lambda s: exercise_set if s == "ex01" else REAL_LOAD_SET(s))
    masters = tmp_path / "masters"
    masters.mkdir()
    master = written_master()
    nbformat.write(master, str(masters / "ex01_overview.ipynb"))
    student = student_notebook(
        master, notebook_relpath="exercises/ex01_overview.ipynb", url=URL, exercise_set=exercise_set
    )
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    answered = with_answer(student, "why_late", "**Your answer:**\n\nEach modality keeps its own encoder.")
    answered = with_answer(answered, "missing_modality", "The other branch still predicts.")
    nbformat.write(answered, str(submissions / "alice.ipynb"))
    nbformat.write(student, str(submissions / "bob.ipynb"))  # untouched: YOUR ANSWER HERE
    nbformat.write(with_answer(student, "why_late", None), str(submissions / "carol.ipynb"))  # cell deleted
    return {"submissions": submissions, "masters": masters, "out": tmp_path / "out" / "grades.csv"}


def _grade(e2e, *extra):
    args = ["grade", str(e2e["submissions"]), "--out", str(e2e["out"]), "--public-only", "--quiet"]
    return main([*args, "--timeout", "60", "--masters", str(e2e["masters"]), *extra])


def test_grading_exports_written_answers_and_merges_manual_scores(e2e, tmp_path):
    before = _digest(e2e["submissions"])
    scores = _scores(
        tmp_path,
        "alice.ipynb,ex01.why_late,3",
        "alice.ipynb,ex01.missing_modality,1.5",
        "bob.ipynb,ex01.why_late,0",
    )
    assert _grade(e2e, "--manual", str(scores)) == 0
    assert _digest(e2e["submissions"]) == before, "the submissions changed"
    out = e2e["out"].parent
    assert sorted(p.name for p in out.iterdir()) == ["grades.csv", "grades_feedback", "grades_written_ex01.md"]
    with e2e["out"].open(encoding="utf-8", newline="") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    alice, bob, carol = rows["alice.ipynb"], rows["bob.ipynb"], rows["carol.ipynb"]
    assert list(alice)[-9:] == [
        "ex01.why_late",
        "ex01.missing_modality",
        "total",
        "max",
        "percent",
        "total_with_written",
        "max_with_written",
        "flags",
        "message",
    ]
    public = REAL_LOAD_SET("ex01").max_points()  # public tests only
    assert (alice["status"], alice["total"], alice["max"]) == ("ok", "0", f"{public:g}")
    assert (alice["ex01.why_late"], alice["ex01.missing_modality"], alice["total_with_written"]) == ("3", "1.5", "4.5")
    assert alice["max_with_written"] == f"{public + sum(WRITTEN_POINTS.values()):g}"
    assert (bob["ex01.why_late"], bob["ex01.missing_modality"], bob["total_with_written"]) == ("0", "", "")
    assert (carol["ex01.why_late"], carol["total_with_written"]) == ("", "")

    export = (out / "grades_written_ex01.md").read_text(encoding="utf-8")
    why_late = export.split("## ex01.missing_modality")[0]
    assert RUBRIC_LINES[0] in why_late and MODEL_ANSWER in why_late
    assert "#### alice.ipynb\n\n> **Your answer:**\n>\n> Each modality keeps its own encoder." in why_late
    assert "#### bob.ipynb\n\n(no answer)" in why_late and "#### carol.ipynb\n\n(no answer)" in why_late
    feedback = (out / "grades_feedback" / "alice.ipynb.txt").read_text(encoding="utf-8")
    assert "ex01.why_late: answered (3 points)" in feedback
    assert RUBRIC_LINES[0] not in feedback and MODEL_ANSWER not in feedback, "feedback goes to students"


def test_bad_manual_scores_stop_before_any_notebook_runs(e2e, tmp_path, capsys):
    scores = _scores(tmp_path, "dave.ipynb,ex01.why_late,1")
    assert _grade(e2e, "--manual", str(scores)) == 2
    assert "unknown submission 'dave.ipynb'" in capsys.readouterr().err
    assert not e2e["out"].exists()


def test_a_set_without_written_questions_has_no_written_columns():
    exercise_set = ExerciseSet("ex01", "Plain", chapter="01_overview")
    assert exercise_set.written == {}
    text = gradebook_csv(_outcomes()[2:], [])
    assert text.splitlines()[0].endswith("percent,total_with_written,max_with_written,flags,message")


def test_merge_scores_fills_a_written_gradebook_without_grading_again(tmp_path, capsys):
    exercise_set = written_set()
    gradebook = tmp_path / "grades.csv"
    gradebook.write_text(gradebook_csv(_outcomes(), [("ex01", "f")], list(exercise_set.written.values())))
    scores = _scores(tmp_path, "alice.ipynb,ex01.why_late,2.5", "alice.ipynb,ex01.missing_modality,1")
    merge_scores_into_gradebook(gradebook, scores, sets={"ex01": exercise_set})
    lines = gradebook.read_text().splitlines()
    assert lines[0].startswith("submission,set,status,graded,ex01.f,ex01.why_late,ex01.missing_modality,total,")
    assert lines[1] == "alice.ipynb,ex01,ok,yes,2,2.5,1,2,2,100.0,5.5,7,,"
    assert lines[2:] == ["bob/b.ipynb,ex01,kernel-died,no,0,,,0,2,0.0,,7,,", "c.txt,,not-a-notebook,no,,,,0,0,,0,0,,"]

    before = gradebook.read_bytes()
    bad = _scores(tmp_path, "alice.ipynb,ex01.why_late,9")
    with pytest.raises(ValueError, match="between 0 and 3"):
        merge_scores_into_gradebook(gradebook, bad, sets={"ex01": exercise_set})
    assert gradebook.read_bytes() == before, "a bad score must leave the gradebook as it was"
    with pytest.raises(ValueError, match="not a gradebook"):
        merge_scores_into_gradebook(scores, scores, sets={"ex01": exercise_set})
    with pytest.raises(ValueError, match="cannot read the gradebook"):
        merge_scores_into_gradebook(tmp_path / "missing.csv", scores, sets={"ex01": exercise_set})


def test_merge_scores_command_reports_bad_input_and_writes_out(tmp_path, capsys):
    gradebook = tmp_path / "grades.csv"
    gradebook.write_text("submission,set\nalice.ipynb,ex01\n")
    scores = _scores(tmp_path, "alice.ipynb,ex01.dropout_experiment,1")
    assert main(["exercises", "merge-scores", str(gradebook), str(scores)]) == 2
    assert "not a gradebook" in capsys.readouterr().err
    header = "submission,set,status,graded,total,max,percent,total_with_written,max_with_written,flags,message"
    gradebook.write_text(f"{header}\nalice.ipynb,ex01,ok,yes,10,32,31.2,,35,,\n")
    out = tmp_path / "merged.csv"
    assert main(["exercises", "merge-scores", str(gradebook), str(scores), "--out", str(out)]) == 0
    with out.open(encoding="utf-8", newline="") as f:
        merged = list(csv.DictReader(f))
    assert merged[0]["ex01.dropout_experiment"] == "1"
    assert list(merged[0])[-7:] == header.split(",")[-7:], "new written columns go before the totals"
    assert gradebook.read_text().startswith(header), "--out leaves the gradebook as it was"
