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

A *written* question (``SET.written_question``) is answered in words. Its answer cell in the master is a markdown
cell whose metadata holds ``{"mmcourse": {"written": "<name>"}}``::

    **Your answer:**

    <!-- BEGIN SOLUTION -->
    The model answer, in words.
    <!-- END SOLUTION -->
    <!-- BEGIN RUBRIC -->
    - 1 point: names the cause ...
    <!-- END RUBRIC -->

The student notebook gets the same cell (same metadata) with the model answer replaced by ``YOUR ANSWER HERE``
and the rubric removed. Every written question of the set needs exactly one such cell in the master, and every
such cell a declared written question (:func:`student_notebook` raises ``ValueError`` otherwise).

:func:`release` builds the student edition (the student notebooks + a README) in a fresh directory and refuses to
finish if :func:`scan_for_leaks` finds solution or hidden-test text in it.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mmcourse.grading.layout import HIDDEN_DIR, MASTERS_DIR, STUDENT_DIR, course_root
from mmcourse.grading.spec import SET_ID_PATTERN, ExerciseSet, HiddenTests, Question, load_set

__all__ = [
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "BEGIN_ANSWER",
    "END_ANSWER",
    "BEGIN_RUBRIC",
    "END_RUBRIC",
    "ANSWER_PLACEHOLDER",
    "WrittenCell",
    "written_name",
    "parse_written",
    "strip_written",
    "written_cells",
    "answer_text",
    "master_written",
    "INSTRUCTOR_ONLY_TAG",
    "KERNELSPEC",
    "LANGUAGE_INFO",
    "heading_points",
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
#: What ipykernel reports as ``language_info``, as the executed chapter notebooks store it (the reference
#: environment's Python). Written in full so that JupyterLab, which copies the kernel's ``language_info`` into the
#: notebook when the kernel starts, finds nothing to change: with only ``{"name": "python"}`` it would fill in the
#: rest and ask to save a notebook nobody edited. One fixed version keeps the generated files byte-identical.
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
    "version": "3.11.7",
}
_MIN_LEAK_LINE = 12
#: Markers of a written question's answer cell (markdown; each on a line of its own).
BEGIN_ANSWER = "<!-- BEGIN SOLUTION -->"
END_ANSWER = "<!-- END SOLUTION -->"
BEGIN_RUBRIC = "<!-- BEGIN RUBRIC -->"
END_RUBRIC = "<!-- END RUBRIC -->"
ANSWER_PLACEHOLDER = "YOUR ANSWER HERE"
_WRITTEN_MARKERS = {BEGIN_ANSWER: "solution", END_ANSWER: "solution", BEGIN_RUBRIC: "rubric", END_RUBRIC: "rubric"}


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


def written_name(cell) -> str | None:
    """The written question a cell answers (``metadata.mmcourse.written``), or None."""
    metadata = cell.get("metadata", {}) if isinstance(cell, dict) else {}
    meta = metadata.get("mmcourse") if isinstance(metadata, dict) else None
    name = meta.get("written") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else None


@dataclass(frozen=True)
class WrittenCell:
    """A master's answer cell, taken apart: the model answer, the rubric, and what the student sees."""

    name: str
    answer: str  # the model answer (between the SOLUTION markers)
    rubric: str  # the rubric (between the RUBRIC markers)
    student: str  # the student's version of the cell: ``YOUR ANSWER HERE`` in place of the answer, no rubric


