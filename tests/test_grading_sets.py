"""Every exercise set, run in-process (no kernel): masters score 100 %, student notebooks 0 %, specs consistent."""

import re
from pathlib import Path

import nbformat
import pytest
from grading_fixtures import execute_in_process, hidden_tests

from mmcourse.grading.authoring import heading_points, master_questions
from mmcourse.grading.layout import MASTERS_DIR, STUDENT_DIR
from mmcourse.grading.runner import _resolve, run_set
from mmcourse.grading.spec import available_sets, load_set

ROOT = Path(__file__).resolve().parent.parent
SETS = available_sets()
HEADING = re.compile(r"^## Question (\d+) · `(\w+)` \(([^)\n]*)\)", re.MULTILINE)


def _master(set_id: str) -> Path:
    return next((ROOT / MASTERS_DIR).glob(f"{set_id}_*.ipynb"))


def _read(path: Path):
    return nbformat.read(str(path), as_version=4)


@pytest.mark.parametrize("set_id", SETS)
def test_master_scores_full_marks_with_hidden_tests(set_id):
    exercise_set, hidden = load_set(set_id), hidden_tests(set_id)
    result = run_set(
        exercise_set, execute_in_process(_read(_master(set_id))), hidden, time_limit=30, capture_output=True
    )
    assert result.points == result.max_points == exercise_set.max_points(hidden), result.report()


@pytest.mark.parametrize("set_id", SETS)
def test_student_notebook_scores_zero_and_says_not_implemented(set_id):
    student = ROOT / STUDENT_DIR / _master(set_id).name
    result = run_set(
        load_set(set_id), execute_in_process(_read(student)), hidden_tests(set_id), time_limit=30, capture_output=True
    )
    assert result.points == 0.0
    for question in result.questions:
        assert question.max_points > 0
        for test in question.tests:
            assert any("not implemented yet" in line for line in test.message), (question.key, test.name)
        assert "not implemented yet: replace `raise NotImplementedError` with your code" in question.report()


@pytest.mark.parametrize("set_id", SETS)
def test_master_structure_matches_the_spec(set_id):
    """≥ 3 questions, each defined in the master, checked right after, with its points in the heading: the total
    (declared in the spec, equal to its public + hidden tests) and the share that check() runs."""
    exercise_set, hidden = load_set(set_id), hidden_tests(set_id)
    nb = _read(_master(set_id))
    assert nb.metadata["mmcourse"]["exercise_set"] == set_id
    assert len(exercise_set.questions) >= 3
    defined = master_questions(nb)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    headings = HEADING.findall(markdown)
    assert [name for _, name, _ in headings] == list(exercise_set.questions)
    assert [int(n) for n, _, _ in headings] == list(range(1, len(headings) + 1))
    for (_, name, points), question in zip(headings, exercise_set, strict=True):
        assert name in defined
        assert question.points == question.max_points(hidden), (
            f"{question.key}: declared points={question.points}, its public + hidden tests give "
            f"{question.max_points(hidden):g}"
        )
        assert points == heading_points(question, hidden), f"{question.key}: the heading says ({points})"
        assert len(question.tests) >= 2 and len(hidden.tests.get(name, [])) >= 1, question.key
    code = [c.source.strip() for c in nb.cells if c.cell_type == "code"]
    for question in exercise_set:
        index = next(i for i, src in enumerate(code) if re.search(rf"^(def|class) {question.name}\b", src, re.M))
        assert code[index + 1] == f'check("{question.key}")', f"no check cell right after {question.name}"
    assert code[-1] == f'check("{set_id}")'


@pytest.mark.parametrize("set_id", SETS)
def test_forbidden_names_exist_where_their_module_does(set_id):
    """A typo in a forbidden name would silently protect nothing: if the module exists, so must the name."""
    import importlib

    for question in load_set(set_id):
        for dotted in question.forbidden:
            parts = dotted.split(".")
            shortest = 2 if parts[0] == "mmcourse" else 1  # "mmcourse" alone: the module is not written yet
            for cut in range(len(parts) - 1, shortest - 1, -1):
                try:
                    importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                assert _resolve(dotted) is not None, f"{question.key}: {dotted} does not exist"
                break


LIBRARY_ANSWERS = [
    (
        "ex04",
        "clip_loss",
        "from mmcourse.objectives.contrastive import contrastive_loss\n"
        "def clip_loss(image_features, text_features, temperature=0.07):\n"
        "    return contrastive_loss(image_features, text_features, temperature)\n",
    ),
    (
        "ex05",
        "sample_hard_negatives",
        "import mmcourse.objectives.itm as P\n"
        "def sample_hard_negatives(similarity, generator=None):\n"
        "    return P.sample_hard_negatives(similarity, generator=generator)\n",
    ),
    (
        "ex03",
        "attention_weights",
        "import torch, torch.nn.functional as F\n"
        "def attention_weights(query, key, mask=None):\n"
        "    eye = torch.eye(key.shape[1]).expand(key.shape[0], -1, -1)\n"
        "    m = None if mask is None else (mask[:, None, :] if mask.dim() == 2 else mask)\n"
        "    return F.scaled_dot_product_attention(query, key, eye, attn_mask=m)\n",
    ),
]


@pytest.mark.parametrize("set_id, name, source", LIBRARY_ANSWERS, ids=[f"{s}.{n}" for s, n, _ in LIBRARY_ANSWERS])
def test_answers_that_call_the_reference_implementation_score_zero(set_id, name, source):
    import linecache

    namespace = execute_in_process(_read(_master(set_id)))
    filename = f"<cell {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    question = load_set(set_id)[name]
    result = run_set(load_set(set_id), namespace, hidden_tests(set_id), capture_output=True)[name]
    assert result.points == 0.0 and "reference implementation" in result.violation, result.report()
    assert result.max_points == question.max_points(hidden_tests(set_id))


@pytest.mark.parametrize("set_id", SETS)
def test_check_says_the_same_split_as_the_headings(set_id):
    """check() runs the public tests only; its last line gives their share of the question's points, as the heading."""
    from mmcourse.grading import check

    exercise_set, hidden = load_set(set_id), hidden_tests(set_id)
    for question in exercise_set:
        last = check(question.key, namespace={}, quiet=True).text.splitlines()[-1]
        total, public = question.max_points(hidden), question.public_points
        assert f"0/{public:g} points checked here, of this question's {total:g}" in last, last
        assert f"the grader's hidden tests give the other {total - public:g}." in last, last
    last = check(set_id, namespace={}, quiet=True).text.splitlines()
    assert any(f"of the set's {exercise_set.max_points(hidden):g} auto-graded points" in line for line in last)


def test_exercises_list_shows_each_questions_public_and_total_points(capsys):
    from mmcourse.__main__ import main

    assert main(["exercises", "list"]) == 0
    printed = capsys.readouterr().out
    for set_id in available_sets():
        for q in load_set(set_id):
            line = next(line for line in printed.splitlines() if line.split()[:1] == [q.key])
            assert f"{q.public_points:g} public points of {q.points:g}" in line, line
