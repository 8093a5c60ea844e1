"""Similar answers among submissions: pairs of students whose answer to a question is (nearly) the same code.

``mmcourse grade SUBMISSIONS --out grades.csv --similarity`` writes ``grades_similarity.csv`` next to the gradebook
(``<out stem>_similarity.csv``); ``mmcourse exercises similarity SUBMISSIONS --out similarity.csv`` writes the same
report without grading. For every exercise set and every auto-graded question, the answers of every pair of
submissions of that set are compared; one row per pair: ``a, b, set, question, similarity, flagged``, the most
similar pairs first. Only the notebooks' sources are read: nothing is executed, so the report takes seconds.

**The answer** to a question is the code of the cells that define its name at top level (``def name`` /
``class name``: the lookup of :func:`mmcourse.grading.authoring.master_questions`), joined. Before comparing it is
normalised (:func:`normalise`):

* tokenised with :mod:`tokenize`; comments, blank lines and statements that are only a string (docstrings) go;
* every identifier the answer binds (parameters, assigned names, loop, ``with`` and ``except`` targets, ``def`` and
  ``class`` names, attributes assigned such as ``self.proj``) becomes ``v0``, ``v1``, … in order of first
  appearance, starting with the names of the question's template, so that the given signature reads the same in
  every submission. Library names (``torch``, ``F.normalize``), imported names, keywords, keyword arguments and
  literals stay as they are;
* every logical line that is also a line of the template goes: the template is the question's stub in the student
  notebook ``exercises/exNN_*.ipynb`` (signature, docstring, ``# YOUR CODE HERE``, ``raise NotImplementedError``).

Each remaining line is a depth marker (its indentation level) followed by its tokens. The similarity of two answers
is :class:`difflib.SequenceMatcher`'s ratio of their token sequences: 1.0 when they are the same after
normalisation. A pair is **flagged** when its similarity is at least :data:`THRESHOLD` (0.9) and both answers have
at least :data:`MIN_TOKENS` tokens: a short answer (a one-line ``return``) is often written token for token the same
by students who never met. A pair in which either answer is empty (the untouched stub, or no cell defining the name)
is left out of the report.

A flag asks a person to look; it is not a verdict. What this cannot see: answers restructured by hand (statements
reordered, a loop turned into a vectorised expression), code shared through helpers in other cells, written answers.
"""

from __future__ import annotations

import ast
import builtins
import csv
import difflib
import io
import keyword
import re
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from mmcourse.grading.authoring import PLACEHOLDER, master_questions
from mmcourse.grading.spec import SET_ID_PATTERN, available_sets, load_set

__all__ = [
    "THRESHOLD",
    "MIN_TOKENS",
    "COLUMNS",
    "SimilarPair",
    "normalise",
    "similarity",
    "answer_source",
    "student_notebook_path",
    "question_templates",
    "similarity_report",
    "similarity_csv",
    "similarity_path",
    "write_similarity_report",
]

#: Pairs at least this similar are flagged (see the module docstring for what the number measures).
THRESHOLD = 0.9
#: Answers shorter than this (normalised tokens, depth markers included) are never flagged: too short to tell.
MIN_TOKENS = 20
#: The columns of the report.
COLUMNS = ("a", "b", "set", "question", "similarity", "flagged")

_STUB_LINE = tuple(PLACEHOLDER[1].split())  # ("raise", "NotImplementedError"): always template
_FALLBACK_TOKEN = re.compile(r"[A-Za-z_]\w*|\d[\w.]*|\"[^\"]*\"|'[^']*'|\S")
_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class SimilarPair:
    """One row of the report: two submissions' answers to one question, compared."""

    a: str
    b: str
    set_id: str
    question: str
    similarity: float
    flagged: bool