def _written_blocks(source: str, *, where: str = "cell", strict: bool = True):
    """``(answer lines, rubric lines, student lines)`` of a written answer cell; ``strict`` checks the markers."""
    blocks: dict[str, list[str]] = {"solution": [], "rubric": []}
    seen = {"solution": 0, "rubric": 0}
    student: list[str] = []
    inside: str | None = None
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        kind = _WRITTEN_MARKERS.get(stripped)
        if kind is not None:
            opening = stripped.startswith("<!-- BEGIN")
            if strict and opening and inside is not None:
                raise ValueError(f"{where}, line {number}: {stripped} inside another block")
            if strict and not opening and inside != kind:
                raise ValueError(f"{where}, line {number}: {stripped} without its BEGIN marker")
            if opening:
                inside, seen[kind] = kind, seen[kind] + 1
                if kind == "solution":
                    student.append(ANSWER_PLACEHOLDER)
            else:
                inside = None
        elif inside is not None:
            blocks[inside].append(line)
        else:
            if strict and ("BEGIN SOLUTION" in stripped or "END SOLUTION" in stripped or "RUBRIC -->" in stripped):
                raise ValueError(f"{where}, line {number}: malformed marker {stripped!r} (put it on a line alone)")
            student.append(line)
    if strict:
        if inside is not None:
            raise ValueError(f"{where}: a {inside} block is never closed")
        for kind, begin in (("solution", BEGIN_ANSWER), ("rubric", BEGIN_RUBRIC)):
            if seen[kind] != 1:
                raise ValueError(f"{where}: a written answer cell needs exactly one {begin} block, found {seen[kind]}")
    return blocks["solution"], blocks["rubric"], student


def _tidy(lines: list[str]) -> str:
    """Join lines, dropping the blank lines a removed block leaves behind (no double or edge blank lines)."""
    out: list[str] = []
    for line in lines:
        if not line.strip() and (not out or not out[-1].strip()):
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out)


def parse_written(source: str, name: str, *, where: str = "cell") -> WrittenCell:
    """Take a master's answer cell apart (``ValueError`` on missing, unclosed or nested markers)."""
    answer, rubric, student = _written_blocks(source, where=where)
    return WrittenCell(name, _tidy(answer), _tidy(rubric), _tidy(student))


def strip_written(source: str, *, where: str = "cell") -> str:
    """The student's version of an answer cell: ``YOUR ANSWER HERE`` instead of the model answer, no rubric."""
    return parse_written(source, "", where=where).student


def written_cells(nb) -> dict[str, list]:
    """The cells of ``nb`` marked as answers to written questions: ``{name: [cell, ...]}`` in notebook order."""
    found: dict[str, list] = {}
    for cell in nb.get("cells", []):
        name = written_name(cell)
        if name is not None:
            found.setdefault(name, []).append(cell)
    return found


def _normalise(text: str) -> str:
    return " ".join(text.split())


def answer_text(source: str, template: str | None = None) -> str | None:
    """What a student wrote in an answer cell, or None when it is empty or still ``YOUR ANSWER HERE``.

    ``template`` is the cell as generated for the student (see :func:`strip_written`): when given, a cell whose
    text is still only the template's (the prompt around the placeholder) counts as unanswered too.
    """
    lines = [line for line in source.split("\n") if line.strip() != ANSWER_PLACEHOLDER]
    text = "\n".join(lines).strip()
    if not text:
        return None
    if template is not None:
        prompt = [line for line in template.split("\n") if line.strip() != ANSWER_PLACEHOLDER]
        if _normalise(text) == _normalise("\n".join(prompt)):
            return None
    return text


def master_written(master, *, where: str = "the master") -> dict[str, tuple[WrittenCell, str | None]]:
    """``{name: (WrittenCell, heading)}`` for each answer cell of a master; ``heading`` is the student's text of the
    cell just before it (usually the question's heading), used to find an answer cell that lost its metadata."""
    found: dict[str, tuple[WrittenCell, str | None]] = {}
    previous: str | None = None
    for index, cell in enumerate(master.cells):
        if INSTRUCTOR_ONLY_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        name = written_name(cell)
        if name is not None:
            found.setdefault(name, (parse_written(cell.source, name, where=f"{where} (cell {index})"), previous))
            previous = None
        elif cell.cell_type == "code":
            previous = strip_solutions(cell.source, where=f"{where} (cell {index})")
        else:
            previous = cell.source
    return found


