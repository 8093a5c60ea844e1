"""Gradescope autograder bundles: ``mmcourse exercises gradescope exNN OUT.zip``.

The bundle is a zip for the instructor's Gradescope account (upload it as the assignment's autograder; it holds
the set's **hidden tests**, so it is never handed to students)::

    setup.sh                         Gradescope runs it once, when it builds the autograder image
    run_autograder                   Gradescope runs it for every submission
    gradescope.json                  the set, its version, the files below and the grading limits
    mmcourse-<version>-py3-none-any.whl   the course package, built from this checkout
    hidden/exNN.py                   the set's hidden tests
    student/exNN_*.ipynb             the student notebook (templates of the written answers: no solutions)

**How the course package gets installed.** The bundle carries a wheel built from the checkout the bundle is made
in, and ``setup.sh`` installs it (with PyTorch's CPU build and the grader's kernel packages, from the public
package indexes) into a virtual environment. The other option, ``pip install git+<[project.urls] Repository>``,
would install whatever the repository holds when Gradescope builds the image: its public tests, runner and grader
may no longer match the hidden tests in the bundle (or the repository may be private, or renamed). The wheel is the
exact code the hidden tests were written against, and the bundle works without this checkout.

**What students see.** Only ``results.json``: per test its name (``exNN.question: description``), points and output
(what was expected and what came, as in the grader's feedback files). Public tests are ``visible``; hidden tests
``after_published``, and the top-level output counts the public points only (``score``, the total, includes the
hidden tests: when Gradescope shows it is up to the assignment's settings). The bundle contains no master notebook:
no model answer, rubric or solution is in it, so none can reach a student through it (:func:`build_bundle` also
refuses to pack a file, hidden tests aside, that holds a line of a solution or a rubric).

**Written questions** appear as tests with ``score`` and ``max_score`` 0 and an output saying that a person grades
them, whether the answer cell has an answer, and their points: add a manually graded question with those points to
the assignment's outline on Gradescope. The autograder's total is the auto-graded points of the set.

**The submission** is the one ``.ipynb`` file under ``$AUTOGRADER_ROOT/submission/`` (default ``/autograder``;
any name, any sub-folder). None, several, a notebook of another set, or an autograder failure give a
``results.json`` with score 0 and an output saying what to do, never a crash. ``run_autograder`` grades it with
:func:`mmcourse.grading.grader.grade_notebook`: the same fresh kernel, limits and tests as ``mmcourse grade``.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mmcourse.grading.results import WRITTEN_STATES, SetResult, format_points
from mmcourse.grading.spec import ExerciseSet, HiddenTests, load_set

__all__ = [
    "CONFIG_NAME",
    "build_bundle",
    "setup_script",
    "run_script",
    "find_notebooks",
    "graded_results",
    "ungraded_results",
    "run_autograder",
    "main",
]

CONFIG_NAME = "gradescope.json"
#: Packages the grading kernel needs besides the course package (their bounds come from its ``dev`` extra).
KERNEL_PACKAGES = ("nbclient", "nbformat", "ipykernel")
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
_EXECUTABLE = 0o100755 << 16  # zip external attributes: a regular file, rwxr-xr-x


# ----------------------------------------------------------------------------------------------------------------
# Building the bundle
# ----------------------------------------------------------------------------------------------------------------
def _build_wheel(root: Path, workdir: Path) -> Path:
    """A wheel of the course package, built from a copy of ``root``'s package sources (the checkout is untouched)."""
    src = workdir / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    shutil.copytree(root / "mmcourse", src / "mmcourse", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    code = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(workdir / "dist")], cwd=src, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError("could not build a wheel of the course package:\n  " + "\n  ".join(tail))
    wheel = workdir / "dist" / done.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as whl:
        strays = [n for n in whl.namelist() if not n.startswith(("mmcourse/", "mmcourse-"))]
    if strays:
        raise RuntimeError(f"the wheel holds files outside the package: {strays[:5]}")
    return wheel


