"""Instructor tools: master notebooks → student notebooks, the student release, and a scan for leaks.

A master notebook (``exercises/instructor/masters/exNN_*.ipynb``) is the source of truth of an exercise set. Its
solution code sits between marker lines::

    def clip_loss(image_features, text_features, temperature=0.07):
        \"\"\"docstring the student keeps\"\"\"
        # BEGIN SOLUTION
        ...
        # END SOLUTION

:func:`generate` writes ``exercises/exNN_*.ipynb`` with each marked block replaced by ``# YOUR CODE HERE`` and
``raise NotImplementedError`` (same indentation), cells tagged ``instructor-only`` removed, every output and
execution count cleared, the Colab badge and setup cell (from :mod:`mmcourse.dev.notebooks`) in front, stable cell
ids and metadata, and ``metadata.mmcourse = {"exercise_set": "exNN", "version": N}`` stamped in so the grader
recognises a submission whatever its file name. Running it twice gives byte-identical files;
``generate(check=True)`` (or ``mmcourse exercises generate --check``) reports stale notebooks instead.

:func:`release` builds the student edition (the student notebooks + a README) in a fresh directory and refuses to
finish if :func:`scan_for_leaks` finds solution or hidden-test text in it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mmcourse.grading.layout import HIDDEN_DIR, MASTERS_DIR, STUDENT_DIR, course_root
from mmcourse.grading.spec import SET_ID_PATTERN, load_set

__all__ = [
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "INSTRUCTOR_ONLY_TAG",
    "strip_solutions",
    "student_notebook",
    "generate",
    "GenerateReport",
    "release",
    "leak_markers",
    "scan_for_leaks",
    "read_notebook_text",
    "notebook_set_id",
]

BEGIN_SOLUTION = "# BEGIN SOLUTION"
END_SOLUTION = "# END SOLUTION"
PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError")
INSTRUCTOR_ONLY_TAG = "instructor-only"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
_MIN_LEAK_LINE = 12


def strip_solutions(source: str, *, where: str = "cell") -> str:
    """Replace every ``# BEGIN SOLUTION`` … ``# END SOLUTION`` block by the placeholder, keeping indentation."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            if inside:
                raise ValueError(f"{where}, line {number}: {BEGIN_SOLUTION} inside another solution block")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + PLACEHOLDER[0], indent + PLACEHOLDER[1]]
        elif stripped == END_SOLUTION:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END_SOLUTION} without {BEGIN_SOLUTION}")
            inside = False
        elif not inside:
            out.append(line)
        elif "BEGIN SOLUTION" in stripped or "END SOLUTION" in stripped:
            raise ValueError(f"{where}, line {number}: malformed solution marker {stripped!r}")
    if inside:
        raise ValueError(f"{where}: {BEGIN_SOLUTION} is never closed by {END_SOLUTION}")
    return "\n".join(out)


def _solution_blocks(source: str) -> tuple[list[str], list[str]]:
    """(lines inside solution blocks, lines outside them) of one cell's source."""
    inside, solution, visible = False, [], []
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            inside = True
        elif stripped == END_SOLUTION:
            inside = False
        else:
            (solution if inside else visible).append(line)
    return solution, visible