def _check_written_cells(master, exercise_set: ExerciseSet, where: str) -> None:
    """Every declared written question has exactly one answer cell in the master, and vice versa."""
    found = written_cells(master)
    for name, cells in found.items():
        if name not in exercise_set.written:
            declared = ", ".join(exercise_set.written) or "none"
            raise ValueError(
                f"{exercise_set.id}: {where} has an answer cell for written question {name!r}, but the set declares "
                f"no written_question {name!r} (declared: {declared})"
            )
        if len(cells) > 1:
            raise ValueError(
                f"{exercise_set.id}: {where} has {len(cells)} answer cells for written question {name!r}; "
                "it needs exactly one"
            )
    for name in exercise_set.written:
        if name not in found:
            raise ValueError(
                f"{exercise_set.id}: written question {name!r} has no answer cell in {where} (a markdown cell "
                f'whose metadata holds {{"mmcourse": {{"written": "{name}"}}}})'
            )


def _read(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def notebook_set_id(nb) -> str | None:
    """The exercise set a notebook belongs to, from ``metadata.mmcourse.exercise_set`` (None if absent)."""
    meta = nb.get("metadata", {}).get("mmcourse", {})
    set_id = meta.get("exercise_set") if isinstance(meta, dict) else None
    return set_id if isinstance(set_id, str) and SET_ID_PATTERN.fullmatch(set_id) else None


def student_notebook(master, *, notebook_relpath: str, url: str | None = None, exercise_set: ExerciseSet | None = None):
    """The student version of ``master`` (a ``NotebookNode``; not modified).

    Args:
        master: the master notebook; must carry ``metadata.mmcourse.exercise_set``.
        notebook_relpath: the student notebook's path in the repository (for the Colab badge), e.g.
            ``"exercises/ex04_contrastive.ipynb"``.
        url: the repository URL (default: :func:`mmcourse.dev.notebooks.repository_url`).
        exercise_set: the set the master belongs to (default: :func:`~mmcourse.grading.spec.load_set`).
    Raises:
        ValueError: broken markers, or written questions and answer cells that do not match one to one.
    """
    import nbformat

    from mmcourse.dev import notebooks

    set_id = notebook_set_id(master)
    if set_id is None:
        raise ValueError(f"{notebook_relpath}: the master lacks metadata.mmcourse.exercise_set (e.g. 'ex04')")
    if exercise_set is None:
        exercise_set = load_set(set_id)
    elif exercise_set.id != set_id:
        raise ValueError(f"{notebook_relpath}: the master belongs to {set_id}, not {exercise_set.id}")
    version = exercise_set.version
    _check_written_cells(master, exercise_set, f"the master of {notebook_relpath}")
    url = url or notebooks.repository_url()
    cells = [
        nbformat.v4.new_markdown_cell(notebooks.badge_source(notebook_relpath, url)),
        nbformat.v4.new_code_cell(notebooks.setup_source(url)),
    ]
    for index, cell in enumerate(master.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        where = f"{notebook_relpath} (master cell {index})"
        written = written_name(cell)
        if written is not None:
            if cell.cell_type != "markdown":
                raise ValueError(f"{where}: the answer cell of written question {written!r} must be a markdown cell")
            if INSTRUCTOR_ONLY_TAG in tags:
                raise ValueError(f"{where}: the answer cell of written question {written!r} is tagged instructor-only")
        elif any(marker in cell.source for marker in _WRITTEN_MARKERS):
            raise ValueError(
                f"{where}: answer/rubric markers only work in a markdown cell whose metadata holds "
                '{"mmcourse": {"written": "<question name>"}}'
            )
        if INSTRUCTOR_ONLY_TAG in tags:
            continue
        if written is not None:
            new = nbformat.v4.new_markdown_cell(strip_written(cell.source, where=where))
            new.metadata["mmcourse"] = {"written": written}
        elif cell.cell_type == "code":
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
        "language_info": copy.deepcopy(LANGUAGE_INFO),
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
    """Text that must never reach students: ``{"solution": {...}, "hidden": {...}, "rubric": {...}}`` (lines).

    A solution line is a line inside a solution block of a master (code, or the model answer of a written
    question) that appears nowhere students may look (the rest of every master, markdown included, and the public
    tests). A rubric line is a line of a written question's rubric that appears nowhere in that public material; a
    hidden line, likewise, a line of a hidden-test module. Comments, short lines (< 12 characters) and lines that
    only open a bracket are ignored.
    """
    root = course_root(root)
    public_parts: list[str] = []
    solution_lines: set[str] = set()
    rubric_lines: set[str] = set()
    public_dir = Path(__file__).resolve().parent / "public"
    for path in sorted(public_dir.glob("*.py")):
        public_parts.append(path.read_text(encoding="utf-8"))
    for master_path in _masters(root):
        for cell in _read(master_path).cells:
            rubric: list[str] = []
            if written_name(cell) is not None or any(marker in cell.source for marker in _WRITTEN_MARKERS):
                solution, rubric, visible = _written_blocks(cell.source, strict=False)
            else:
                solution, visible = _solution_blocks(cell.source)
            if INSTRUCTOR_ONLY_TAG in cell.get("metadata", {}).get("tags", []):
                solution, visible = solution + visible, []
            public_parts.append("\n".join(visible))
            solution_lines.update(s for s in map(_significant, solution) if s)
            rubric_lines.update(s for s in map(_significant, rubric) if s)
    hidden_lines: set[str] = set()
    for path in sorted((root / HIDDEN_DIR).glob("*.py")):
        hidden_lines.update(s for s in map(_significant, path.read_text(encoding="utf-8").splitlines()) if s)
    public_text = "\n".join(public_parts)
    return {
        "solution": {line for line in solution_lines if line not in public_text},
        "hidden": {line for line in hidden_lines if line not in public_text},
        "rubric": {line for line in rubric_lines if line not in public_text},
    }


def scan_for_leaks(directory: str | Path, root: str | Path | None = None) -> list[str]:
    """Problems found in ``directory`` (a release): solution, rubric or hidden-test text, markers, instructor files."""
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
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN RUBRIC", "END RUBRIC", "HiddenTests("):
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

Some questions are answered in words: write your answer in place of `YOUR ANSWER HERE` in the cell under the
question (keep the cell; `check` tells you the points, a person grades the answer).

Hand in the notebook file itself (`.ipynb`). Its name does not matter ("Copy of …" is fine), but do not remove
its metadata: it tells the grader which exercise set it is. Your notebook is graded in a fresh kernel, top to
bottom, with a time limit: make sure "Restart & run all" works. The grader runs the public tests you see plus
hidden tests on other inputs; calling the library's own implementation of the thing you are asked to write earns
no points for that question.
"""


def release(out_dir: str | Path, root: str | Path | None = None, *, force: bool = False) -> Path:
    """Build the student edition in ``out_dir``: ``exercises/*.ipynb`` (generated from the masters) + README.md.

    Written questions reach the release as ``YOUR ANSWER HERE`` cells: their model answers and rubrics stay out.

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


def heading_points(question: Question, hidden: HiddenTests | None = None) -> str:
    """What a question's heading in the master says about its points, e.g. ``"9 points: 5 checked here, 4 by the
    grader's hidden tests"`` — the total, and the share that ``check`` runs (it reports the same split).

    The total is the question's declared ``points`` or, without one, its public + ``hidden`` tests' points.
    """
    from mmcourse.grading.results import format_points

    total = question.points if question.points is not None else question.max_points(hidden)
    public = question.public_points
    unit = "point" if total == 1 else "points"
    if total == public:
        return f"{format_points(total)} {unit}, all checked here"
    return (
        f"{format_points(total)} {unit}: {format_points(public)} checked here, "
        f"{format_points(total - public)} by the grader's hidden tests"
    )
