"""Authoring: master → student notebooks (reproducible, up to date), the student release, and what never ships."""

import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import nbformat
import pytest

from mmcourse.grading.authoring import (
    generate,
    leak_markers,
    release,
    scan_for_leaks,
    strip_solutions,
    student_notebook,
)
from mmcourse.grading.layout import HIDDEN_DIR, MASTERS_DIR, STUDENT_DIR, course_root
from mmcourse.grading.spec import ExerciseSet, available_sets, load_set

ROOT = Path(__file__).resolve().parent.parent
STUDENT_NOTEBOOKS = sorted((ROOT / STUDENT_DIR).glob("ex[0-9][0-9]_*.ipynb"))


@pytest.fixture
def course_copy(tmp_path):
    """A scratch course checkout holding only the exercise material."""
    shutil.copytree(ROOT / "exercises", tmp_path / "exercises")
    return tmp_path


def test_strip_solutions_keeps_indentation_and_surroundings():
    source = (
        "def f(x):\n"
        '    """doc"""\n'
        "    # BEGIN SOLUTION\n"
        "    y = x + 1\n"
        "    return y\n"
        "    # END SOLUTION\n"
        "\n"
        "# BEGIN SOLUTION\n"
        "z = 3\n"
        "# END SOLUTION\n"
        "print('kept')"
    )
    assert strip_solutions(source) == (
        "def f(x):\n"
        '    """doc"""\n'
        "    # YOUR CODE HERE\n"
        "    raise NotImplementedError\n"
        "\n"
        "# YOUR CODE HERE\n"
        "raise NotImplementedError\n"
        "print('kept')"
    )


@pytest.mark.parametrize(
    "source, problem",
    [
        ("# BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n# END SOLUTION", "without"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside another"),
        ("# BEGIN SOLUTION\n#BEGIN SOLUTION here\n# END SOLUTION", "malformed"),
    ],
)
def test_strip_solutions_rejects_broken_markers(source, problem):
    with pytest.raises(ValueError, match=problem):
        strip_solutions(source, where="master cell 3")


def test_every_set_has_a_master_a_student_notebook_and_hidden_tests():
    root = course_root(ROOT)
    masters = sorted((root / MASTERS_DIR).glob("ex[0-9][0-9]_*.ipynb"))
    assert [p.name[:4] for p in masters] == available_sets()
    assert [p.name for p in STUDENT_NOTEBOOKS] == [p.name for p in masters]
    assert sorted(p.stem for p in (root / HIDDEN_DIR).glob("ex*.py")) == available_sets()


def test_committed_student_notebooks_are_up_to_date():
    report = generate(ROOT, check=True)
    stale = [str(p.relative_to(ROOT)) for p in report.stale + report.orphans]
    assert report.ok, f"regenerate with `mmcourse exercises generate`: {stale}"


def test_generation_is_reproducible_and_detects_stale_notebooks(course_copy):
    for path in (course_copy / STUDENT_DIR).glob("ex*.ipynb"):
        path.unlink()
    first = generate(course_copy)
    assert len(first.written) == len(STUDENT_NOTEBOOKS)
    for path in first.written:  # the same bytes as the committed notebooks, and as a second run
        assert path.read_bytes() == (ROOT / STUDENT_DIR / path.name).read_bytes()
    second = generate(course_copy)
    assert second.written == [] and len(second.unchanged) == len(STUDENT_NOTEBOOKS)

    master = next((course_copy / MASTERS_DIR).glob("ex04_*.ipynb"))
    nb = nbformat.read(str(master), as_version=4)
    nb.cells[0].source += "\n\nOne more sentence."
    nbformat.write(nb, str(master))
    (course_copy / STUDENT_DIR / "ex09_orphan.ipynb").write_text("{}", encoding="utf-8")
    check = generate(course_copy, check=True)
    assert [p.name for p in check.stale] == [master.name]
    assert [p.name for p in check.orphans] == ["ex09_orphan.ipynb"] and not check.ok


@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=[p.name for p in STUDENT_NOTEBOOKS])
def test_student_notebooks_are_clean_and_stamped(path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    nbformat.validate(nb)
    set_id = path.name[:4]
    assert raw["metadata"]["mmcourse"] == {"exercise_set": set_id, "version": load_set(set_id).version}
    assert raw["metadata"]["kernelspec"]["name"] == "python3"
    for index, cell in enumerate(nb.cells):
        assert cell["id"] == f"{set_id}-{index:02d}"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    text = path.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert text.count("raise NotImplementedError") >= len(load_set(set_id).questions)
    assert "colab.research.google.com" in nb.cells[0].source, "the Colab badge comes first"


def test_instructor_only_cells_and_tags():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Title"),
            nbformat.v4.new_code_cell("secret_answer_key = 42", metadata={"tags": ["instructor-only"]}),
            nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["keep-me"]}),
        ]
    )
    nb.metadata["mmcourse"] = {"exercise_set": "ex01", "role": "master"}
    real = load_set("ex01")  # its questions, without its written questions (this master has no answer cells)
    plain = ExerciseSet("ex01", real.title, chapter=real.chapter, version=real.version)
    student = student_notebook(
        nb, notebook_relpath="exercises/ex01_x.ipynb", url="https://github.com/a/b", exercise_set=plain
    )
    sources = [c.source for c in student.cells]
    assert sources[2:] == ["# Title", "x = 1"] and student.cells[3].metadata["tags"] == ["keep-me"]
    assert student.metadata["mmcourse"] == {"exercise_set": "ex01", "version": load_set("ex01").version}
    assert "colab.research.google.com/github/a/b/blob/main/exercises/ex01_x.ipynb" in sources[0]