def _requirements(wheel: Path) -> tuple[str, list[str]]:
    """``(torch requirement, [kernel package requirements])`` with the bounds declared in the wheel's metadata."""
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(whl.read(name).decode("utf-8"))
    declared: dict[str, str] = {}
    for entry in metadata.get_all("Requires-Dist") or []:
        spec, _, marker = entry.partition(";")
        package = re.match(r"\s*([A-Za-z0-9._-]*)", spec).group(1).lower()
        if not marker.strip() or "dev" in marker:
            declared.setdefault(package, spec.strip().replace(" ", ""))
    return declared.get("torch", "torch"), [declared.get(p, p) for p in KERNEL_PACKAGES]


def setup_script(set_id: str, wheel_name: str, torch: str, kernel_packages: list[str]) -> str:
    """``setup.sh``: Python's venv, then PyTorch (CPU), the course wheel and the kernel packages, into a venv."""
    packages = " ".join([f'"$SOURCE/{wheel_name}"', *(shlex.quote(p) for p in kernel_packages)])
    return f"""#!/usr/bin/env bash
# Gradescope autograder of mmcourse exercise set {set_id}: run once, when Gradescope builds the autograder image.
# Installs into the virtual environment $AUTOGRADER_ROOT/mmcourse-venv (default root: /autograder):
#   - PyTorch, CPU build ({torch}), from {TORCH_INDEX}
#   - the course package from the wheel in this bundle ({wheel_name}), built from the checkout that
#     made the bundle: its public tests and grader match the hidden tests in hidden/
#   - the grading kernel's packages: {", ".join(kernel_packages)}
set -euo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
SOURCE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
VENV="$ROOT/mmcourse-venv"
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "mmcourse needs Python 3.10 or newer" >&2
    exit 1
fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q --index-url {TORCH_INDEX} {shlex.quote(torch)}
"$VENV/bin/python" -m pip install -q {packages}
"$VENV/bin/python" -c 'import mmcourse.grading.gradescope, nbclient, ipykernel, torch'
"""


def run_script(set_id: str) -> str:
    """``run_autograder``: grade ``$AUTOGRADER_ROOT/submission/`` into ``results/results.json``, whatever happens."""
    return f"""#!/usr/bin/env bash
# Gradescope autograder of mmcourse exercise set {set_id}: run for every submission. Grades the notebook in
# $AUTOGRADER_ROOT/submission/ with the public and hidden tests and writes $AUTOGRADER_ROOT/results/results.json
# (default root: /autograder). MMCOURSE_PYTHON names another Python (default: the venv made by setup.sh).
set -uo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{MMCOURSE_PYTHON:-$ROOT/mmcourse-venv/bin/python}}"
"$PYTHON" -m mmcourse.grading.gradescope --root "$ROOT" && exit 0
if [ ! -s "$ROOT/results/results.json" ]; then  # Python itself failed: still give the student an answer
    mkdir -p "$ROOT/results"
    echo '{{"score": 0, "output": "The autograder could not start. Please tell your instructor.", "tests": []}}' \\
        > "$ROOT/results/results.json"
fi
"""


def _check_no_solutions(texts: dict[str, str], wheel: Path, root: Path) -> None:
    """Refuse a bundle in which ``texts`` (its files but the hidden tests) or the grading modules of ``wheel`` hold a
    line of a master's solution or rubric (see :func:`~mmcourse.grading.authoring.leak_markers`)."""
    from mmcourse.grading.authoring import leak_markers

    markers = leak_markers(root)
    lines = markers["solution"] | markers["rubric"]
    texts = dict(texts)
    with zipfile.ZipFile(wheel) as whl:  # the library may share generic lines with solutions: check the grader
        texts |= {
            f"{wheel.name}/{n}": whl.read(n).decode("utf-8", "ignore") for n in whl.namelist() if "/grading/" in n
        }
    leaks = [f"{name}: {line!r}" for name, text in texts.items() for line in sorted(lines) if line in text]
    if leaks:
        raise RuntimeError("the bundle would carry solution or rubric text:\n  " + "\n  ".join(leaks[:10]))


