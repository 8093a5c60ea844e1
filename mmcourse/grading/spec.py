"""The exercise format: sets of questions, each question a list of tests worth points.

An exercise set (one per chapter) is declared in a *public* module ``mmcourse/grading/public/exNN.py``, shipped
with the package so that :func:`mmcourse.grading.check` works anywhere (Colab included)::

    SET = ExerciseSet("ex04", "Contrastive learning", chapter="04_contrastive", version=1)
    clip_loss = SET.question("clip_loss", "CLIP's symmetric contrastive loss",
                             forbidden=("mmcourse.objectives.contrastive.contrastive_loss",))

    @clip_loss.test(points=1, hint="Return a 0-d tensor: the mean over the batch.")
    def returns_a_scalar(fn):
        \"\"\"returns a scalar tensor\"\"\"
        expect_tensor(fn(torch.randn(4, 8), torch.randn(4, 8)), shape=())

*Hidden* tests live outside the package, in ``exercises/instructor/hidden/exNN.py``, and add to the same
questions::

    HIDDEN = HiddenTests(SET_ID)             # e.g. "ex04"

    @HIDDEN.test(QUESTION_NAME, points=3)    # e.g. "clip_loss"
    def agrees_with_a_reference(fn): ...

A test receives the student's object (function or class) and returns nothing; it fails by raising (usually a
:class:`~mmcourse.grading.expect.Mismatch`). Points are per test, so a question earns partial credit. The
question's name is the name the student defines in the notebook. ``forbidden`` lists dotted names of library
reference implementations that the answer must not call (see :mod:`mmcourse.grading.runner`).

``points`` declares the question's total, public *and* hidden tests together (what its heading in the notebook
says), so that :func:`~mmcourse.grading.check.check` can tell the student which share of it the public tests
cover; the course's tests check that it equals the public + hidden points. ``printed_in`` names the chapter code
that answers the question nearly verbatim (e.g. ``"05_pretraining: beam_search_one"``), if any: such a question
may be worth at most :data:`PRINTED_MAX_SHARE` of its set's auto-graded points.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "TestCase",
    "Question",
    "ExerciseSet",
    "HiddenTests",
    "WrittenQuestion",
    "SET_ID_PATTERN",
    "PRINTED_MAX_SHARE",
    "available_sets",
    "load_set",
    "parse_check_name",
]

#: Exercise set ids: ``ex`` + two digits (the chapter number).
SET_ID_PATTERN = re.compile(r"ex\d\d")
_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The largest share of a set's auto-graded points that a question whose answer a chapter prints may carry.
PRINTED_MAX_SHARE = 0.20


def _first_doc_line(fn: Callable) -> str:
    doc = (fn.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else fn.__name__.replace("_", " ")


def _check_points(points) -> float:
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not points > 0:
        raise ValueError(f"points must be a positive number, got {points!r}")
    return points


@dataclass(frozen=True)
class TestCase:
    """One test of a question: ``fn(student_object)`` passes unless it raises."""

    __test__ = False  # not a pytest test class

    name: str
    description: str
    points: float
    fn: Callable[[object], None]
    hint: str = ""
    hidden: bool = False


@dataclass
class Question:
    """A graded question: the student defines ``name`` (a function or a class) in the notebook."""

    set_id: str
    name: str
    title: str
    kind: str = "function"
    forbidden: tuple[str, ...] = ()
    tests: list[TestCase] = field(default_factory=list)
    points: float | None = None  # the declared total, public + hidden tests (None: not declared)
    printed_in: str = ""  # the chapter code that answers it nearly verbatim, e.g. "05_pretraining: beam_search_one"

    @property
    def key(self) -> str:
        """``"ex04.clip_loss"``: what students pass to ``check``."""
        return f"{self.set_id}.{self.name}"

    def test(self, points: float = 1, hint: str = "") -> Callable[[Callable], Callable]:
        """Decorator registering a public test; its docstring's first line is what the student reads."""
        _check_points(points)

        def register(fn: Callable) -> Callable:
            if any(t.name == fn.__name__ for t in self.tests):
                raise ValueError(f"{self.key}: two tests are named {fn.__name__!r}")
            self.tests.append(TestCase(fn.__name__, _first_doc_line(fn), points, fn, hint))
            return fn

        return register

    def all_tests(self, hidden: HiddenTests | None = None) -> list[TestCase]:
        """Public tests, then the hidden ones for this question (if ``hidden`` is given)."""
        extra = hidden.tests.get(self.name, []) if hidden is not None else []
        return [*self.tests, *extra]

    def max_points(self, hidden: HiddenTests | None = None) -> float:
        return sum(t.points for t in self.all_tests(hidden))

    @property
    def public_points(self) -> float:
        """The points of the public tests: what ``check`` can award."""
        return sum(t.points for t in self.tests)

    @property
    def hidden_points(self) -> float | None:
        """The points only the grader's hidden tests award (declared total - public), or None if not declared."""
        return None if self.points is None else self.points - self.public_points


@dataclass(frozen=True)
class WrittenQuestion:
    """A question answered in words (a markdown cell), graded by a person against a rubric.

    In the master notebook the answer cell is a markdown cell whose metadata holds
    ``{"mmcourse": {"written": name}}``; its model answer sits between ``<!-- BEGIN SOLUTION -->`` and
    ``<!-- END SOLUTION -->`` and its rubric between ``<!-- BEGIN RUBRIC -->`` and ``<!-- END RUBRIC -->``. The
    student notebook gets ``YOUR ANSWER HERE`` in their place; the grader exports the students' answers next to
    the rubric, and ``mmcourse grade ... --manual scores.csv`` merges the points a person gave.
    """

    set_id: str
    name: str
    title: str
    points: float

    @property
    def key(self) -> str:
        return f"{self.set_id}.{self.name}"


