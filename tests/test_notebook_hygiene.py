"""Static checks of every chapter notebook: what nbval cannot see, or would report less clearly."""

import json
import re
from pathlib import Path

import pytest

from mmcourse.dev.notebooks import (
    NOTEBOOK_DIR,
    SETUP_MARKER,
    chapter_notebooks,
    read_notebook,
    repository_url,
    stamp_problems,
)

NOTEBOOKS = chapter_notebooks()
MACHINE_PATH = re.compile(r"(/work/|/home/\w|/root/|/tmp/|/Users/\w|[A-Z]:\\\\Users|site-packages|/usr/lib/python)")
NBVAL_MARKERS = ("NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP", "NBVAL_RAISES_EXCEPTION", "NBVAL_CHECK_OUTPUT")


def test_there_are_chapter_notebooks():
    assert NOTEBOOKS, f"no notebooks found under {NOTEBOOK_DIR}"
    for path in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z_]+\.ipynb", path.name), f"unexpected notebook name {path.name}"


def _ids(paths):
    return [p.name for p in paths]


@pytest.fixture(params=NOTEBOOKS, ids=_ids(NOTEBOOKS))
def notebook(request):
    return request.param, read_notebook(request.param)


def _code_cells(nb):
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def test_every_code_cell_was_executed(notebook):
    path, nb = notebook
    unrun = [i for i, c in _code_cells(nb) if c.source.strip() and c.get("execution_count") is None]
    assert not unrun, (
        f"{path.name}: cells {unrun} have no execution_count; run `python -m mmcourse.dev.notebooks execute`"
    )
    counts = [c.execution_count for _, c in _code_cells(nb) if c.source.strip()]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: cells were not run top to bottom once: {counts}"


def test_no_errors_or_warnings_stored(notebook):
    path, nb = notebook
    for i, cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{path.name}: cell {i} stores an error ({out.get('ename')})"
            if out.output_type == "stream" and out.name == "stderr":
                pytest.fail(f"{path.name}: cell {i} writes to stderr: {out.text[:200]!r}")


def test_no_machine_specific_paths_in_outputs(notebook):
    path, nb = notebook
    for i, cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            text = json.dumps({k: v for k, v in out.items() if k != "data"} | {
                "data": {m: d for m, d in out.get("data", {}).items() if not m.startswith("image/")}
            })
            match = MACHINE_PATH.search(text)
            assert not match, f"{path.name}: cell {i} output contains a machine path ({match.group(0)!r})"


def test_widget_metadata_has_state(notebook):
    path, nb = notebook
    widgets = nb.metadata.get("widgets")
    if widgets:
        state = widgets.get("application/vnd.jupyter.widget-state+json", {})
        assert "state" in state, f"{path.name}: metadata.widgets lacks 'state' (GitHub would show 'Invalid Notebook')"


def test_badge_and_setup_cell_in_sync(notebook):
    path, nb = notebook
    rel = path.resolve().relative_to(NOTEBOOK_DIR.parent).as_posix()
    problems = stamp_problems(nb, rel, repository_url())
    assert not problems, f"{path.name}: {problems}; run `python -m mmcourse.dev.notebooks stamp`"


def test_no_nbval_markers_besides_the_setup_cell(notebook):
    """Every checked output is a promise: flaky or slow cells are fixed, not hidden."""
    path, nb = notebook
    for i, cell in _code_cells(nb):
        if i == 1 and cell.source.startswith(SETUP_MARKER):
            continue
        for marker in NBVAL_MARKERS:
            assert marker not in cell.source, f"{path.name}: cell {i} uses {marker}"
        assert not set(cell.metadata.get("tags", [])) & {"nbval-ignore-output", "nbval-skip"}, path.name


def test_setup_is_called_first(notebook):
    path, nb = notebook
    first = next(c for i, c in _code_cells(nb) if i > 1)
    assert "mmcourse.setup(" in first.source, f"{path.name}: the first cell after setup must call mmcourse.setup"


def test_outputs_do_not_end_with_a_matplotlib_repr(notebook):
    path, nb = notebook
    for i, cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get("text/plain", "")
            assert not re.match(r"<(matplotlib|Figure|Axes|Line2D|Text)\b.*at 0x", text), (
                f"{path.name}: cell {i} stores {text[:60]!r}; end the cell with plt.show() or assign `_ = ...`"
            )


def test_language_info_is_python(notebook):
    path, nb = notebook
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name


def test_notebooks_are_valid_json_with_stable_formatting():
    for path in NOTEBOOKS:
        raw = Path(path).read_text(encoding="utf-8")
        json.loads(raw)
        assert raw.endswith("\n"), f"{path.name}: not written by nbformat (no trailing newline)"
