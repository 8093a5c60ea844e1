"""Instant feedback in the exercise notebooks: ``check("ex04.clip_loss")``.

The checker looks the answer up by name in the notebook that calls it (the caller's globals, which in Jupyter and
Colab are the notebook's namespace), runs the question's *public* tests and prints one line per test (✓/✗, the
points, and for a failure: what was expected, what came, a hint). It works offline, does not care what the
notebook file is called, and reports — never raises — whatever the student's code does. Hidden tests, which the
instructor's grader adds, are not part of the installed package.

Each question's heading in the notebook gives its points, public and hidden tests together; the last line of the
report says which share of them the public tests cover ("Public tests: 3/5 points checked here, of this question's
9; the grader's hidden tests give the other 4.").

Written questions (answered in words, in a markdown cell) are graded by a person: ``check("ex04.<name>")``
reports their points and, when it can read the notebook file from the kernel (JupyterLab, Notebook and VS Code
tell the kernel where it is; Colab does not), whether the answer cell still says ``YOUR ANSWER HERE`` — as last
saved. ``check("ex04")`` lists them after the auto-graded questions.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from mmcourse.grading.results import QuestionResult, SetResult, WrittenResult, format_points
from mmcourse.grading.runner import run_question, run_set
from mmcourse.grading.spec import Question, WrittenQuestion, load_set, parse_check_name

__all__ = ["check", "CheckReport"]

#: Seconds a single test may run inside ``check`` before it is reported as too slow.
CHECK_TIME_LIMIT = 60.0


class CheckReport:
    """What :func:`check` returns: the result plus its printed report.

    ``check`` prints the report itself; when the call is the last line of a cell, Jupyter would display the
    returned object as well, so the object shows nothing the first time Jupyter displays it (the report is already
    on screen). ``print(report)``, ``str(report)`` and later displays show the full text; ``.result`` holds the
    numbers (``report.points``, ``report.max_points``, ``report.passed``).
    """

    def __init__(
        self,
        result: QuestionResult | SetResult | WrittenResult,
        text: str,
        *,
        printed: bool,
        written: list[WrittenResult] | None = None,
    ):
        self.result, self.text = result, text
        self._printed = printed
        #: the set's written questions (``check("exNN")``), or ``[result]`` for one written question
        self.written = written if written is not None else ([result] if isinstance(result, WrittenResult) else [])

    @property
    def points(self) -> float:
        return self.result.points

    @property
    def max_points(self) -> float:
        return self.result.max_points

    @property
    def passed(self) -> bool:
        return _all_passed(self.result)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return repr(self.result)

    def _ipython_display_(self) -> None:
        if self._printed:
            self._printed = False
            return
        print(self.text)


def _notebook_namespace() -> Mapping | None:
    """The IPython user namespace, if IPython is running (without importing IPython otherwise)."""
    ipython_module = sys.modules.get("IPython")
    get_ipython = getattr(ipython_module, "get_ipython", None)
    shell = get_ipython() if get_ipython else None
    return getattr(shell, "user_ns", None)


def _find_namespace(name: str, caller_globals: Mapping) -> Mapping:
    if name in caller_globals:
        return caller_globals
    user_ns = _notebook_namespace()
    if user_ns is not None and name in user_ns:
        return user_ns
    return caller_globals


def _notebook_candidates(caller_globals: Mapping, namespace: Mapping | None) -> list[str]:
    """Paths the kernel was told for its notebook file (VS Code, Jupyter Server >= 2), most specific first."""
    found = []
    for ns in (namespace, caller_globals, _notebook_namespace()):
        if isinstance(ns, Mapping):
            found += [ns.get("__vsc_ipynb_file__"), ns.get("__session__")]
    found.append(os.environ.get("JPY_SESSION_NAME"))
    return [p for p in found if isinstance(p, (str, os.PathLike)) and str(p).endswith(".ipynb")]


def _read_notebook(path, set_id: str) -> dict | None:
    """The notebook at ``path`` as JSON, if readable and not of another exercise set; None otherwise."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        meta = nb.get("metadata", {}).get("mmcourse", {})
        other = meta.get("exercise_set") if isinstance(meta, dict) else None
        if not isinstance(nb.get("cells"), list) or (other is not None and other != set_id):
            return None
        return nb
    except Exception:  # noqa: BLE001 - check() reports, it never raises over a file it could not read
        return None


def _written_result(question: WrittenQuestion, nb: dict | None, source: str) -> WrittenResult:
    """The question's points, and the state of its answer cell if the notebook could be read."""
    result = WrittenResult(question.key, question.title, float(question.points))
    if nb is None:
        return result
    from mmcourse.grading.authoring import ANSWER_PLACEHOLDER, answer_text, written_cells

    cells = written_cells(nb).get(question.name)
    if not cells:
        result.state = "missing"
    else:
        text = cells[0].get("source", "")
        text = "".join(text) if isinstance(text, list) else str(text)
        lines = {line.strip() for line in text.split("\n")}
        result.state = "unanswered" if ANSWER_PLACEHOLDER in lines or answer_text(text) is None else "answered"
    result.source = source
    return result