class ExerciseSet:
    """The questions of one chapter's exercise notebook, in notebook order."""

    def __init__(self, set_id: str, title: str, *, chapter: str, version: int = 1):
        if not isinstance(set_id, str) or not SET_ID_PATTERN.fullmatch(set_id):
            raise ValueError(f"set_id must look like 'ex04', got {set_id!r}")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"version must be a positive int, got {version!r}")
        self.id, self.title, self.chapter, self.version = set_id, title, chapter, version
        self.questions: dict[str, Question] = {}
        self.written: dict[str, WrittenQuestion] = {}

    def question(
        self,
        name: str,
        title: str,
        *,
        kind: str = "function",
        forbidden: Iterable[str] = (),
        points: float | None = None,
        printed_in: str = "",
    ) -> Question:
        """Declare a question; ``name`` is the function/class name the student defines.

        ``points``: its total, public + hidden tests (see the module's docstring); ``printed_in``: the chapter code
        that answers it nearly verbatim, if any.
        """
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise ValueError(f"question name must be a Python identifier, got {name!r}")
        if name in self.questions:
            raise ValueError(f"{self.id}: question {name!r} declared twice")
        if kind not in ("function", "class"):
            raise ValueError(f"kind must be 'function' or 'class', got {kind!r}")
        if points is not None:
            _check_points(points)
        if not isinstance(printed_in, str):
            raise TypeError(f"printed_in must be a string, got {type(printed_in).__name__}")
        q = Question(self.id, name, title, kind, tuple(forbidden), points=points, printed_in=printed_in)
        self.questions[name] = q
        return q

    def written_question(self, name: str, title: str, *, points: float) -> WrittenQuestion:
        """Declare a question answered in words (see :class:`WrittenQuestion`), worth ``points`` graded by hand."""
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise ValueError(f"question name must be a Python identifier, got {name!r}")
        if name in self.questions or name in self.written:
            raise ValueError(f"{self.id}: question {name!r} declared twice")
        question = WrittenQuestion(self.id, name, title, _check_points(points))
        self.written[name] = question
        return question

    def __getitem__(self, name: str) -> Question:
        try:
            return self.questions[name]
        except KeyError:
            known = ", ".join(self.questions)
            raise KeyError(f"{self.id} has no question {name!r}; its questions are: {known}") from None

    def __iter__(self):
        return iter(self.questions.values())

    def max_points(self, hidden: HiddenTests | None = None) -> float:
        return sum(q.max_points(hidden) for q in self)

    def __repr__(self) -> str:
        return f"ExerciseSet({self.id!r}, {len(self.questions)} questions, version {self.version})"


class HiddenTests:
    """Instructor-only tests added to the questions of a set at grading time."""

    def __init__(self, set_id: str):
        if not isinstance(set_id, str) or not SET_ID_PATTERN.fullmatch(set_id):
            raise ValueError(f"set_id must look like 'ex04', got {set_id!r}")
        self.set_id = set_id
        self.tests: dict[str, list[TestCase]] = {}

    def test(self, question: str, points: float = 1, hint: str = "") -> Callable[[Callable], Callable]:
        """Decorator registering a hidden test of ``question``."""
        _check_points(points)

        def register(fn: Callable) -> Callable:
            tests = self.tests.setdefault(question, [])
            if any(t.name == fn.__name__ for t in tests):
                raise ValueError(f"{self.set_id}.{question}: two hidden tests are named {fn.__name__!r}")
            tests.append(TestCase(fn.__name__, _first_doc_line(fn), points, fn, hint, hidden=True))
            return fn

        return register

    def check_against(self, exercise_set: ExerciseSet) -> None:
        """Raise unless every hidden test belongs to a question of ``exercise_set``."""
        unknown = sorted(set(self.tests) - set(exercise_set.questions))
        if unknown:
            raise ValueError(f"hidden tests for {self.set_id} name unknown questions: {unknown}")


def available_sets() -> list[str]:
    """Ids of the exercise sets shipped in :mod:`mmcourse.grading.public`, sorted."""
    from mmcourse.grading import public

    return sorted(m.name for m in pkgutil.iter_modules(public.__path__) if SET_ID_PATTERN.fullmatch(m.name))


def load_set(set_id: str) -> ExerciseSet:
    """The :class:`ExerciseSet` declared in ``mmcourse.grading.public.<set_id>``."""
    if not isinstance(set_id, str) or not SET_ID_PATTERN.fullmatch(set_id):
        raise ValueError(f"set_id must look like 'ex04', got {set_id!r}")
    if set_id not in available_sets():
        raise ValueError(f"unknown exercise set {set_id!r}; available: {', '.join(available_sets())}")
    module = importlib.import_module(f"mmcourse.grading.public.{set_id}")
    return module.SET


def parse_check_name(name: str) -> tuple[str, str | None]:
    """``"ex04.clip_loss"`` → ``("ex04", "clip_loss")``; ``"ex04"`` → ``("ex04", None)``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string like 'ex04.clip_loss', got {type(name).__name__}")
    set_id, _, question = name.strip().partition(".")
    if not SET_ID_PATTERN.fullmatch(set_id) or (question and not _NAME_PATTERN.fullmatch(question)):
        raise ValueError(f"name must look like 'ex04.clip_loss' (or 'ex04' for the whole set), got {name!r}")
    return set_id, (question or None)
