"""Grading throughput: a class of exercise-set-1 submissions graded with 2 workers (``mmcourse grade``).

Every submission runs in a fresh kernel (kernel start + ``import torch`` dominate: roughly 4 s of CPU each), then
the public and hidden tests run in the same kernel. The class mixes complete, empty and partly wrong notebooks,
all under "Copy of …" names. Target: 40 submissions in at most 2 minutes on a 2-core CPU. The similarity report
(``mmcourse grade --similarity``) over the same class is timed too.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import nbformat

from mmcourse.dev.timing import measure
from mmcourse.grading.grader import GradingOptions, default_hidden_dir, grade_directory
from mmcourse.grading.layout import MASTERS_DIR, STUDENT_DIR, course_root
from mmcourse.grading.similarity import similarity_report

WRONG_DROPOUT = (
    "def modality_dropout(image_features, text_features, p, generator=None):\n"
    "    return image_features.clone(), text_features.clone()"
)


def _class_of(n: int, directory: Path) -> None:
    """Write ``n`` submissions: complete (master), empty (student) and partly wrong ones, in turn."""
    root = course_root()
    master = nbformat.read(str(root / MASTERS_DIR / "ex01_overview.ipynb"), as_version=4)
    student = nbformat.read(str(root / STUDENT_DIR / "ex01_overview.ipynb"), as_version=4)
    partial = copy.deepcopy(master)
    for cell in partial.cells:
        if cell.cell_type == "code" and cell.source.startswith("def modality_dropout("):
            cell.source = WRONG_DROPOUT
    kinds = [master, student, partial]
    for i in range(n):
        nbformat.write(kinds[i % 3], str(directory / f"Copy of ex01_overview ({i + 1}).ipynb"))


def _grade_class(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        submissions = Path(tmp) / "submissions"
        submissions.mkdir()
        _class_of(n, submissions)
        options = GradingOptions(workers=2, timeout=120, hidden_dir=default_hidden_dir())
        summaries = []
        timing = measure(
            lambda: summaries.append(grade_directory(submissions, Path(tmp) / "grades.csv", options=options)),
            warmup=0,
            repeats=1,
        )
        reports = []
        similarity_timing = measure(lambda: reports.append(similarity_report(submissions)), warmup=0, repeats=3)
    return {
        "submissions": n,
        "workers": 2,
        "graded": sum(o.graded for o in summaries[-1].outcomes),
        "wall_s": round(timing.median, 1),
        "s_per_submission": round(timing.median / n, 2),
        "similarity_s": round(similarity_timing.median, 2),
        "flagged_pairs": sum(pair.flagged for pair in reports[-1]),
    }


def run(quick: bool = False) -> dict:
    rows = [_grade_class(n) for n in ([2] if quick else [40])]
    return {
        "title": "Grading exercise set 1 submissions (fresh kernel each, public + hidden tests)",
        "columns": ["submissions", "workers", "graded", "wall_s", "s_per_submission", "similarity_s", "flagged_pairs"],
        "rows": rows,
        "notes": "One run (a run is long and the machine is shared: wall times vary with load). Each submission "
        "costs a kernel start and `import torch`; with 2 workers on 2 cores the CPU is the limit. "
        "similarity_s: the similarity report over the same class (median of 3; nothing executed); the class holds "
        "identical copies, so many pairs are flagged.",
    }
