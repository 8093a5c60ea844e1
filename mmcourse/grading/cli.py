"""Command line of the exercise tools: ``mmcourse grade …`` and ``mmcourse exercises …``.

Registered into ``mmcourse``'s command dispatcher through :func:`add_parser`; this module imports nothing heavy
(the grader's dependencies are imported when a command runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(subparsers) -> None:
    """Register ``grade`` and ``exercises`` on an ``argparse`` subparsers object."""
    _add_grade(subparsers)
    _add_exercises(subparsers)


def _add_grade(subparsers) -> None:
    """``mmcourse grade``."""
    grade = subparsers.add_parser(
        "grade",
        help="grade a folder of submitted exercise notebooks into a gradebook CSV",
        description="Run every submission in a fresh kernel, run public + hidden tests, write a gradebook CSV "
        "(one row per file) and a feedback file per submission. Written questions are exported with their rubric "
        "to <out stem>_written_exNN.md; --manual merges the points a person gave; --similarity also writes "
        "<out stem>_similarity.csv (pairs of similar answers). Exit code 0 only if every submission was graded.",
    )
    grade.add_argument("submissions", type=Path, help="folder of submitted notebooks (searched recursively)")
    grade.add_argument("--out", type=Path, required=True, help="gradebook CSV to write")
    grade.add_argument(
        "--feedback-dir",
        type=Path,
        default=None,
        help="where to write feedback files (default: <out stem>_feedback/ next to the CSV)",
    )
    grade.add_argument("--workers", type=int, default=2, help="submissions graded in parallel (default 2)")
    grade.add_argument(
        "--timeout", type=float, default=120.0, help="seconds for all of a notebook's cells (default 120)"
    )
    grade.add_argument(
        "--grading-timeout", type=float, default=60.0, help="seconds for running the tests of one notebook (default 60)"
    )
    grade.add_argument("--test-timeout", type=float, default=10.0, help="seconds per test (default 10)")
    grade.add_argument(
        "--memory-mb", type=int, default=4096, help="address-space limit per kernel in MiB, 0 for none (default 4096)"
    )
    hidden = grade.add_mutually_exclusive_group()
    hidden.add_argument(
        "--hidden",
        type=Path,
        default=None,
        help="folder of hidden tests (default: exercises/instructor/hidden of this checkout)",
    )
    hidden.add_argument("--public-only", action="store_true", help="grade with the public tests only")
    grade.add_argument(
        "--set",
        dest="force_set",
        default=None,
        help="grade every submission as this set (e.g. ex04) when metadata was lost",
    )
    grade.add_argument(
        "--manual",
        type=Path,
        default=None,
        metavar="SCORES_CSV",
        help="points for written questions: a CSV with the columns submission,question,points "
        "(question = exNN.name), merged into the gradebook",
    )
    grade.add_argument(
        "--masters",
        type=Path,
        default=None,
        help="folder of master notebooks, for the rubrics of written questions "
        "(default: exercises/instructor/masters of this checkout)",
    )
    grade.add_argument(
        "--similarity",
        action="store_true",
        help="also compare every pair of submissions of a set, per question (answers normalised: template, "
        "comments and names removed) and write <out stem>_similarity.csv, similar pairs flagged",
    )
    grade.add_argument(
        "--similarity-threshold",
        type=float,
        default=None,
        metavar="T",
        help="flag pairs at least this similar, in (0, 1] (default 0.9)",
    )
    grade.add_argument("--quiet", action="store_true", help="no progress lines")
    grade.set_defaults(func=_grade)


def _add_exercises(subparsers) -> None:
    """``mmcourse exercises generate | release | list | gradescope | similarity | merge-scores``."""
    exercises = subparsers.add_parser("exercises", help="author and release the exercise notebooks")
    sub = exercises.add_subparsers(dest="exercises_command", required=True)
    gen = sub.add_parser("generate", help="regenerate the student notebooks in exercises/ from the masters")
    gen.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a student notebook is missing or out of date"
    )
    gen.set_defaults(func=_generate)
    rel = sub.add_parser("release", help="build the student edition (no solutions, no hidden tests)")
    rel.add_argument("out_dir", type=Path, help="folder to create (must not exist or be empty, unless --force)")
    rel.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    rel.set_defaults(func=_release)
    lst = sub.add_parser("list", help="list the exercise sets, their questions and points")
    lst.set_defaults(func=_list)
    gs = sub.add_parser(
        "gradescope",
        help="build a Gradescope autograder zip for one set (it holds the HIDDEN TESTS: for your Gradescope "
        "account only)",
        description="Build a Gradescope autograder bundle: setup.sh (installs a wheel of this checkout's course "
        "package, PyTorch CPU and the grader's kernel packages), run_autograder (grades the submitted notebook with "
        "the public and hidden tests into results/results.json), the set's hidden tests and its student notebook. "
        "The zip contains the hidden tests: upload it only as the autograder of an assignment in your Gradescope "
        "account, never give it to students. It contains no master notebook, so no solution or rubric.",
    )
    gs.add_argument("set_id", metavar="SET", help="the exercise set, e.g. ex04")
    gs.add_argument("out", type=Path, metavar="OUT.zip", help="the zip to write")
    gs.add_argument(
        "--hidden",
        type=Path,
        default=None,
        help="folder of hidden tests (default: exercises/instructor/hidden of this checkout)",
    )
    gs.set_defaults(func=_gradescope)
    sim = sub.add_parser(
        "similarity",
        help="report pairs of submissions with similar answers, without grading",
        description="Compare every pair of submissions of the same set, per auto-graded question, after removing "
        "the question's template, comments, docstrings and the names of variables; write a CSV "
        "(a, b, set, question, similarity, flagged), most similar pairs first. Nothing is executed.",
    )
    sim.add_argument("submissions", type=Path, help="folder of submitted notebooks (searched recursively)")
    sim.add_argument("--out", type=Path, required=True, help="the CSV to write")
    sim.add_argument("--set", dest="force_set", default=None, help="treat every notebook as this set (e.g. ex04)")
    sim.add_argument(
        "--threshold", type=float, default=None, help="flag pairs at least this similar, in (0, 1] (default 0.9)"
    )
    sim.set_defaults(func=_similarity)
    merge = sub.add_parser(
        "merge-scores",
        help="merge the points given to written answers into a gradebook, without grading again",
        description="Fill the written-question columns of a gradebook written by `mmcourse grade` from a scores "
        "CSV (columns submission,question,points; question = exNN.name) and update total_with_written. The "
        "auto-graded columns are kept; on a bad score nothing is written. The feedback files are not rewritten "
        "(`mmcourse grade ... --manual scores.csv` grades again and rewrites them).",
    )
    merge.add_argument("gradebook", type=Path, help="the gradebook CSV (grades.csv)")
    merge.add_argument("scores", type=Path, help="the scores CSV")
    merge.add_argument("--out", type=Path, default=None, help="write here instead of replacing the gradebook")
    merge.set_defaults(func=_merge_scores)


def _merge_scores(args: argparse.Namespace) -> int:
    from mmcourse.grading.grader import merge_scores_into_gradebook

    try:
        written = merge_scores_into_gradebook(args.gradebook, args.scores, out=args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged {args.scores} into {written}")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from mmcourse.grading.grader import GradingOptions, default_hidden_dir, default_masters_dir, grade_directory

    if args.similarity_threshold is not None and not args.similarity:
        print("error: --similarity-threshold needs --similarity", file=sys.stderr)
        return 2
    if args.public_only:
        hidden_dir = None
    else:
        hidden_dir = args.hidden if args.hidden is not None else default_hidden_dir()
        if hidden_dir is None or not hidden_dir.is_dir():
            print(
                "error: hidden tests not found; pass --hidden DIR (exercises/instructor/hidden) or --public-only",
                file=sys.stderr,
            )
            return 2
    try:
        options = GradingOptions(
            workers=args.workers,
            timeout=args.timeout,
            grading_timeout=args.grading_timeout,
            test_timeout=args.test_timeout,
            memory_mb=args.memory_mb or None,
            hidden_dir=hidden_dir,
            force_set=args.force_set,
            masters_dir=args.masters if args.masters is not None else default_masters_dir(),
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.similarity:  # cheap (sources only): before the long grading, so that its problems stop the run early
        from mmcourse.grading.similarity import similarity_path

        code = _write_similarity(args.submissions, similarity_path(args.out), args.force_set, args.similarity_threshold)
        if code:
            return code

    def progress(outcome) -> None:
        if not args.quiet:
            score = f"{outcome.points:g}/{outcome.max_points:g}" if outcome.set_id else "-"
            print(f"{outcome.status:15s} {score:>9s}  {outcome.submission}", flush=True)

    try:
        summary = grade_directory(
            args.submissions,
            args.out,
            feedback_dir=args.feedback_dir,
            options=options,
            progress=progress,
            manual_scores=args.manual,
        )
    except (NotADirectoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    graded = sum(o.graded for o in summary.outcomes)
    print(
        f"graded {graded} of {len(summary.outcomes)} submissions in {summary.seconds:.1f} s -> {summary.csv_path} "
        f"(feedback in {summary.feedback_dir})"
    )
    exports = sorted(summary.csv_path.parent.glob(f"{summary.csv_path.stem}_written_ex[0-9][0-9].md"))
    if exports:
        print("written answers to grade by hand: " + ", ".join(str(p) for p in exports))
    return 0 if summary.all_graded else 1


def _write_similarity(submissions: Path, out: Path, force_set: str | None, threshold: float | None) -> int:
    """Write the similarity report to ``out``; the exit code (2 for bad input)."""
    from mmcourse.grading.similarity import THRESHOLD, write_similarity_report

    threshold = THRESHOLD if threshold is None else threshold
    try:
        path, rows = write_similarity_report(submissions, out, threshold=threshold, force_set=force_set)
    except (NotADirectoryError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    flagged = sum(r.flagged for r in rows)
    print(f"similarity: {len(rows)} pairs compared, {flagged} flagged (similarity >= {threshold:g}) -> {path}")
    return 0


def _similarity(args: argparse.Namespace) -> int:
    return _write_similarity(args.submissions, args.out, args.force_set, args.threshold)


def _gradescope(args: argparse.Namespace) -> int:
    from mmcourse.grading.gradescope import build_bundle

    try:
        out = build_bundle(args.set_id, args.out, hidden_dir=args.hidden)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: the Gradescope autograder of {args.set_id}, hidden tests included (upload it only to your")
    print("Gradescope account; add a manually graded question for each written question of the set)")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from mmcourse.grading.authoring import generate

    report = generate(check=args.check)
    for path in report.stale:
        print(f"out of date: {path}")
    for path in report.orphans:
        print(f"no master for: {path}")
    for path in report.written:
        print(f"wrote {path}")
    if args.check:
        print(
            "student notebooks are up to date" if report.ok else "run `mmcourse exercises generate` to regenerate them"
        )
    return 0 if report.ok else 1


def _release(args: argparse.Namespace) -> int:
    from mmcourse.grading.authoring import release

    try:
        out = release(args.out_dir, force=args.force)
    except (FileExistsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"student edition written to {out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from mmcourse.grading.spec import available_sets, load_set

    for set_id in available_sets():
        exercise_set = load_set(set_id)
        print(f"{set_id}  {exercise_set.title}  (chapter {exercise_set.chapter}, version {exercise_set.version})")
        for q in exercise_set:
            total = "" if q.points is None else f" of {q.points:g} (the rest by hidden tests)"
            print(f"    {q.key:40s} {len(q.tests)} public tests, {q.public_points:g} public points{total}")
        for w in getattr(exercise_set, "written", {}).values():
            print(f"    {w.key:40s} written, {w.points:g} points graded by a person")
    return 0
