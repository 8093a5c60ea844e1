"""Gradescope bundles: build one, unpack it the way Gradescope does (``$AUTOGRADER_ROOT/source/``), grade a master
notebook (100 %) and a student notebook (0 %) with its ``run_autograder``, and read ``results.json``.

``setup.sh`` is not run (it installs from the internet): this environment's Python, where the package is already
installed, stands in for the virtual environment it makes (``MMCOURSE_PYTHON``). Each graded notebook costs a kernel
start, so only two are graded; the cases where nothing can be graded run in-process.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from grading_fixtures import MASTER, STUDENT, hidden_tests

from mmcourse.__main__ import main
from mmcourse.grading import gradescope
from mmcourse.grading.authoring import leak_markers
from mmcourse.grading.gradescope import build_bundle, run_autograder
from mmcourse.grading.spec import load_set

ROOT = Path(__file__).resolve().parent.parent
SET_ID = "ex01"  # the set of grading_fixtures' MASTER and STUDENT
EXERCISES = load_set(SET_ID)  # its questions and points change: read them, do not copy them
HIDDEN = hidden_tests(SET_ID)
FULL = EXERCISES.max_points(HIDDEN)
N_TESTS = sum(len(q.all_tests(HIDDEN)) for q in EXERCISES)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    base = tmp_path_factory.mktemp("gradescope")
    out = build_bundle(SET_ID, base / "out" / f"{SET_ID}_autograder.zip")
    root = base / "autograder"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(root / "source")
    return {"zip": out, "root": root}


def _submit(root: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(root / "submission", ignore_errors=True)
    shutil.rmtree(root / "results", ignore_errors=True)
    (root / "submission").mkdir()
    for name, data in files.items():
        (root / "submission" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "submission" / name).write_bytes(data)


def _run_autograder(root: Path, python: str = sys.executable) -> dict:
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "MMCOURSE_PYTHON": python}
    done = subprocess.run(
        ["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))


def _check_shape(results: dict) -> None:
    """Gradescope's format, every test of the set present, the totals right."""
    assert set(results) >= {"score", "output", "tests"}
    for test in results["tests"]:
        assert set(test) == {"name", "score", "max_score", "output", "visibility"}
        assert test["visibility"] in ("visible", "after_published")
        assert 0 <= test["score"] <= test["max_score"] or test["max_score"] == test["score"] == 0
    assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]))
    assert sum(t["max_score"] for t in results["tests"]) == pytest.approx(FULL)
    auto = [t for t in results["tests"] if not t["name"].endswith("(written)")]
    assert len(auto) == N_TESTS
    assert sum(t["visibility"] == "after_published" for t in auto) == sum(len(v) for v in HIDDEN.tests.values())
    written = [t for t in results["tests"] if t["name"].endswith("(written)")]
    assert len(written) == len(EXERCISES.written)
    for test in written:
        assert (test["score"], test["max_score"], test["visibility"]) == (0, 0, "visible")
        assert "Graded by a person" in test["output"]


def test_the_bundle_holds_what_gradescope_needs_and_no_solution(bundle):
    with zipfile.ZipFile(bundle["zip"]) as zf:
        infos = {info.filename: info for info in zf.infolist()}
        members = {name: zf.read(name) for name in infos}
    wheel = next(name for name in members if name.endswith(".whl"))
    student = next((ROOT / "exercises").glob(f"{SET_ID}_*.ipynb"))
    assert set(members) == {
        "setup.sh",
        "run_autograder",
        "gradescope.json",
        f"hidden/{SET_ID}.py",
        f"student/{student.name}",
        wheel,
    }
    assert members[f"hidden/{SET_ID}.py"] == (ROOT / "exercises/instructor/hidden" / f"{SET_ID}.py").read_bytes()
    assert members[f"student/{student.name}"] == student.read_bytes()
    for script in ("setup.sh", "run_autograder"):
        assert (infos[script].external_attr >> 16) & 0o777 == 0o755
        subprocess.run(["bash", "-n", str(bundle["root"] / "source" / script)], check=True)
    setup = members["setup.sh"].decode()
    assert f'pip install -q "$SOURCE/{wheel}"' in setup
    for package in ("torch", "nbclient", "nbformat", "ipykernel"):
        assert f"'{package}" in setup, package
    config = json.loads(members["gradescope.json"])
    assert (config["set_id"], config["version"]) == (SET_ID, EXERCISES.version)
    # no master, and no solution or rubric line anywhere a student could get at (hidden tests are instructor-only)
    markers = leak_markers(ROOT)
    lines = markers["solution"] | markers["rubric"]
    with zipfile.ZipFile(bundle["root"] / "source" / wheel) as whl:
        assert all(n.startswith(("mmcourse/", "mmcourse-")) for n in whl.namelist())
        assert not [n for n in whl.namelist() if n.endswith(".ipynb") or "instructor" in n]
    for name, data in members.items():
        if name.startswith("hidden/") or name == wheel:
            continue
        text = data.decode("utf-8")
        assert "BEGIN SOLUTION" not in text and "BEGIN RUBRIC" not in text, name
        assert not [line for line in lines if line in text], name
    # ... and the check that guards the build finds a planted one
    planted = {"setup.sh": members["setup.sh"].decode() + sorted(markers["solution"])[0]}
    with pytest.raises(RuntimeError, match="solution or rubric text"):
        gradescope._check_no_solutions(planted, bundle["root"] / "source" / wheel, ROOT)