def build_bundle(
    set_id: str, out_zip: str | Path, *, root: str | Path | None = None, hidden_dir: str | Path | None = None
) -> Path:
    """Write the Gradescope autograder bundle of ``set_id`` to ``out_zip`` (see the module docstring).

    Args:
        set_id: the exercise set, e.g. ``"ex04"``.
        out_zip: the zip to write (atomically); its name must end in ``.zip``.
        root: the course checkout (default: :func:`~mmcourse.grading.layout.course_root`).
        hidden_dir: folder of the hidden tests (default: ``exercises/instructor/hidden`` of the checkout).
    Raises:
        ValueError: an unknown set, ``out_zip`` not a ``.zip``, no (or broken) hidden tests, no student notebook.
        RuntimeError: the wheel cannot be built, or a public part of the bundle holds solution text.
    """
    from mmcourse.grading.authoring import read_notebook_text
    from mmcourse.grading.grader import load_hidden_tests
    from mmcourse.grading.layout import HIDDEN_DIR, STUDENT_DIR, course_root
    from mmcourse.grading.similarity import student_notebook_path

    exercise_set = load_set(set_id)
    out_zip = Path(out_zip)
    if out_zip.suffix.lower() != ".zip":
        raise ValueError(f"the bundle must be a .zip file, got {str(out_zip)!r}")
    root = course_root(root)
    hidden_dir = Path(hidden_dir) if hidden_dir is not None else root / HIDDEN_DIR
    loaded = load_hidden_tests(hidden_dir, set_id)
    if loaded is None:
        raise ValueError(f"no hidden tests for {set_id}: {hidden_dir / f'{set_id}.py'} does not exist")
    student = student_notebook_path(set_id, root / STUDENT_DIR)
    with tempfile.TemporaryDirectory(prefix="mmcourse-gradescope-") as tmp:
        wheel = _build_wheel(root, Path(tmp))
        torch, kernel_packages = _requirements(wheel)
        config = {
            "set_id": set_id,
            "version": exercise_set.version,
            "hidden": f"hidden/{set_id}.py",
            "student_notebook": f"student/{student.name}",
            "options": {"timeout": 120.0, "grading_timeout": 60.0, "test_timeout": 10.0, "memory_mb": 4096},
        }
        members = {
            "setup.sh": setup_script(set_id, wheel.name, torch, kernel_packages).encode(),
            "run_autograder": run_script(set_id).encode(),
            CONFIG_NAME: (json.dumps(config, indent=2) + "\n").encode(),
            config["hidden"]: loaded[1].encode(),
            config["student_notebook"]: student.read_bytes(),
        }
        texts = {name: data.decode("utf-8") for name, data in members.items() if not name.endswith((".py", ".ipynb"))}
        _check_no_solutions({**texts, config["student_notebook"]: read_notebook_text(student)}, wheel, root)
        out_zip.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{out_zip.name}.", dir=str(out_zip.parent))
        os.close(fd)
        try:
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as bundle:
                for name, data in [*members.items(), (wheel.name, wheel.read_bytes())]:
                    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                    info.external_attr = _EXECUTABLE if name in ("setup.sh", "run_autograder") else 0o100644 << 16
                    bundle.writestr(info, data, zipfile.ZIP_DEFLATED)
            os.replace(partial, out_zip)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    return out_zip


# ----------------------------------------------------------------------------------------------------------------
# Grading on Gradescope
# ----------------------------------------------------------------------------------------------------------------
def find_notebooks(submission_dir: Path) -> list[Path]:
    """The ``.ipynb`` files under ``submission_dir`` (recursively; hidden files and checkpoints skipped)."""
    from mmcourse.grading.grader import find_submissions

    if not submission_dir.is_dir():
        return []
    return [p for p in find_submissions(submission_dir) if p.suffix.lower() == ".ipynb" and p.is_file()]