def _notebook_for(set_id: str, notebook, caller_globals: Mapping, namespace: Mapping | None):
    """``(notebook JSON or None, description)`` of the notebook calling ``check``."""
    paths = [notebook] if notebook is not None else _notebook_candidates(caller_globals, namespace)
    for path in paths:
        nb = _read_notebook(path, set_id)
        if nb is not None:
            return nb, f"{Path(path).name} as last saved"
    return None, ""


def check(
    name: str,
    answer=None,
    *,
    namespace: Mapping | None = None,
    quiet: bool = False,
    notebook: str | os.PathLike | None = None,
) -> CheckReport:
    """Run the public tests of one question (``"ex04.clip_loss"``) or of a whole set (``"ex04"``).

    Args:
        name: ``"<set>.<question>"`` as printed in the exercise notebook, or ``"<set>"`` for every question.
        answer: the object to test; by default the notebook's global with the question's name.
        namespace: where to look the answer up (default: the caller's globals, then the IPython namespace).
        quiet: do not print (the report is still returned).
        notebook: the notebook file to read written answers from (default: the one the kernel was told about, if
            any — JupyterLab, Notebook and VS Code say; Colab does not).
    Returns:
        a :class:`CheckReport` (``.result`` is a :class:`QuestionResult`, :class:`SetResult` or, for a written
        question, :class:`WrittenResult`; ``.written`` lists the written questions).
    """
    set_id, question_name = parse_check_name(name)
    exercise_set = load_set(set_id)
    caller_globals = inspect.currentframe().f_back.f_globals
    written_questions = getattr(exercise_set, "written", {})
    if question_name is not None and question_name in written_questions:
        if answer is not None:
            raise ValueError(f"{name} is answered in words, in the notebook: check({name!r}) takes no answer=")
        nb, source = _notebook_for(set_id, notebook, caller_globals, namespace)
        result = _written_result(written_questions[question_name], nb, source)
        report = CheckReport(result, result.report(), printed=not quiet)
        if not quiet:
            print(report.text)
        return report
    written: list[WrittenResult] = []
    if question_name is None:
        if answer is not None:
            raise ValueError("answer= only works with one question, e.g. check('ex04.clip_loss', my_fn)")
        if namespace is None:
            first = next(iter(exercise_set), None)
            namespace = _find_namespace(first.name, caller_globals) if first is not None else caller_globals
        result = run_set(exercise_set, namespace, time_limit=CHECK_TIME_LIMIT)
        if written_questions:
            nb, source = _notebook_for(set_id, notebook, caller_globals, namespace)
            written = [_written_result(q, nb, source) for q in written_questions.values()]
    else:
        question = exercise_set[question_name]
        if namespace is None:  # the answer's own module is where its frames run (for the reference guard)
            namespace = (
                getattr(answer, "__globals__", caller_globals)
                if answer is not None
                else _find_namespace(question.name, caller_globals)
            )
        result = run_question(question, namespace, answer=answer, time_limit=CHECK_TIME_LIMIT)
    questions = list(exercise_set) if question_name is None else [exercise_set[question_name]]
    footer = _footer(result, questions, whole_set=question_name is None)
    text = "\n\n".join([result.report(), *(w.report() for w in written)])
    if written:
        footer += "\nWritten questions are graded by a person."
    report = CheckReport(result, f"{text}\n{footer}", printed=not quiet, written=written)
    if not quiet:
        print(report.text)
    return report


def _footer(result: QuestionResult | SetResult, questions: list[Question], *, whole_set: bool) -> str:
    """What the points above mean: the public tests' share of the question's (set's) points, the rest hidden.

    ``check`` runs only the public tests; the notebook's headings give each question's total, public and hidden
    tests together. Without declared totals (``SET.question(..., points=...)``) it says only that hidden tests
    follow.
    """
    passed = _all_passed(result)
    totals = [q.points for q in questions]
    if not questions or any(t is None for t in totals):
        if passed:
            return "All public tests pass. The grader will also run hidden tests."
        return "(public tests; the grader adds hidden tests)"
    total = sum(totals)
    hidden = total - sum(q.public_points for q in questions)
    points = format_points(total)
    of = f"of the set's {points} auto-graded points" if whole_set else f"of this question's {points}"
    head = "All public tests pass" if passed else "Public tests"
    line = f"{head}: {format_points(result.points)}/{format_points(result.max_points)} points checked here, {of}"
    if hidden > 0:
        return f"{line}; the grader's hidden tests give the other {format_points(hidden)}."
    return f"{line}."


def _all_passed(result: QuestionResult | SetResult | WrittenResult) -> bool:
    if isinstance(result, SetResult):
        return all(q.passed for q in result.questions)
    return result.passed
