"""Submissions for the grader tests, built from the committed exercise notebooks (so they never go stale)."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
MASTER = ROOT / "exercises" / "instructor" / "masters" / "ex01_overview.ipynb"
STUDENT = ROOT / "exercises" / "ex01_overview.ipynb"

# A wrong modality_dropout: drops the image with probability p and never the text; early_fusion in the wrong order.
PARTIAL_EARLY_FUSION = """
def early_fusion(image_features, text_features):
    if image_features.shape[0] != text_features.shape[0]:
        raise ValueError("batch sizes differ")
    return torch.cat([text_features, image_features], dim=1)
"""
PARTIAL_DROPOUT = """
def modality_dropout(image_features, text_features, p, generator=None):
    u = torch.rand(image_features.shape[0], generator=generator)
    image = image_features.clone()
    image[u < p] = 0
    return image, text_features.clone()
"""

MONKEYPATCH = """
import json, os
import mmcourse.grading
import mmcourse.grading.runner as runner
from mmcourse.grading.results import TestResult

def always_pass(test, answer, namespace, seconds, capture):
    return TestResult(test.name, test.description, test.points, True, [], test.hint, test.hidden)

runner._run_test = always_pass
mmcourse.grading.check = lambda *args, **kwargs: print("all tests pass")
with open("mmcourse-result-0000.json", "w") as f:
    json.dump({"nonce": "0000", "result": {"set_id": "ex01", "version": 1, "questions": []}}, f)
print("mmcourse-result-0000 {}")
"""

# 16 GiB in 1 GiB blocks: far beyond the test's limit, but fails fast (the blocks are never touched).
MEMORY_BOMB = """
hoard = [bytearray(2**30) for _ in range(16)]
"""

DELETE_FILES = """
import os, shutil
for name in os.listdir("."):
    if os.path.isfile(name):
        os.remove(name)
