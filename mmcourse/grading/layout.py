"""Where the exercise material lives in a course checkout (instructor side; see ``exercises/README.md``).

::

    exercises/ex01_overview.ipynb …          student notebooks, generated — never edit by hand
    exercises/instructor/masters/*.ipynb     master notebooks with # BEGIN SOLUTION / # END SOLUTION
    exercises/instructor/hidden/exNN.py      hidden tests (HIDDEN = HiddenTests("exNN"))
    mmcourse/grading/public/exNN.py          public tests (ship with the package; check() uses them)

Everything under ``exercises/instructor/`` stays out of the installed package (it is not under ``mmcourse/``)
and out of the student release.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STUDENT_DIR", "MASTERS_DIR", "HIDDEN_DIR", "course_root"]

STUDENT_DIR = Path("exercises")
MASTERS_DIR = STUDENT_DIR / "instructor" / "masters"
HIDDEN_DIR = STUDENT_DIR / "instructor" / "hidden"


def course_root(start: str | Path | None = None) -> Path:
    """The course checkout holding ``exercises/instructor``: ``start`` (default: the current directory) or one
    of its parents, else the checkout this package is installed from (editable install)."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for candidate in (here, *here.parents, Path(__file__).resolve().parents[2]):
        if (candidate / MASTERS_DIR).is_dir():
            return candidate
    raise FileNotFoundError(
        f"no {MASTERS_DIR}/ found in {here} or its parents: run this from the course checkout "
        "(the instructor material is not part of the installed package)"
    )