def _test_entry(name: str, score: float, max_score: float, output: str, hidden: bool) -> dict:
    """One entry of ``results.json``'s ``tests``; hidden tests are shown once the grades are published."""
    visibility = "after_published" if hidden else "visible"
    return {"name": name, "score": score, "max_score": max_score, "output": output, "visibility": visibility}


def _written_entries(exercise_set: ExerciseSet, states: dict[str, str | None]) -> list[dict]:
    """The written questions as tests worth 0 (a person grades them), with the state of their answer cells."""
    entries = []
    for q in exercise_set.written.values():
        state = WRITTEN_STATES.get(states.get(q.name) or "", "")
        output = f"Graded by a person ({format_points(q.points)} points, not part of the autograder score)."
        entries.append(_test_entry(f"{q.key}: {q.title} (written)", 0, 0, f"{output}\n{state}".strip(), False))
    return entries


def ungraded_results(
    exercise_set: ExerciseSet, hidden: HiddenTests | None, why: str, states: dict[str, str] | None = None
) -> dict:
    """``results.json`` when no tests could run: every test at 0, each output and the top-level output say why.

    ``states`` tells the written questions' entries whether their answer cells are answered (unknown if None).
    """
    tests = []
    for q in exercise_set:
        for t in q.all_tests(hidden):
            tests.append(_test_entry(f"{q.key}: {t.description}", 0, t.points, f"Not graded: {why}", t.hidden))
    tests += _written_entries(exercise_set, states or {})
    return {"score": 0, "output": f"Not graded: {why}", "tests": tests}


def graded_results(
    exercise_set: ExerciseSet, result: SetResult, notes: list[str], states: dict[str, str | None]
) -> dict:
    """``results.json`` of a graded notebook: one test per public and hidden test, then the written questions.

    A question that broke the rules (called the reference implementation) scores 0 in every test, saying why.
    ``notes`` (what happened while the notebook ran) and the public points make the top-level output.
    """
    tests = []
    for q in result.questions:
        for t in q.tests:
            lines = [line.strip() for line in t.report_lines(show_hints=True)]
            lines = [line for line in (q.violation, q.note, *lines) if line]
            score = 0.0 if q.violation else t.points
            tests.append(_test_entry(f"{q.key}: {t.description}", score, t.max_points, "\n".join(lines), t.hidden))
    tests += _written_entries(exercise_set, states)
    public = [t for t in tests if t["visibility"] == "visible" and t["max_score"]]
    head = (
        f"{exercise_set.id}: public tests {format_points(sum(t['score'] for t in public))}/"
        f"{format_points(sum(t['max_score'] for t in public))} points; "
        "the hidden tests are shown when the grades are published."
    )
    output = "\n".join([head, *(["", "While running your notebook:"] + [f"  - {n}" for n in notes] if notes else [])])
    return {"score": sum(t["score"] for t in tests), "output": output, "tests": tests}


def _written_states(nb, exercise_set: ExerciseSet, student_path: Path) -> dict[str, str]:
    """``answered`` / ``unanswered`` / ``missing`` per written question, the student notebook's cells as templates."""
    import nbformat

    from mmcourse.grading.authoring import WrittenCell, written_cells, written_name
    from mmcourse.grading.grader import submission_answers

    if not exercise_set.written:
        return {}
    templates, previous = {}, None
    for cell in nbformat.read(str(student_path), as_version=4).cells:
        name = written_name(cell)
        if name is not None:
            templates[name] = (WrittenCell(name, "", "", cell.source), previous)
        previous = cell.source if name is None else None
    answers, notes = submission_answers(nb, exercise_set.written, templates)
    found = written_cells(nb)
    return {
        name: "answered" if answers[name] else ("unanswered" if name in found or name in notes else "missing")
        for name in exercise_set.written
    }