shutil.rmtree(os.getcwd(), ignore_errors=True)
"""


def _read(path: Path):
    return nbformat.read(str(path), as_version=4)


def _write(nb, path: Path) -> None:
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def _with_cells(nb, *sources: str, at: int | None = None):
    nb = copy.deepcopy(nb)
    cells = [nbformat.v4.new_code_cell(s.strip("\n")) for s in sources]
    if at is None:
        nb.cells.extend(cells)
    else:
        nb.cells[at:at] = cells
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def _replace_definition(nb, name: str, source: str):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.lstrip().startswith(f"def {name}("):
            cell.source = source.strip("\n")
            return nb
    raise ValueError(f"no cell defines {name}")


def write_submissions(directory: Path, *, robustness: bool = True) -> dict[str, str]:
    """Write the fixture submissions into ``directory``; return {file name: what it is}."""
    master, student = _read(MASTER), _read(STUDENT)
    made = {}

    def add(name: str, nb, what: str) -> None:
        _write(nb, directory / name)
        made[name] = what

    add("master.ipynb", master, "master")
    add("Copy of ex01_overview (1).ipynb", student, "student")
    partial = _replace_definition(
        _replace_definition(master, "early_fusion", PARTIAL_EARLY_FUSION), "modality_dropout", PARTIAL_DROPOUT
    )
    partial.metadata.pop("mmcourse")  # recognised from its check("ex01...") calls instead
    add("partial.ipynb", partial, "partial, metadata lost")
    if not robustness:
        return made
    add("infinite_loop.ipynb", _with_cells(master, "while True:\n    pass"), "infinite loop")
    add("sys_exit.ipynb", _with_cells(master, "import sys\nsys.exit(3)", at=3), "sys.exit")
    add("raise_at_import.ipynb", _with_cells(master, "import a_module_that_does_not_exist", at=1), "raise at import")
    add("syntax_error.ipynb", _with_cells(master, "def broken(:\n    return 1"), "syntax error")
    add("prints_megabytes.ipynb", _with_cells(master, 'print("x" * 5_000_000)'), "prints megabytes")
    add("memory_bomb.ipynb", _with_cells(master, MEMORY_BOMB), "memory bomb")
    # at the end: the grader must survive it; cells after it could not run without a working directory
    add("deletes_files.ipynb", _with_cells(master, DELETE_FILES), "deletes files")
    add("monkeypatch.ipynb", _with_cells(student, MONKEYPATCH), "monkeypatches the checker")
    add("os_exit.ipynb", _with_cells(master, "import os\nos._exit(1)"), "kills its kernel")
    unknown = copy.deepcopy(student)
    unknown.metadata.pop("mmcourse")
    unknown.cells = [c for c in unknown.cells if "check(" not in c.source]
    add("unknown_set.ipynb", unknown, "no set")
    (directory / "essay.pdf").write_bytes(b"%PDF-1.4 not a notebook \x00\xff")
    made["essay.pdf"] = "not a notebook"
    (directory / "broken.ipynb").write_text('{"cells": [', encoding="utf-8")
    made["broken.ipynb"] = "truncated JSON"
    (directory / "alice").mkdir()
    (directory / "alice" / "answers.txt").write_text("def early_fusion(a, b): ...\n", encoding="utf-8")
    made["alice/answers.txt"] = "not a notebook, in a subfolder"
    (directory / "link.ipynb").symlink_to(directory / "master.ipynb")
    made["link.ipynb"] = "a symbolic link"
    return made


def execute_in_process(nb) -> dict:
    """Run a notebook's code cells with ``exec`` in a fresh namespace (no kernel): a fast self-test of a set."""
    import contextlib
    import io
    import linecache

    namespace: dict = {"__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                filename = f"<cell {index}>"
                linecache.cache[filename] = (len(cell.source), None, cell.source.splitlines(True), filename)
                exec(compile(cell.source, filename, "exec"), namespace)
    return namespace


def hidden_tests(set_id: str):
    from mmcourse.grading.grader import load_hidden_tests

    loaded = load_hidden_tests(ROOT / "exercises" / "instructor" / "hidden", set_id)
    return loaded[0] if loaded else None


# ----------------------------------------------------------------------------------------------------------------
# Written questions: a fixture set of our own (the real sets' written questions change; these do not)
# ----------------------------------------------------------------------------------------------------------------
WRITTEN_POINTS = {"why_late": 3, "missing_modality": 2}
MODEL_ANSWER = "Late fusion keeps each encoder independent, so one modality can be missing at test time."
RUBRIC_LINES = (
    "- 1 point: says that each modality has its own encoder",
    "- 2 points: explains what happens when a modality is missing",
)
WRITTEN_HEADINGS = {
    "why_late": "## Question 4 · Why late fusion? (3 points, written)",
    "missing_modality": "## Question 5 · A missing modality (2 points, written)",
}


def written_set(base=None, set_id: str = "ex01"):
    """An exercise set with the written questions of this fixture; its auto-graded questions are ``base``'s."""
    from mmcourse.grading.spec import ExerciseSet

    exercise_set = ExerciseSet(set_id, "Written fixture", chapter="01_overview", version=base.version if base else 1)
    if base is not None:
        exercise_set.questions = dict(base.questions)
    exercise_set.written_question("why_late", "Why late fusion?", points=WRITTEN_POINTS["why_late"])
    exercise_set.written_question("missing_modality", "A missing modality", points=WRITTEN_POINTS["missing_modality"])
    return exercise_set


def answer_cell(name: str, answer: str = MODEL_ANSWER, rubric: tuple[str, ...] = RUBRIC_LINES):
    """A master's answer cell for written question ``name``."""
    source = "\n".join(
        [
            "**Your answer:**",
            "",
            "<!-- BEGIN SOLUTION -->",
            answer,
            "<!-- END SOLUTION -->",
            "",
            "<!-- BEGIN RUBRIC -->",
            *rubric,
            "<!-- END RUBRIC -->",
        ]
    )
    cell = nbformat.v4.new_markdown_cell(source)
    cell.metadata["mmcourse"] = {"written": name}
    return cell


def written_master(base=None, set_id: str = "ex01"):
    """A master: ``base``'s cells (the real ex01 master by default) minus any written cells, plus ours."""
    from mmcourse.grading.authoring import written_name

    nb = copy.deepcopy(base if base is not None else _read(MASTER))
    nb.cells = [c for c in nb.cells if written_name(c) is None]
    for name, heading in WRITTEN_HEADINGS.items():
        nb.cells += [nbformat.v4.new_markdown_cell(heading), answer_cell(name)]
    nb.metadata["mmcourse"] = {"exercise_set": set_id, "role": "master"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def with_answer(student_nb, name: str, text: str | None, *, keep_metadata: bool = True):
    """``student_nb`` with the answer cell of ``name`` holding ``text`` (None: the cell removed)."""
    from mmcourse.grading.authoring import written_name

    nb = copy.deepcopy(student_nb)
    for index, cell in enumerate(nb.cells):
        if written_name(cell) == name:
            if text is None:
                del nb.cells[index]
            else:
                cell.source = text
                if not keep_metadata:
                    cell.metadata.pop("mmcourse")
            return nb
    raise ValueError(f"no answer cell for {name}")