def test_a_master_scores_every_point(bundle):
    _submit(bundle["root"], {"my work/anything.ipynb": MASTER.read_bytes()})
    results = _run_autograder(bundle["root"])
    _check_shape(results)
    assert results["score"] == pytest.approx(FULL)
    assert all(t["score"] == t["max_score"] for t in results["tests"])
    for test in results["tests"]:
        if test["name"].endswith("(written)"):
            assert "your answer cell has an answer" in test["output"]
    public = sum(t.points for q in EXERCISES for t in q.tests)
    assert f"public tests {public:g}/{public:g} points" in results["output"]
    # what students see never holds the master's model answers or rubrics
    markers = leak_markers(ROOT)
    shown = json.dumps(results, ensure_ascii=False)
    assert not [line for line in markers["solution"] | markers["rubric"] if line in shown]


def test_a_student_notebook_scores_zero(bundle):
    _submit(bundle["root"], {"Copy of ex01_overview (1).ipynb": STUDENT.read_bytes()})
    results = _run_autograder(bundle["root"])
    _check_shape(results)
    assert results["score"] == 0
    failed = [t for t in results["tests"] if t["max_score"]]
    assert all("not implemented yet" in t["output"] for t in failed)
    for test in results["tests"]:
        if test["name"].endswith("(written)"):
            assert "YOUR ANSWER HERE" in test["output"]


@pytest.mark.parametrize(
    "files, problem",
    [
        ({}, "no .ipynb file in the submission"),
        ({"notes.txt": b"my answers"}, "no .ipynb file in the submission"),
        (
            {"a.ipynb": STUDENT.read_bytes(), "b/c.ipynb": MASTER.read_bytes()},
            "2 notebooks in the submission (a.ipynb, b/c.ipynb)",
        ),
        ({"x.ipynb": b'{"cells": ['}, "x.ipynb is not a readable Jupyter notebook"),
    ],
    ids=["empty", "no-notebook", "two-notebooks", "broken"],
)
def test_submissions_that_cannot_be_graded_get_a_clear_result(bundle, files, problem):
    _submit(bundle["root"], files)
    results = run_autograder(bundle["root"])
    assert json.loads((bundle["root"] / "results" / "results.json").read_text(encoding="utf-8")) == results
    _check_shape(results)
    assert results["score"] == 0
    assert problem in results["output"]
    assert all(problem in t["output"] for t in results["tests"] if t["max_score"])


def test_a_notebook_of_another_set_is_not_graded(bundle):
    other = next(s for s in ("ex02", "ex03", "ex04") if s != SET_ID)
    notebook = next((ROOT / "exercises").glob(f"{other}_*.ipynb"))
    _submit(bundle["root"], {notebook.name: notebook.read_bytes()})
    results = run_autograder(bundle["root"])
    _check_shape(results)
    assert f"is the notebook of exercise set {other}, this assignment is {SET_ID}" in results["output"]


def test_an_autograder_that_cannot_start_still_writes_results(bundle, tmp_path):
    # Python missing: run_autograder's shell fallback
    _submit(bundle["root"], {"a.ipynb": STUDENT.read_bytes()})
    results = _run_autograder(bundle["root"], python=str(tmp_path / "no-python"))
    assert results["score"] == 0 and "could not start" in results["output"]
    # no bundle configuration: the module's own fallback
    assert gradescope.main(["--root", str(tmp_path)]) == 1
    results = json.loads((tmp_path / "results" / "results.json").read_text(encoding="utf-8"))
    assert results["score"] == 0 and "could not run" in results["output"]


def test_bad_input_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown exercise set 'ex99'"):
        build_bundle("ex99", tmp_path / "b.zip")
    with pytest.raises(ValueError, match="must be a .zip file"):
        build_bundle(SET_ID, tmp_path / "b.tar.gz")
    with pytest.raises(ValueError, match=f"no hidden tests for {SET_ID}"):
        build_bundle(SET_ID, tmp_path / "b.zip", hidden_dir=tmp_path)
    assert main(["exercises", "gradescope", "ex4", str(tmp_path / "b.zip")]) == 2
    assert "set_id must look like 'ex04'" in capsys.readouterr().err
    assert main(["exercises", "gradescope", SET_ID, str(tmp_path / "b"), "--hidden", str(tmp_path)]) == 2
    assert "must be a .zip file" in capsys.readouterr().err
    assert main(["exercises", "gradescope", SET_ID, str(tmp_path / "b.zip"), "--hidden", str(tmp_path)]) == 2
    assert "no hidden tests" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