def _read(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def notebook_set_id(nb) -> str | None:
    """The exercise set a notebook belongs to, from ``metadata.mmcourse.exercise_set`` (None if absent)."""
    meta = nb.get("metadata", {}).get("mmcourse", {})
    set_id = meta.get("exercise_set") if isinstance(meta, dict) else None
    return set_id if isinstance(set_id, str) and SET_ID_PATTERN.fullmatch(set_id) else None


def student_notebook(master, *, notebook_relpath: str, url: str | None = None):
    """The student version of ``master`` (a ``NotebookNode``; not modified).

    Args:
        master: the master notebook; must carry ``metadata.mmcourse.exercise_set``.
        notebook_relpath: the student notebook's path in the repository (for the Colab badge), e.g.
            ``"exercises/ex04_contrastive.ipynb"``.
        url: the repository URL (default: :func:`mmcourse.dev.notebooks.repository_url`).
    """
    import nbformat

    from mmcourse.dev import notebooks

    set_id = notebook_set_id(master)
    if set_id is None:
        raise ValueError(f"{notebook_relpath}: the master lacks metadata.mmcourse.exercise_set (e.g. 'ex04')")
    version = load_set(set_id).version
    url = url or notebooks.repository_url()
    cells = [
        nbformat.v4.new_markdown_cell(notebooks.badge_source(notebook_relpath, url)),
        nbformat.v4.new_code_cell(notebooks.setup_source(url)),
    ]
    for index, cell in enumerate(master.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if INSTRUCTOR_ONLY_TAG in tags:
            continue
        where = f"{notebook_relpath} (master cell {index})"
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(strip_solutions(cell.source, where=where))
        elif cell.cell_type == "markdown":
            if BEGIN_SOLUTION in cell.source:
                raise ValueError(f"{where}: solution markers only work in code cells")
            new = nbformat.v4.new_markdown_cell(cell.source)
        else:
            new = nbformat.v4.new_raw_cell(cell.source)
        if tags:
            new.metadata["tags"] = tags
        cells.append(new)
    for index, cell in enumerate(cells):
        cell["id"] = f"{set_id}-{index:02d}"
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": dict(KERNELSPEC),
        "language_info": {"name": "python"},
        "mmcourse": {"exercise_set": set_id, "version": version},
    }
    nbformat.validate(nb)
    return nb


def _dumps(nb) -> str:
    import nbformat

    return nbformat.writes(nb) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_notebook_text(path: Path) -> str:
    """The text a reader of the notebook sees: every cell's source and every text output, one after another."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    parts = []
    for cell in nb.cells:
        parts.append(cell.source)
        for out in cell.get("outputs", []):
            parts.append(str(out.get("text", "")))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    parts.append(str(nb.metadata))
    return "\n".join(parts)


def _masters(root: Path) -> list[Path]:
    return sorted((root / MASTERS_DIR).glob("ex[0-9][0-9]_*.ipynb"))


@dataclass
class GenerateReport:
    """What :func:`generate` did (or, with ``check=True``, would do)."""

    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.stale and not self.orphans


def _student_texts(root: Path, url: str | None = None) -> dict[Path, str]:
    texts = {}
    for master_path in _masters(root):
        rel = (STUDENT_DIR / master_path.name).as_posix()
        texts[root / STUDENT_DIR / master_path.name] = _dumps(
            student_notebook(_read(master_path), notebook_relpath=rel, url=url)
        )
    return texts


def generate(root: str | Path | None = None, *, check: bool = False, url: str | None = None) -> GenerateReport:
    """Regenerate every student notebook from its master.

    Args:
        root: the course checkout (default: :func:`~mmcourse.grading.layout.course_root`).
        check: write nothing; report which student notebooks are stale (missing or different) and which
            ``exercises/ex*.ipynb`` have no master.
        url: repository URL for the badge/setup cell (default: from ``pyproject.toml``).
    """
    root = course_root(root)
    report = GenerateReport()
    texts = _student_texts(root, url)
    for path, text in texts.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            report.unchanged.append(path)
        elif check:
            report.stale.append(path)
        else:
            _atomic_write(path, text)
            report.written.append(path)
    report.orphans = sorted(set((root / STUDENT_DIR).glob("ex[0-9][0-9]_*.ipynb")) - set(texts))
    return report


# ----------------------------------------------------------------------------------------------------------------
# Release and leak scan
# ----------------------------------------------------------------------------------------------------------------
def _significant(line: str) -> str | None:
    text = line.strip()
    if len(text) < _MIN_LEAK_LINE or text.startswith("#") or text in ('"""', "'''") or text[-1] in "([{":
        return None  # short, a comment, or the generic head of a multi-line call (`raise ValueError(`)
    return text


def leak_markers(root: str | Path | None = None) -> dict[str, set[str]]:
    """Text that must never reach students: ``{"solution": {...lines}, "hidden": {...lines}}``.

    A solution line is a line inside a solution block of a master that appears nowhere students may look (the
    rest of every master, markdown included, and the public tests). A hidden line is a line of a hidden-test module
    that appears nowhere in that public material. Comments, short lines (< 12 characters) and lines that only open
    a bracket are ignored.
    """
    root = course_root(root)
    public_parts: list[str] = []
    solution_lines: set[str] = set()
    public_dir = Path(__file__).resolve().parent / "public"
    for path in sorted(public_dir.glob("*.py")):
        public_parts.append(path.read_text(encoding="utf-8"))
    for master_path in _masters(root):
        for cell in _read(master_path).cells:
            solution, visible = _solution_blocks(cell.source)
            if INSTRUCTOR_ONLY_TAG in cell.get("metadata", {}).get("tags", []):
                solution, visible = solution + visible, []
            public_parts.append("\n".join(visible))
            solution_lines.update(s for s in map(_significant, solution) if s)
    hidden_lines: set[str] = set()
    for path in sorted((root / HIDDEN_DIR).glob("*.py")):
        hidden_lines.update(s for s in map(_significant, path.read_text(encoding="utf-8").splitlines()) if s)
    public_text = "\n".join(public_parts)
    return {
        "solution": {line for line in solution_lines if line not in public_text},
        "hidden": {line for line in hidden_lines if line not in public_text},
    }


def scan_for_leaks(directory: str | Path, root: str | Path | None = None) -> list[str]:
    """Problems found in ``directory`` (a release): solution text, hidden-test text, markers, instructor files."""
    directory = Path(directory)
    markers = leak_markers(root)
    problems = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if "instructor" in rel.split("/"):
            problems.append(f"{rel}: instructor file in the release")
        try:
            text = read_notebook_text(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, ValueError):
            continue
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "HiddenTests("):
            if marker in text:
                problems.append(f"{rel}: contains {marker!r}")
        for kind, lines in markers.items():
            for line in sorted(lines):
                if line in text:
                    problems.append(f"{rel}: contains {kind} text {line!r}")
    return problems


RELEASE_README = """# mmcourse exercises (student edition)

One exercise notebook per chapter: `exercises/ex01_overview.ipynb` … Open one in JupyterLab or on Colab (badge at
the top), fill in every `# YOUR CODE HERE` (delete the `raise NotImplementedError` line), and run the
`check("exNN.name")` cell under each question for instant feedback: ✓/✗ per test, expected vs got, a hint,
points. The checks come with the course package (`pip install mmcourse`, or the notebook's setup cell on Colab).

Hand in the notebook file itself (`.ipynb`). Its name does not matter ("Copy of …" is fine), but do not remove
its metadata: it tells the grader which exercise set it is. Your notebook is graded in a fresh kernel, top to
bottom, with a time limit: make sure "Restart & run all" works. The grader runs the public tests you see plus
hidden tests on other inputs; calling the library's own implementation of the thing you are asked to write earns
no points for that question.
"""


def release(out_dir: str | Path, root: str | Path | None = None, *, force: bool = False) -> Path:
    """Build the student edition in ``out_dir``: ``exercises/*.ipynb`` (generated from the masters) + README.md.

    The release is assembled in a temporary directory, scanned with :func:`scan_for_leaks`, and only then moved
    into place. An existing non-empty ``out_dir`` is replaced only with ``force=True``.
    """
    root = course_root(root)
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(f"{out_dir} exists and is not empty (use force=True / --force to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".release-", dir=str(out_dir.parent)))
    try:
        for path, text in _student_texts(root).items():
            _atomic_write(staging / STUDENT_DIR / path.name, text)
        _atomic_write(staging / "README.md", RELEASE_README)
        problems = scan_for_leaks(staging, root)
        if problems:
            raise RuntimeError("the release would leak instructor material:\n  " + "\n  ".join(problems[:20]))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def master_questions(nb) -> list[str]:
    """Names defined at top level in the master's code cells (``def x`` / ``class X``), in order."""
    names = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            names += re.findall(r"^(?:def|class)\s+([A-Za-z_]\w*)", cell.source, flags=re.MULTILINE)
    return names