def test_master_without_set_metadata_is_refused():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    with pytest.raises(ValueError, match="exercise_set"):
        student_notebook(nb, notebook_relpath="exercises/ex01_x.ipynb", url="https://github.com/a/b")


def test_release_has_no_solutions_and_no_hidden_tests(tmp_path):
    out = release(tmp_path / "release")
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["README.md"] + [f"exercises/{p.name}" for p in STUDENT_NOTEBOOKS]
    assert scan_for_leaks(out, ROOT) == []
    for name in names[1:]:
        assert (out / name).read_bytes() == (ROOT / name).read_bytes()
    with pytest.raises(FileExistsError):
        release(tmp_path / "release")
    assert release(tmp_path / "release", force=True) == out


def test_the_leak_scan_finds_planted_leaks(tmp_path):
    markers = leak_markers(ROOT)
    assert len(markers["solution"]) > 50 and len(markers["hidden"]) > 50
    out = release(tmp_path / "release")
    hidden_line = sorted(markers["hidden"])[0]
    solution_line = sorted(markers["solution"])[0]
    nb = nbformat.read(str(out / STUDENT_DIR / STUDENT_NOTEBOOKS[0].name), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(solution_line))
    nbformat.write(nb, str(out / STUDENT_DIR / STUDENT_NOTEBOOKS[0].name))
    (out / "README.md").write_text(f"notes\n{hidden_line}\n", encoding="utf-8")
    (out / "instructor").mkdir()
    (out / "instructor" / "x.txt").write_text("# BEGIN SOLUTION\n", encoding="utf-8")
    problems = "\n".join(scan_for_leaks(out, ROOT))
    assert f"contains solution text {solution_line!r}" in problems
    assert f"README.md: contains hidden text {hidden_line!r}" in problems
    assert "instructor/x.txt: instructor file in the release" in problems
    assert "contains 'BEGIN SOLUTION'" in problems


def test_the_installed_package_holds_no_instructor_material(tmp_path):
    """Build the sdist and the wheel from a copy of the project; neither may contain hidden tests or solutions."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("mmcourse", "exercises", "tests"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    code = (
        "import sys, setuptools.build_meta as b; out = sys.argv[1]; "
        "print(b.build_sdist(out)); print(b.build_wheel(out))"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=src, check=True, capture_output=True)
    sdist = next((tmp_path / "dist").glob("*.tar.gz"))
    wheel = next((tmp_path / "dist").glob("*.whl"))
    with tarfile.open(sdist) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    with zipfile.ZipFile(wheel) as whl:
        members |= {f"wheel/{n}": whl.read(n) for n in whl.namelist()}
    assert any(n.endswith("mmcourse/grading/public/ex04.py") for n in members), "public tests must ship"
    assert not [n for n in members if "exercises/" in n or "instructor" in n]
    markers = leak_markers(ROOT)
    lines = markers["solution"] | markers["hidden"]
    for name, data in members.items():
        if "mmcourse/grading/" not in name:  # the rest of the library may share generic lines with solutions
            continue
        text = data.decode("utf-8", errors="ignore")
        leaked = [line for line in lines if line in text]
        assert not leaked, f"{name} contains instructor material: {leaked[:3]}"