# ----------------------------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------------------------
def _bound_names(source: str) -> tuple[set[str], set[str]] | None:
    """``(names, attributes)`` that ``source`` binds (imports excluded), or None when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    names: set[str] = set()
    attributes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            attributes.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names, attributes


def _lines(source: str) -> list[tuple[int, list[tuple[bool, str]]]]:
    """Logical lines as ``(depth, [(is_name, text), ...])``; comments, blank lines and string-only lines dropped.

    Code that :mod:`tokenize` refuses is split with a plain regular expression instead, line by line.
    """
    lines: list[tuple[int, list[tuple[bool, str]]]] = []
    current: list[tuple[bool, str]] = []
    strings_only, depth, start = True, 0, 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.INDENT, tokenize.DEDENT):
                depth += 1 if tok.type == tokenize.INDENT else -1
            elif tok.type == tokenize.NEWLINE:
                if current and not strings_only:
                    lines.append((start, current))
                current, strings_only = [], True
            elif tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER):
                if not current:
                    start = depth
                current.append((tok.type == tokenize.NAME and not keyword.iskeyword(tok.string), tok.string))
                strings_only = strings_only and tok.type == tokenize.STRING
    except (tokenize.TokenError, SyntaxError):
        return _fallback_lines(source)
    if current and not strings_only:
        lines.append((start, current))
    return lines


def _fallback_lines(source: str) -> list[tuple[int, list[tuple[bool, str]]]]:
    """:func:`_lines` for code that does not tokenize: words, numbers, quoted strings and single characters, per line
    (indentation in steps of 4), comment and string-only lines dropped."""
    lines = []
    for line in source.split("\n"):
        text = line.strip()
        if not text or text.startswith(("#", '"', "'")):
            continue
        tokens = _FALLBACK_TOKEN.findall(text.split(" #")[0])
        depth = (len(line) - len(line.lstrip())) // 4
        lines.append((depth, [(t.isidentifier() and not keyword.iskeyword(t), t) for t in tokens]))
    return lines


def _renamed(lines, bound, names: dict[str, str]) -> list[tuple[str, ...]]:
    """Each line as ``("<depth>", token, ...)``, bound identifiers replaced through ``names`` (extended in place).

    ``bound`` is :func:`_bound_names`' answer; when it is None (the code does not parse), every name that is not a
    builtin and does not follow a dot counts as bound.
    """
    variables, attributes = bound if bound is not None else (None, set())

    def renames(text: str, after_dot: bool) -> bool:
        if after_dot:
            return text in attributes
        if text in names:
            return True
        return text in variables if variables is not None else text not in _BUILTINS

    out = []
    for depth, tokens in lines:
        line = [f"<{depth}>"]
        for index, (is_name, text) in enumerate(tokens):
            if is_name and renames(text, index > 0 and tokens[index - 1][1] == "."):
                text = names.setdefault(text, f"v{len(names)}")
            line.append(text)
        out.append(tuple(line))
    return out


def normalise(source: str, template: str = "") -> tuple[str, ...]:
    """The tokens of an answer compared by :func:`similarity`: template lines, comments, docstrings and blank lines
    removed, bound identifiers renamed ``v0, v1, …`` in order of first appearance (the template's names first).

    Empty when the answer is only the template (the untouched stub).
    """
    names: dict[str, str] = {}
    template_lines = set(_renamed(_lines(template), _bound_names(template), names)) if template.strip() else set()
    kept = []
    for line in _renamed(_lines(source), _bound_names(source), names):
        if line not in template_lines and line[1:] != _STUB_LINE:
            kept.extend(line)
    return tuple(kept)


def similarity(a: Sequence, b: Sequence) -> float:
    """How alike two normalised answers are: :class:`difflib.SequenceMatcher`'s ratio (0.0 if either is empty)."""
    if not a or not b:
        return 0.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


# ----------------------------------------------------------------------------------------------------------------
# Answers and templates
# ----------------------------------------------------------------------------------------------------------------
def answer_source(nb, name: str) -> str:
    """The code of the cells of ``nb`` that define ``name`` at top level, joined ("" when no cell does)."""
    cells = [
        cell.source
        for cell in nb.cells
        if cell.cell_type == "code" and name in master_questions(SimpleNamespace(cells=[cell]))
    ]
    return "\n\n".join(cells)


def student_notebook_path(set_id: str, student_dir: str | Path | None = None) -> Path:
    """The generated student notebook ``exNN_*.ipynb`` of a set (default folder: ``exercises/`` of the checkout).

    Raises:
        ValueError: no such notebook, or more than one.
    """
    if student_dir is None:
        from mmcourse.grading.layout import STUDENT_DIR, course_root

        student_dir = course_root() / STUDENT_DIR
    paths = sorted(Path(student_dir).glob(f"{set_id}_*.ipynb"))
    if len(paths) != 1:
        raise ValueError(
            f"expected one student notebook {set_id}_*.ipynb in {student_dir}, found {len(paths)} "
            "(run `mmcourse exercises generate` in the course checkout)"
        )
    return paths[0]


def question_templates(set_id: str, student_dir: str | Path | None = None) -> dict[str, str]:
    """``{question name: the stub cell's source}`` of every auto-graded question, from the student notebook."""
    import nbformat

    nb = nbformat.read(str(student_notebook_path(set_id, student_dir)), as_version=4)
    return {q.name: answer_source(nb, q.name) for q in load_set(set_id)}


# ----------------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------------
def _read_submissions(submissions_dir: Path, force_set: str | None) -> dict[str, list[tuple[str, object]]]:
    """``{set_id: [(submission, notebook), ...]}`` of every readable notebook of a known set under the folder."""
    from mmcourse.grading.grader import MAX_NOTEBOOK_BYTES, _detect_set, _parse_notebook, find_submissions

    by_set: dict[str, list[tuple[str, object]]] = {}
    known = set(available_sets())
    for path in find_submissions(submissions_dir):
        try:
            if path.is_symlink() or path.stat().st_size > MAX_NOTEBOOK_BYTES:
                continue
            nb = _parse_notebook(path.read_bytes())
        except OSError:  # unreadable: the gradebook reports it; there is nothing to compare
            continue
        set_id = _detect_set(nb, force_set) if nb is not None else None
        if set_id in known:
            by_set.setdefault(set_id, []).append((path.relative_to(submissions_dir).as_posix(), nb))
    return by_set


def _pairs(set_id: str, question: str, answers: list[tuple[str, tuple[str, ...]]], threshold: float):
    """The compared pairs of one question; ``answers`` are ``(submission, tokens)``, empty answers excluded."""
    vocabulary: dict[str, int] = {}
    coded = [(name, [vocabulary.setdefault(t, len(vocabulary)) for t in tokens]) for name, tokens in answers]
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    rows = []
    for j, (b, tokens_b) in enumerate(coded):
        matcher.set_seq2(tokens_b)  # the expensive half: indexed once per answer
        for a, tokens_a in coded[:j]:
            matcher.set_seq1(tokens_a)
            ratio = matcher.ratio()
            flagged = ratio >= threshold and min(len(tokens_a), len(tokens_b)) >= MIN_TOKENS
            rows.append(SimilarPair(a, b, set_id, question, ratio, flagged))
    return rows


def similarity_report(
    submissions_dir: str | Path,
    *,
    threshold: float = THRESHOLD,
    force_set: str | None = None,
    student_dir: str | Path | None = None,
) -> list[SimilarPair]:
    """Compare every pair of submissions of the same set, per auto-graded question (see the module docstring).

    Args:
        submissions_dir: folder of submitted notebooks (searched recursively like the grader; never modified).
        threshold: the similarity from which a pair is flagged, in ``(0, 1]``.
        force_set: treat every notebook as this set (``--set``).
        student_dir: folder of the student notebooks, where the templates come from (default: ``exercises/``).
    Returns:
        the pairs, most similar first (then by set, question and names).
    Raises:
        NotADirectoryError, ValueError: a missing folder, a bad threshold or set id, no student notebook for a set.
    """
    submissions_dir = Path(submissions_dir)
    if not submissions_dir.is_dir():
        raise NotADirectoryError(f"submissions_dir must be a directory, got {submissions_dir}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    if force_set is not None:
        if not SET_ID_PATTERN.fullmatch(str(force_set)):
            raise ValueError(f"force_set must look like 'ex04', got {force_set!r}")
        load_set(force_set)  # an unknown set is an error, not an empty report
    rows: list[SimilarPair] = []
    for set_id, submissions in sorted(_read_submissions(submissions_dir, force_set).items()):
        for question, template in question_templates(set_id, student_dir).items():
            answers = [(name, normalise(answer_source(nb, question), template)) for name, nb in submissions]
            rows += _pairs(set_id, question, [(n, t) for n, t in answers if t], threshold)
    rows.sort(key=lambda r: (-r.similarity, r.set_id, r.question, r.a, r.b))
    return rows


def similarity_csv(rows: Iterable[SimilarPair]) -> str:
    """The report as CSV text (similarity with 3 decimals, flagged ``yes``/``no``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r.a, r.b, r.set_id, r.question, f"{r.similarity:.3f}", "yes" if r.flagged else "no"])
    return buffer.getvalue()


def similarity_path(out_csv: str | Path) -> Path:
    """Where ``mmcourse grade --out grades.csv --similarity`` writes the report: ``grades_similarity.csv``."""
    out_csv = Path(out_csv)
    return out_csv.with_name(f"{out_csv.stem}_similarity.csv")


def write_similarity_report(submissions_dir: str | Path, out: str | Path, **options) -> tuple[Path, list[SimilarPair]]:
    """Compute :func:`similarity_report` (``options`` are its keywords) and write it to ``out`` (atomically).

    Raises:
        ValueError: ``out`` inside the submissions folder, or as :func:`similarity_report`.
    """
    from mmcourse.grading.grader import _atomic_write_text

    out = Path(out)
    if out.resolve().is_relative_to(Path(submissions_dir).resolve()):
        raise ValueError("the similarity report must be written outside the submissions folder")
    rows = similarity_report(submissions_dir, **options)
    _atomic_write_text(out, similarity_csv(rows))
    return out, rows
