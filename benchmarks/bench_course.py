"""Course runtime: how long every chapter notebook and every exercise master takes to execute, top to bottom.

Each notebook runs once, in a fresh kernel of this interpreter, exactly as ``python -m mmcourse.dev.notebooks execute``
runs it (the reference environment: one thread, offline; GPUs visible only with ``device="cuda"``), on a copy, so
the stored notebooks are never touched. Wall time includes the kernel start (about 3.5 s here) and the imports.
Targets: each chapter ≤ 90 s and the 8 chapters ≤ 8 min on the 2-core course CPU; the whole course ≤ 3 min on one
GPU. On a GPU only the chapters run (the exercises are graded on CPUs).

``quick=True`` executes one two-cell notebook through the same path, so the runner is smoke-tested in seconds.
"""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path

import nbformat

from mmcourse.dev.notebooks import execute_notebook

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "notebooks"
MASTERS = ROOT / "exercises" / "instructor" / "masters"


def _execute(path_or_nb, cwd: Path, allow_gpu: bool) -> float:
    nb = path_or_nb if isinstance(path_or_nb, nbformat.NotebookNode) else nbformat.read(str(path_or_nb), 4)
    start = time.perf_counter()
    execute_notebook(copy.deepcopy(nb), cwd, timeout=900, allow_gpu=allow_gpu)
    return time.perf_counter() - start


def _first_line(exc: Exception) -> str:
    """The error a failing cell raised (its last traceback line, colour codes removed), in one short line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    errors = [line for line in text if re.match(r"^[A-Za-z_.]+(Error|Exception)\b", line)]
    return (errors[-1] if errors else type(exc).__name__)[:160]


def _smoke_notebook() -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import mmcourse\ndevice = mmcourse.setup(0)"),
            nbformat.v4.new_code_cell("import torch\nprint(torch.ones(2, device=device).sum().item())"),
        ]
    )


def run(quick: bool = False, device: str = "cpu") -> dict:
    allow_gpu = device != "cpu"
    rows = []
    if quick:
        rows.append({"notebook": "two-cell smoke notebook", "kind": "smoke", "wall s": round(
            _execute(_smoke_notebook(), ROOT, allow_gpu), 1)})
    else:
        folders = [("chapter", CHAPTERS)] + ([("exercise master", MASTERS)] if not allow_gpu else [])
        for kind, folder in folders:
            paths = sorted(folder.glob("*.ipynb"))
            seconds = []
            for path in paths:
                try:
                    seconds.append(_execute(path, path.parent, allow_gpu))
                except Exception as exc:  # one failing notebook must not hide the others' times
                    rows.append({"notebook": path.name, "kind": kind, "wall s": f"failed: {_first_line(exc)}"})
                    print(f"  {path.name}: FAILED {_first_line(exc)}", flush=True)
                    continue
                rows.append({"notebook": path.name, "kind": kind, "wall s": round(seconds[-1], 1)})
                print(f"  {path.name}: {seconds[-1]:.1f} s", flush=True)
            done = f"{len(seconds)} of {len(paths)}" if len(seconds) < len(paths) else f"all {len(paths)}"
            rows.append({"notebook": f"{done} {kind}s", "kind": "total", "wall s": round(sum(seconds), 1)})
    return {
        "title": f"Course runtime ({device})",
        "columns": ["notebook", "kind", "wall s"],
        "rows": rows,
        "notes": "One execution per notebook in a fresh kernel (reference environment: 1 thread, offline"
        + (", GPU visible" if allow_gpu else ", CPU only")
        + "); wall time includes kernel start and imports.",
    }