def _grade_submission(root: Path, config: dict, exercise_set: ExerciseSet, hidden: HiddenTests | None) -> dict:
    """``results.json`` for the submission in ``root/submission/``: checked (one notebook of this set), then graded."""
    from mmcourse.grading.grader import (
        MAX_NOTEBOOK_BYTES,
        GradingOptions,
        _detect_set,
        _parse_notebook,
        grade_notebook,
    )

    submission = root / "submission"
    notebooks = find_notebooks(submission)
    if len(notebooks) != 1:
        names = ", ".join(p.relative_to(submission).as_posix() for p in notebooks)
        why = (
            f"{len(notebooks)} notebooks in the submission ({names}); upload exactly one"
            if notebooks
            else "no .ipynb file in the submission; upload your exercise notebook (the .ipynb file itself)"
        )
        return ungraded_results(exercise_set, hidden, why)
    path = notebooks[0]
    rel = path.relative_to(submission).as_posix()
    nb = _parse_notebook(path.read_bytes()) if path.stat().st_size <= MAX_NOTEBOOK_BYTES else None
    if nb is None:
        return ungraded_results(exercise_set, hidden, f"{rel} is not a readable Jupyter notebook (.ipynb, nbformat 4)")
    detected = _detect_set(nb, None)
    if detected not in (None, exercise_set.id):
        why = f"{rel} is the notebook of exercise set {detected}, this assignment is {exercise_set.id}"
        return ungraded_results(exercise_set, hidden, why)
    source = root / "source"
    hidden_dir = (source / config["hidden"]).parent
    options = GradingOptions(hidden_dir=hidden_dir, force_set=exercise_set.id, **config["options"])
    outcome = grade_notebook(path, options)
    states = _written_states(nb, exercise_set, source / config["student_notebook"])
    if outcome.result is None:
        why = f"no tests could run ({outcome.status}: {outcome.message})"
        return ungraded_results(exercise_set, hidden, why, states)
    return graded_results(exercise_set, outcome.result, outcome.notes, states)


def _write_results(root: Path, payload: dict) -> Path:
    """Write ``root/results/results.json`` (atomically)."""
    path = root / "results" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(".results.json.partial")
    partial.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def run_autograder(root: str | Path) -> dict:
    """Grade ``root/submission/`` with the bundle unpacked in ``root/source/``; write and return ``results.json``.

    Any failure while grading still gives a ``results.json`` (score 0, saying what happened).
    """
    from mmcourse.grading.grader import load_hidden_tests

    root = Path(root)
    config = json.loads((root / "source" / CONFIG_NAME).read_text(encoding="utf-8"))
    exercise_set = load_set(config["set_id"])
    loaded = load_hidden_tests((root / "source" / config["hidden"]).parent, exercise_set.id)
    hidden = loaded[0] if loaded else None
    try:
        payload = _grade_submission(root, config, exercise_set, hidden)
    except Exception as exc:  # noqa: BLE001 - the student gets a results.json whatever went wrong
        why = f"the autograder failed ({type(exc).__name__}: {exc}); please tell your instructor"
        payload = ungraded_results(exercise_set, hidden, why)
    _write_results(root, payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    """``python -m mmcourse.grading.gradescope [--root DIR]``: what ``run_autograder`` calls."""
    parser = argparse.ArgumentParser(
        prog="python -m mmcourse.grading.gradescope",
        description="Grade the Gradescope submission in ROOT/submission/ into ROOT/results/results.json.",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("AUTOGRADER_ROOT") or "/autograder"),
        help="the autograder folder (default: $AUTOGRADER_ROOT or /autograder)",
    )
    args = parser.parse_args(argv)
    try:
        run_autograder(args.root)
    except Exception as exc:  # noqa: BLE001 - no bundle config, no set: say so in results.json
        output = f"The autograder could not run ({type(exc).__name__}: {exc}). Please tell your instructor."
        _write_results(args.root, {"score": 0, "output": output, "tests": []})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
