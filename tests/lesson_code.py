"""The code a chapter shows, run outside the notebook: so a test can check that it agrees with the library.

A chapter shows the idea as code in its cells (the loss, the masking rule, the training step) and may then switch to
the library's tested version for repeated runs. The cells that define the shown code carry the cell tag ``lesson``
(in the cell's metadata: ``"tags": ["lesson"]``); they hold imports and definitions only — nothing that trains or
draws — so running them is cheap. :func:`lesson_namespace` runs them, in order, in a fresh namespace and returns
it; a test then compares, e.g., ``ns["contrastive_step"]`` with :func:`mmcourse.labs.common.train_tiny_clip`.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSON_TAG = "lesson"


def lesson_cells(notebook: str | Path) -> list[str]:
    """The sources of a notebook's cells tagged ``lesson``, in order."""
    path = Path(notebook)
    if not path.is_absolute() and not path.exists():
        path = NOTEBOOKS / path
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code" and LESSON_TAG in c.metadata.get("tags", [])]


def lesson_namespace(notebook: str | Path) -> dict:
    """Run a notebook's ``lesson`` cells in a fresh namespace and return it (raises if there are none)."""
    cells = lesson_cells(notebook)
    if not cells:
        raise ValueError(f"{notebook} has no code cell tagged {LESSON_TAG!r}")
    namespace: dict = {"__name__": "lesson"}
    for i, source in enumerate(cells):
        exec(compile(source, f"<{Path(notebook).name} lesson cell {i}>", "exec"), namespace)
    return namespace
