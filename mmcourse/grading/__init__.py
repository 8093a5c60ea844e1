"""Graded exercises: the exercise format, instant feedback in notebooks, and the instructor's tools.

Students::

    from mmcourse.grading import check
    check("ex04.clip_loss")        # public tests of one question (✓/✗, expected vs got, hints, points)
    check("ex04")                  # every question of the set

Instructors (see ``exercises/README.md``)::

    mmcourse exercises generate          # master notebooks -> student notebooks in exercises/
    mmcourse exercises release OUT_DIR   # the student edition (no solutions, no hidden tests)
    mmcourse grade SUBMISSIONS --out grades.csv [--manual scores.csv]   # + written answers to grade by hand

This package holds only what students may see: the format (:mod:`.spec`), assertions (:mod:`.expect`), the test
runner (:mod:`.runner`), the checker (:mod:`.check`) and the public tests (:mod:`.public`). Solutions and hidden
tests live in ``exercises/instructor/``, outside the installed package. Importing this package does not import
torch; loading an exercise set does.
"""

from mmcourse.grading.check import CheckReport, check
from mmcourse.grading.results import QuestionResult, SetResult, TestResult, WrittenResult
from mmcourse.grading.spec import (
    ExerciseSet,
    HiddenTests,
    Question,
    TestCase,
    WrittenQuestion,
    available_sets,
    load_set,
)

__all__ = [
    "check",
    "CheckReport",
    "ExerciseSet",
    "HiddenTests",
    "Question",
    "TestCase",
    "WrittenQuestion",
    "QuestionResult",
    "WrittenResult",
    "SetResult",
    "TestResult",
    "available_sets",
    "load_set",
]
