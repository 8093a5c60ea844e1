"""The package's shape: a small library a student can read, with experiments, figures, grading and tooling around it.

The library is everything in ``mmcourse/`` outside ``labs/`` (chapter experiments), ``viz/`` (figures and
widgets), ``grading/`` and ``dev/`` (maintainer tooling). These tests keep the rules of ``mmcourse/README.md``:
dependencies point one way, a chapter's lab never imports another chapter's, model files hold models, and the
library stays small (files, functions and the whole).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmcourse.dev.readers_map import MAP, non_blank, refreshed

PACKAGE = Path(__file__).resolve().parents[1] / "mmcourse"
AROUND_THE_LIBRARY = ("labs", "viz", "grading", "dev")
LIBRARY_BUDGET = 6_500
FILE_BUDGET = 450
FUNCTION_BUDGET = 80


def _part(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 and parts[0] in AROUND_THE_LIBRARY else "library"


FILES = sorted(PACKAGE.rglob("*.py"))
LIBRARY = [p for p in FILES if _part(p) == "library"]


def _imported_modules(path: Path) -> list[str]:
    """Every ``mmcourse…`` module a file imports, at any depth (``from mmcourse import viz`` gives mmcourse.viz)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mmcourse":
            if node.module == "mmcourse":
                found += [f"mmcourse.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "mmcourse"]
    return found


def test_the_library_imports_nothing_built_on_top_of_it():
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in LIBRARY
        for module in _imported_modules(path)
        if module.split(".")[1:2] and module.split(".")[1] in AROUND_THE_LIBRARY
    ]
    assert not wrong, "the library must not import labs/, viz/, grading/ or dev/:\n" + "\n".join(wrong)


def test_a_chapter_lab_never_imports_another_chapters_lab():
    chapter = re.compile(r"ch(\d\d)_")
    wrong = []
    for path in sorted((PACKAGE / "labs").glob("ch*.py")):
        own = chapter.match(path.name).group(1)
        for module in _imported_modules(path):
            match = chapter.match(module.split(".")[-1])
            if module.startswith("mmcourse.labs.") and match and match.group(1) != own:
                wrong.append(f"{path.name} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_model_files_hold_models():
    """``models/`` holds ``nn.Module`` classes (with their output types, constants, private layer helpers and
    ``build_*`` factories); data preparation, training and metrics live elsewhere."""
    wrong = []
    for path in sorted((PACKAGE / "models").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith(("build_", "_")):
                wrong.append(f"{path.name}: function {node.name}")
    assert not wrong, "move these to a lab, an objective or the data package:\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_files_and_functions_stay_small(path):
    text = path.read_text()
    assert non_blank(text) <= FILE_BUDGET, f"{non_blank(text)} non-blank lines (budget {FILE_BUDGET})"
    lines = text.splitlines()
    long = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) else node.body
            size = non_blank("\n".join(lines[body[0].lineno - 1 : node.end_lineno])) if body else 0
            if size > FUNCTION_BUDGET:
                long.append(f"{node.name}: {size} lines")
    assert not long, f"function bodies over {FUNCTION_BUDGET} non-blank lines: {long}"


def test_the_library_fits_its_line_budget():
    total = sum(non_blank(p.read_text()) for p in LIBRARY)
    assert total <= LIBRARY_BUDGET, f"the library has {total} non-blank lines (budget {LIBRARY_BUDGET})"


def test_the_readers_map_lists_every_library_file_with_its_size():
    """``mmcourse/README.md`` is the reading order; it must name every library file and give its current size."""
    readme = MAP.read_text()
    missing = [
        path.relative_to(PACKAGE).as_posix()
        for path in LIBRARY
        if not (path.name == "__init__.py" and non_blank(path.read_text()) < 30)
        and f"\n| `{path.relative_to(PACKAGE).as_posix()}` |" not in readme  # a row of the map's table
    ]
    assert not missing, f"not on the reader's map: {missing}"
    _, stale = refreshed(readme)
    assert not stale, f"line counts out of date on the reader's map (python -m mmcourse.dev.readers_map): {stale}"


def test_import_mmcourse_stays_light():
    heavy = "('transformers', 'matplotlib', 'ipywidgets')"
    code = f"import sys, mmcourse; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
