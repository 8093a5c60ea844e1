"""Instant feedback in the exercise notebooks: ``check("ex04.clip_loss")``.

The checker looks the answer up by name in the notebook that calls it (the caller's globals, which in Jupyter and
Colab are the notebook's namespace), runs the question's *public* tests and prints one line per test (✓/✗, the
points, and for a failure: what was expected, what came, a hint). It works offline, does not care what the
notebook file is called, and reports — never raises — whatever the student's code does. Hidden tests, which the
instructor's grader adds, are not part of the installed package.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping

from mmcourse.grading.results import QuestionResult, SetResult
from mmcourse.grading.runner import run_question, run_set
from mmcourse.grading.spec import load_set, parse_check_name

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

    def __init__(self, result: QuestionResult | SetResult, text: str, *, printed: bool):
        self.result, self.text = result, text
        self._printed = printed

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


def check(name: str, answer=None, *, namespace: Mapping | None = None, quiet: bool = False) -> CheckReport:
    """Run the public tests of one question (``"ex04.clip_loss"``) or of a whole set (``"ex04"``).

    Args:
        name: ``"<set>.<question>"`` as printed in the exercise notebook, or ``"<set>"`` for every question.
        answer: the object to test; by default the notebook's global with the question's name.
        namespace: where to look the answer up (default: the caller's globals, then the IPython namespace).
        quiet: do not print (the report is still returned).
    Returns:
        a :class:`CheckReport` (``.result`` is a :class:`QuestionResult` or :class:`SetResult`).
    """
    set_id, question_name = parse_check_name(name)
    exercise_set = load_set(set_id)
    caller_globals = inspect.currentframe().f_back.f_globals
    if question_name is None:
        if answer is not None:
            raise ValueError("answer= only works with one question, e.g. check('ex04.clip_loss', my_fn)")
        if namespace is None:
            namespace = _find_namespace(next(iter(exercise_set)).name, caller_globals)
        result = run_set(exercise_set, namespace, time_limit=CHECK_TIME_LIMIT)
    else:
        question = exercise_set[question_name]
        if namespace is None:  # the answer's own module is where its frames run (for the reference guard)
            namespace = (
                getattr(answer, "__globals__", caller_globals)
                if answer is not None
                else _find_namespace(question.name, caller_globals)
            )
        result = run_question(question, namespace, answer=answer, time_limit=CHECK_TIME_LIMIT)
    footer = (
        "All public tests pass. The grader will also run hidden tests."
        if _all_passed(result)
        else "(public tests; the grader adds hidden tests)"
    )
    report = CheckReport(result, f"{result.report()}\n{footer}", printed=not quiet)
    if not quiet:
        print(report.text)
    return report


def _all_passed(result: QuestionResult | SetResult) -> bool:
    if isinstance(result, SetResult):
        return all(q.passed for q in result.questions)
    return result.passed
