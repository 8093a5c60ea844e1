"""The instructor's grader: every submitted notebook, in a fresh kernel, public + hidden tests → a gradebook.

``mmcourse grade SUBMISSIONS_DIR --out grades.csv`` calls :func:`grade_directory`, which

1. lists every file under ``SUBMISSIONS_DIR`` (each one is a submission; hidden files are skipped) and reads it
   once — the submissions are never opened for writing;
2. recognises the exercise set from ``metadata.mmcourse.exercise_set`` (stamped into every student notebook), or,
   when a tool stripped the metadata, from the notebook's ``check("exNN...")`` calls — never from the file name;
3. runs its code cells top to bottom in a **fresh kernel** of this Python environment, in a private temporary
   working directory holding a copy of the submission, with a wall-clock budget for the whole notebook (a cell
   still running at the deadline is interrupted and the remaining cells are skipped), an address-space limit
   (``RLIMIT_AS``: a memory bomb gets ``MemoryError`` in its own kernel), one thread, offline, and pip unable to
   download (``PIP_NO_INDEX``);
4. then runs one more cell in the same kernel: the grading harness. Its source (the package's test runner and
   public tests, plus the instructor's hidden tests) was read once by the grader at start-up and is sent as text,
   so nothing the student's code did to ``sys.modules`` or to the files on disk changes it. The result is written
   to a file whose name contains a random nonce known only to that cell;
5. writes a gradebook CSV (one row per submission, always) and a feedback file per submission, each atomically
   (temporary file + ``os.replace``).

Written questions (answered in words, graded by a person) are not run: for each set with written questions the
grader writes ``<csv stem>_written_exNN.md`` next to the CSV — per question its title, points, rubric and model
answer (from the master notebook), then every submission's answer, read from the submitted file itself. The
gradebook has one column per written question, empty until a person's points are merged from a ``scores.csv``
(``submission,question,points``; see :func:`merge_manual_scores`), and ``total_with_written`` /
``max_with_written`` next to the auto-graded ``total`` / ``max``.

Up to ``workers`` submissions are graded at once (one asyncio loop, one kernel per submission).

Threat model, honestly: the grader protects against accidents (crashes, endless loops, ``sys.exit``, huge prints,
memory bombs, deleting files in the working directory), against patching the checker's modules, against printing
or writing a fake result, and against answers that call the library's reference implementation (see
:mod:`mmcourse.grading.runner`). It is *not* a sandbox: student code runs with the instructor's user rights, can
read and write the file system and could, deliberately, patch torch or the interpreter to fool the tests. The
``flags`` column marks code that touches such internals, for a human to review; grade untrusted classes in a
container or a throwaway account.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import importlib.util
import io
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmcourse.grading.authoring import (
    WrittenCell,
    answer_text,
    master_written,
    notebook_set_id,
    written_cells,
)
from mmcourse.grading.results import SetResult, format_points
from mmcourse.grading.spec import (
    SET_ID_PATTERN,
    ExerciseSet,
    HiddenTests,
    WrittenQuestion,
    available_sets,
    load_set,
)

__all__ = [
    "GradingOptions",
    "SubmissionOutcome",
    "GradeSummary",
    "grade_directory",
    "grade_notebook",
    "load_hidden_tests",
    "gradebook_rows",
    "gradebook_csv",
    "read_manual_scores",
    "merge_manual_scores",
    "merge_scores_into_gradebook",
    "written_export",
    "submission_answers",
    "STATUSES",
]

#: Row statuses. The first four mean the tests ran (``graded``), possibly on a notebook that misbehaved.
STATUSES = (
    "ok",  # every cell ran, tests ran
    "cell-error",  # some cell raised (incl. SyntaxError, sys.exit); tests ran on what was defined
    "timeout",  # the notebook exceeded its time budget and was interrupted; tests ran on what was defined
    "memory",  # a cell hit the memory limit (MemoryError); tests ran on what was defined
    "kernel-died",  # the kernel process died (os._exit, crash); no tests
    "not-a-notebook",  # not a readable .ipynb
    "unknown-set",  # a notebook without a recognisable exercise set
    "grader-error",  # the grading harness produced no result (see the message)
)
GRADED_STATUSES = ("ok", "cell-error", "timeout", "memory")

#: Submissions above this size are not read (an exercise notebook is a few hundred KiB at most).
MAX_NOTEBOOK_BYTES = 64 * 2**20
HARNESS_MODULES = ("__init__", "spec", "results", "expect", "runner", "check")
_RESULT_PREFIX = "mmcourse-result-"
_MEMORY_ERRORS = ("MemoryError", "_ArrayMemoryError", "OutOfMemoryError")
_MEMORY_TEXT = ("can't allocate memory", "cannot allocate memory", "not enough memory", "out of memory")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CHECK_CALL = re.compile(r"""check\(\s*["'](ex\d\d)(?:\.\w+)?["']""")
_SKIPPED_NAMES = ("__MACOSX", ".ipynb_checkpoints")

#: Source patterns that deserve a human look (they are not penalised).
SUSPICIOUS = (
    (re.compile(r"mmcourse\.grading(?!\s+import\s+check\b)"), "touches the grader's modules"),
    (re.compile(r"\bsys\.modules\b"), "edits sys.modules"),
    (re.compile(r"\bbuiltins\b"), "touches builtins"),
    (re.compile(r"\.events\.register|input_transformers|ast_transformers"), "hooks into IPython"),
    (re.compile(r"__code__|_getframe|settrace|setprofile|gc\.get_objects"), "uses interpreter internals"),
    (re.compile(r"(torch|F|nn)\.\w+(\.\w+)*\s*=[^=]"), "assigns to a torch attribute"),
    (re.compile(r"mmcourse-result|__mmcourse"), "mentions the grader's result marker"),
)


# ----------------------------------------------------------------------------------------------------------------
# Options, outcomes
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class GradingOptions:
    """How to grade (the CLI's flags).

    Attributes:
        workers: submissions graded at the same time (one kernel each).
        timeout: seconds for all of a notebook's own cells together.
        grading_timeout: seconds for the grading cell (all tests of the set).
        test_timeout: seconds per test inside the grading cell.
        memory_mb: address-space limit of each kernel in MiB (``None``: no limit). torch alone maps ~1.5 GiB.
        hidden_dir: directory of hidden-test modules ``exNN.py``; ``None`` grades with public tests only.
        force_set: grade every submission as this set (for notebooks whose metadata was lost).
        startup_timeout: seconds to wait for a kernel to start.
        masters_dir: directory of master notebooks ``exNN_*.ipynb``, where the written questions' rubrics and
            model answers come from; ``None``: the export of written answers goes without them.
    """

    workers: int = 2
    timeout: float = 120.0
    grading_timeout: float = 60.0
    test_timeout: float = 10.0
    memory_mb: int | None = 4096
    hidden_dir: Path | None = None
    force_set: str | None = None
    startup_timeout: float = 60.0
    masters_dir: Path | None = None

    def __post_init__(self):
        for name in ("timeout", "grading_timeout", "test_timeout", "startup_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a positive int, got {self.workers!r}")
        if self.memory_mb is not None and (
            isinstance(self.memory_mb, bool) or not isinstance(self.memory_mb, int) or self.memory_mb < 256
        ):
            raise ValueError(f"memory_mb must be an int >= 256 (MiB) or None, got {self.memory_mb!r}")
        if self.force_set is not None and not SET_ID_PATTERN.fullmatch(str(self.force_set)):
            raise ValueError(f"force_set must look like 'ex04', got {self.force_set!r}")


@dataclass
class SubmissionOutcome:
    """One gradebook row: what happened to one submitted file."""

    submission: str
    status: str
    set_id: str | None = None
    result: SetResult | None = None
    max_points: float = 0.0
    message: str = ""
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    version: int | None = None
    #: written question name -> the submitted answer (None: no answer cell, or still ``YOUR ANSWER HERE``)
    answers: dict[str, str | None] = field(default_factory=dict)
    #: written question name -> how the answer was found, when not by its cell metadata
    answer_notes: dict[str, str] = field(default_factory=dict)
    #: written question name -> points a person gave (merged from a scores.csv)
    written_scores: dict[str, float] = field(default_factory=dict)

    @property
    def graded(self) -> bool:
        return self.result is not None

    @property
    def points(self) -> float:
        return self.result.points if self.result is not None else 0.0


@dataclass
class GradeSummary:
    """What :func:`grade_directory` produced."""

    outcomes: list[SubmissionOutcome]
    csv_path: Path
    feedback_dir: Path
    seconds: float

    @property
    def all_graded(self) -> bool:
        return all(o.graded for o in self.outcomes)


# ----------------------------------------------------------------------------------------------------------------
# Sources sent to the grading kernel
# ----------------------------------------------------------------------------------------------------------------
def _harness_sources() -> dict[str, tuple[str, bool]]:
    """Module name → (source, is_package) for the test runner and the public tests, read from this package."""
    base = Path(__file__).resolve().parent
    sources: dict[str, tuple[str, bool]] = {}
    for name in HARNESS_MODULES:
        module = "mmcourse.grading" if name == "__init__" else f"mmcourse.grading.{name}"
        sources[module] = ((base / f"{name}.py").read_text(encoding="utf-8"), name == "__init__")
    sources["mmcourse.grading.public"] = ((base / "public" / "__init__.py").read_text(encoding="utf-8"), True)
    for set_id in available_sets():
        text = (base / "public" / f"{set_id}.py").read_text(encoding="utf-8")
        sources[f"mmcourse.grading.public.{set_id}"] = (text, False)
    return sources


def load_hidden_tests(hidden_dir: Path, set_id: str) -> tuple[HiddenTests, str] | None:
    """``(HIDDEN, source)`` from ``hidden_dir/<set_id>.py``, validated against the set; None if there is none."""
    path = Path(hidden_dir) / f"{set_id}.py"
    if not path.is_file():
        return None
    source = path.read_text(encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"mmcourse_hidden_{set_id}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ValueError(f"the hidden tests {path} do not load: {type(exc).__name__}: {exc}") from exc
    hidden = getattr(module, "HIDDEN", None)
    if not isinstance(hidden, HiddenTests) or hidden.set_id != set_id:
        raise ValueError(f"{path} must define HIDDEN = HiddenTests({set_id!r})")
    hidden.check_against(load_set(set_id))
    return hidden, source


_GRADING_CELL = r"""
def __mmcourse_grade():
    import importlib, importlib.abc, importlib.util, json, os, sys, traceback, types
    config = json.loads({config!r})
    sources = config["sources"]
    payload = {{"nonce": config["nonce"], "python": sys.executable, "prefix": sys.prefix}}
    try:
        class SourceFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            def find_spec(self, name, path=None, target=None):
                if name in sources:
                    return importlib.util.spec_from_loader(name, self, is_package=sources[name][1])
                return None

            def create_module(self, spec):
                return None

            def exec_module(self, module):
                text, is_package = sources[module.__name__]
                if is_package:
                    module.__path__ = []
                exec(compile(text, "<mmcourse-grader " + module.__name__ + ">", "exec"), module.__dict__)

        for name in [n for n in sys.modules if n == "mmcourse.grading" or n.startswith("mmcourse.grading.")]:
            del sys.modules[name]
        sys.meta_path.insert(0, SourceFinder())
        runner = importlib.import_module("mmcourse.grading.runner")
        exercise_set = importlib.import_module("mmcourse.grading.public." + config["set_id"]).SET
        hidden = None
        if config["hidden"] is not None:
            module = types.ModuleType("mmcourse_hidden_" + config["set_id"])
            exec(compile(config["hidden"], "<mmcourse-grader hidden tests>", "exec"), module.__dict__)
            hidden = module.HIDDEN
        result = runner.run_set(exercise_set, globals(), hidden, time_limit=config["test_timeout"],
                                capture_output=True)
        payload["result"] = result.to_dict()
    except BaseException:
        payload["error"] = traceback.format_exc()[-4000:]
    path = config["result_path"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(json.dumps(payload))
    os.replace(path + ".tmp", path)


__mmcourse_grade()
del __mmcourse_grade
"""


def grading_cell_source(
    set_id: str, sources: dict, hidden_source: str | None, *, nonce: str, result_path: str, test_timeout: float
) -> str:
    """The source of the grading cell run after the student's cells."""
    config = {
        "set_id": set_id,
        "sources": sources,
        "hidden": hidden_source,
        "nonce": nonce,
        "result_path": result_path,
        "test_timeout": test_timeout,
    }
    return _GRADING_CELL.format(config=json.dumps(config))


# ----------------------------------------------------------------------------------------------------------------
# Reading submissions
# ----------------------------------------------------------------------------------------------------------------
def find_submissions(directory: Path) -> list[Path]:
    """Every file (or symbolic link) under ``directory``, recursively, minus hidden files and checkpoint folders."""
    found = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).parts
        if any(p.startswith(".") or p in _SKIPPED_NAMES for p in rel):
            continue
        if path.is_symlink() or path.is_file():
            found.append(path)
    return found


def _parse_notebook(data: bytes):
    """The notebook in ``data`` (any nbformat 4 minor), or None if it is not one."""
    import nbformat

    try:
        text = data.decode("utf-8")
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or raw.get("nbformat") != 4:
            return None
        nb = nbformat.reads(text, as_version=4)
        if not isinstance(nb.get("metadata"), dict):
            return None
        for cell in nb.cells:
            if cell.get("cell_type") not in ("code", "markdown", "raw") or not isinstance(cell.get("source"), str):
                return None
        return nb
    except Exception:  # noqa: BLE001 - anything unreadable is "not a notebook"
        return None


def _detect_set(nb, force_set: str | None) -> str | None:
    if force_set:
        return force_set
    set_id = notebook_set_id(nb)
    if set_id:
        return set_id
    found = {m for cell in nb.cells if cell.cell_type == "code" for m in _CHECK_CALL.findall(cell.source)}
    return found.pop() if len(found) == 1 else None


def _flags(nb) -> list[str]:
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    return [label for pattern, label in SUSPICIOUS if pattern.search(code)]


# ----------------------------------------------------------------------------------------------------------------
# Running one notebook
# ----------------------------------------------------------------------------------------------------------------
def _kernel_manager():
    """An async kernel manager whose Python kernel is *this* interpreter, whatever kernelspecs are installed."""
    import ipykernel.kernelspec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return self.kernel_spec_class(
                resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict()
            )

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())


def _kernel_env() -> dict[str, str]:
    from mmcourse.dev.notebooks import reference_env

    env = reference_env()  # the same kernels on every grading machine: one submission, one score
    env.update({"MALLOC_ARENA_MAX": "2", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    env.pop("JPY_PARENT_PID", None)
    return env


def _memory_limiter(memory_mb: int | None) -> Callable[[], None] | None:
    if memory_mb is None:
        return None
    limit = int(memory_mb) * 2**20

    def apply() -> None:  # runs in the kernel process between fork and exec
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _make_client_class():
    from nbclient import NotebookClient

    class GradingClient(NotebookClient):
        """Keeps only error outputs (truncated): printed output is never needed and may be huge."""

        def output(self, outs, msg, display_id, cell_index):
            if msg["msg_type"] != "error":
                return None
            import nbformat

            content = msg["content"]
            tb = [_ANSI.sub("", line)[-500:] for line in content.get("traceback", [])[-8:]]
            out = nbformat.v4.new_output(
                "error",
                ename=str(content.get("ename", ""))[:200],
                evalue=str(content.get("evalue", ""))[:1000],
                traceback=tb,
            )
            outs.append(out)
            return out

    return GradingClient


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= 60 else line[:57] + "..."
    return ""


def _error_notes(cell, label: str, status: str, notes: list[str]) -> str:
    """Record the errors of an executed student cell; return the updated status."""
    for err in (o for o in cell.outputs if o.output_type == "error"):
        evalue = " ".join(str(err.evalue).split())[:300]
        notes.append(f"{label} raised {err.ename}: {evalue}")
        if err.ename in _MEMORY_ERRORS or any(t in evalue.lower() for t in _MEMORY_TEXT):
            status = "memory"
        elif status == "ok":
            status = "cell-error"
    return status


async def _execute_student_cells(client, cells, deadline: float, options: GradingOptions, outcome) -> str | None:
    """Run the student's cells until the deadline; return the status, or None if the kernel died."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    replies: list[dict] = []
    client.on_cell_executed = lambda cell, cell_index, execute_reply: replies.append(execute_reply or {})
    status = "ok"
    for index, cell in enumerate(cells):
        label = f"code cell {index + 1} (`{_first_line(cell.source)}`)"
        if time.monotonic() >= deadline:
            outcome.notes.append(
                f"the notebook ran out of time ({options.timeout:g} s) before {label}; it and later cells were skipped"
            )
            return "timeout"
        replies.clear()
        try:
            await client.async_execute_cell(cell, index, execution_count=index + 1)
        except DeadKernelError:
            outcome.status, outcome.message = "kernel-died", f"the kernel died in {label}"
            return None
        except CellTimeoutError:
            replies.append({"content": {"ename": "CellTimeoutError"}})
        if any(r.get("content", {}).get("ename") == "CellTimeoutError" for r in replies):
            outcome.notes.append(
                f"{label} was still running at the time limit ({options.timeout:g} s) "
                "and was interrupted; later cells were skipped"
            )
            return "timeout"
        status = _error_notes(cell, label, status, outcome.notes)
    return status


def _read_result(result_path: str, nonce: str, grading_cell, status: str, outcome: SubmissionOutcome) -> None:
    """Fill ``outcome`` from the grading cell's result file (checked against the nonce)."""
    try:
        payload = json.loads(Path(result_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        payload = None
    if not isinstance(payload, dict) or payload.get("nonce") != nonce:
        outcome.status = "timeout" if status == "timeout" else "grader-error"
        errors = [o for o in grading_cell.outputs if o.output_type == "error"]
        why = f"{errors[0].ename}: {errors[0].evalue}" if errors else "no result"
        outcome.message = f"the tests could not run ({why[:300]})"
    elif "error" in payload:
        outcome.status = "grader-error"
        outcome.message = "the grading harness failed: " + payload["error"].strip().splitlines()[-1][:300]
    else:
        outcome.result = SetResult.from_dict(payload["result"])
        outcome.status = status
        if payload.get("prefix") != sys.prefix:
            outcome.notes.append(f"the kernel ran {payload.get('python')}, not the grader's Python ({sys.executable})")


async def _shutdown(client, process) -> None:
    """Stop the kernel: politely through the client, then by killing its process group."""
    try:
        if client is not None and client.km is not None:
            await asyncio.wait_for(client._async_cleanup_kernel(), 20)
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - the kill below is the fallback
        pass
    finally:
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                process.kill()


async def _run_notebook(
    nb,
    set_id: str,
    hidden_source: str | None,
    sources: dict,
    options: GradingOptions,
    outcome: SubmissionOutcome,
    data: bytes,
) -> None:
    """Execute ``nb``'s code cells, then the grading cell, in a fresh kernel; fill ``outcome``."""
    import nbformat
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    workdir = Path(tempfile.mkdtemp(prefix="mmcourse-grade-"))
    client = process = None
    try:
        (workdir / "submission.ipynb").write_bytes(data)
        nonce = secrets.token_hex(16)
        result_path = str(workdir / f"{_RESULT_PREFIX}{nonce}.json")
        cells = [nbformat.v4.new_code_cell(c.source) for c in nb.cells if c.cell_type == "code" and c.source.strip()]
        grading = nbformat.v4.new_code_cell(
            grading_cell_source(
                set_id, sources, hidden_source, nonce=nonce, result_path=result_path, test_timeout=options.test_timeout
            )
        )
        deadline = time.monotonic() + options.timeout
        client = _make_client_class()(
            nbformat.v4.new_notebook(cells=[*cells, grading]),
            km=_kernel_manager(),
            timeout_func=lambda cell: max(1, int(deadline - time.monotonic() + 0.999)),
            interrupt_on_timeout=True,
            error_on_timeout={"ename": "CellTimeoutError", "evalue": "out of time", "traceback": []},
            allow_errors=True,
            startup_timeout=int(options.startup_timeout),
            iopub_timeout=10,
            record_timing=False,
            shutdown_kernel="immediate",
        )
        await client.async_start_new_kernel(
            cwd=str(workdir),
            env=_kernel_env(),
            preexec_fn=_memory_limiter(options.memory_mb),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = getattr(client.km.provisioner, "process", None)
        await client.async_start_new_kernel_client()
        status = await _execute_student_cells(client, cells, deadline, options, outcome)
        if status is None:
            return
        deadline = time.monotonic() + options.grading_timeout  # timeout_func reads the new deadline
        try:
            await client.async_execute_cell(grading, len(cells))
        except DeadKernelError:
            outcome.status = "kernel-died"
            outcome.message = "the kernel died while the tests ran (memory limit, or os._exit in a tested function?)"
            return
        except CellTimeoutError:
            pass
        _read_result(result_path, nonce, grading, status, outcome)
    finally:
        await _shutdown(client, process)
        shutil.rmtree(workdir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# Grading a directory
# ----------------------------------------------------------------------------------------------------------------
class _Context:
    """What every submission needs, prepared once: sets, hidden tests, harness sources."""

    def __init__(self, options: GradingOptions):
        self.options = options
        self.sources = _harness_sources()
        self.sets: dict[str, ExerciseSet] = {}
        self.hidden: dict[str, tuple[HiddenTests, str] | None] = {}
        self.masters: dict[str, tuple[dict[str, tuple[WrittenCell, str | None]], str]] = {}

    def master(self, set_id: str) -> tuple[dict[str, tuple[WrittenCell, str | None]], str]:
        """``({name: (WrittenCell, heading)}, problem)`` of the set's master; ``problem`` says why it is empty."""
        if set_id not in self.masters:
            self.masters[set_id] = _load_master(self.options.masters_dir, set_id)
        return self.masters[set_id]

    def exercise_set(self, set_id: str) -> ExerciseSet | None:
        if set_id not in self.sets:
            if set_id not in available_sets():
                return None
            hidden_dir = self.options.hidden_dir  # loaded first: a broken hidden file fails every time, loudly
            self.hidden[set_id] = load_hidden_tests(hidden_dir, set_id) if hidden_dir is not None else None
            self.sets[set_id] = load_set(set_id)
        return self.sets[set_id]

    def max_points(self, set_id: str) -> float:
        hidden = self.hidden.get(set_id)
        return self.sets[set_id].max_points(hidden[0] if hidden else None)


def _load_master(masters_dir: Path | None, set_id: str) -> tuple[dict[str, tuple[WrittenCell, str | None]], str]:
    if masters_dir is None:
        return {}, "no masters folder was given"
    paths = sorted(Path(masters_dir).glob(f"{set_id}_*.ipynb"))
    if len(paths) != 1:
        return {}, f"{len(paths)} master notebooks {set_id}_*.ipynb in {masters_dir}"
    try:
        import nbformat

        return master_written(nbformat.read(str(paths[0]), as_version=4), where=paths[0].name), ""
    except Exception as exc:  # noqa: BLE001 - grading goes on; the export says what is missing
        return {}, f"{paths[0].name} could not be read: {type(exc).__name__}: {exc}"


def submission_answers(
    nb, questions, master: dict[str, tuple[WrittenCell, str | None]] | None = None
) -> tuple[dict[str, str | None], dict[str, str]]:
    """``(answers, notes)`` of a submitted notebook: ``{name: text or None}`` for each written question.

    The answer cell is the markdown cell whose metadata names the question. Only if *no* cell of the notebook
    carries such metadata (a tool dropped all cell metadata) and the master is known, the markdown cell right
    after the question's heading (the master's cell before the answer cell, as the student got it) is taken
    instead — unless it is another question's heading — and ``notes`` says so. A cell still holding only
    ``YOUR ANSWER HERE`` (and the prompt around it) is no answer.
    """
    master = master or {}
    found = written_cells(nb)
    headings = {h.strip() for _, h in master.values() if h and h.strip()}
    answers: dict[str, str | None] = {}
    notes: dict[str, str] = {}
    for name in questions:
        parsed, heading = master.get(name, (None, None))
        template = parsed.student if parsed is not None else None
        cells = found.get(name, [])
        if not found and heading and heading.strip():
            for cell, after in zip(nb.cells, nb.cells[1:]):
                if (
                    cell.source.strip() == heading.strip()
                    and after.cell_type == "markdown"
                    and after.source.strip() not in headings
                ):
                    cells = [after]
                    notes[name] = "no cell carried answer metadata: taken from the cell after the question's heading"
                    break
        texts = [t for t in (answer_text(c.source, template) for c in cells) if t is not None]
        answers[name] = "\n\n".join(texts) if texts else None
    return answers, notes


async def _grade_file(path: Path, rel: str, ctx: _Context, semaphore: asyncio.Semaphore) -> SubmissionOutcome:
    outcome = SubmissionOutcome(rel, "grader-error")
    try:
        job = _prepare(path, ctx, outcome)
    except Exception as exc:  # noqa: BLE001 - one submission's failure must not stop the others
        outcome.status, outcome.message = "grader-error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return outcome
    if job is None:
        return outcome
    nb, set_id, hidden_source, data = job
    hard_limit = ctx.options.timeout + ctx.options.grading_timeout + ctx.options.startup_timeout + 60
    async with semaphore:
        try:
            await asyncio.wait_for(
                _run_notebook(nb, set_id, hidden_source, ctx.sources, ctx.options, outcome, data), hard_limit
            )
        except asyncio.TimeoutError:
            outcome.status, outcome.result = "timeout", None
            outcome.message = f"grading did not finish within {hard_limit:g} s"
        except Exception as exc:  # noqa: BLE001 - one submission's failure must not stop the others
            outcome.status, outcome.result = "grader-error", None
            outcome.message = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    if outcome.result is not None:
        outcome.max_points = outcome.result.max_points
    return outcome


def _prepare(path: Path, ctx: _Context, outcome: SubmissionOutcome):
    """Read and identify one submission: ``(nb, set_id, hidden_source, data)``, or None (``outcome`` says why)."""
    if path.is_symlink():
        outcome.status, outcome.message = "not-a-notebook", "a symbolic link (not followed)"
        return None
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        outcome.status = "not-a-notebook"
        outcome.message = f"larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB: not an exercise notebook"
        return None
    data = path.read_bytes()
    nb = _parse_notebook(data)
    if nb is None:
        outcome.status, outcome.message = "not-a-notebook", "not a Jupyter notebook (.ipynb, nbformat 4)"
        return None
    outcome.flags = _flags(nb)
    set_id = _detect_set(nb, ctx.options.force_set)
    exercise_set = ctx.exercise_set(set_id) if set_id else None
    if exercise_set is None:
        outcome.status = "unknown-set"
        outcome.message = (
            f"unknown exercise set {set_id!r}" if set_id else "no metadata.mmcourse.exercise_set and no check() calls"
        )
        return None
    outcome.set_id, outcome.max_points = set_id, ctx.max_points(set_id)
    written = getattr(exercise_set, "written", {})
    if written:
        outcome.answers, outcome.answer_notes = submission_answers(nb, written, ctx.master(set_id)[0])
    meta = nb.metadata.get("mmcourse")
    outcome.version = meta.get("version") if isinstance(meta, dict) else None
    if outcome.version not in (None, exercise_set.version):
        outcome.notes.append(f"notebook version {outcome.version}, current set version {exercise_set.version}")
    hidden = ctx.hidden.get(set_id)
    if hidden is None:
        outcome.notes.append("graded with the public tests only (no hidden tests for this set)")
    return nb, set_id, (hidden[1] if hidden else None), data


def _question_columns(outcomes: Sequence[SubmissionOutcome], ctx: _Context) -> list[tuple[str, str]]:
    columns = []
    for set_id in sorted({o.set_id for o in outcomes if o.set_id}):
        columns += [(set_id, q.name) for q in ctx.sets[set_id]]
    return columns


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


GRADEBOOK_HEAD = ("submission", "set", "status", "graded")
GRADEBOOK_TAIL = ("total", "max", "percent", "total_with_written", "max_with_written", "flags", "message")


def _written_columns(outcomes: Sequence[SubmissionOutcome], ctx: _Context) -> list[WrittenQuestion]:
    columns = []
    for set_id in sorted({o.set_id for o in outcomes if o.set_id}):
        columns += list(getattr(ctx.sets[set_id], "written", {}).values())
    return columns


def _fill_written_totals(row: dict[str, str], questions: Sequence[WrittenQuestion]) -> None:
    """``total_with_written`` (empty until every written question of the row has points) and ``max_with_written``."""
    if not questions:
        row["total_with_written"], row["max_with_written"] = row["total"], row["max"]
        return
    scores = [row.get(q.key, "") for q in questions]
    written_max = sum(q.points for q in questions)
    row["max_with_written"] = format_points(float(row["max"] or 0) + written_max)
    if all(score != "" for score in scores):
        row["total_with_written"] = format_points(float(row["total"] or 0) + sum(float(x) for x in scores))
    else:
        row["total_with_written"] = ""


def gradebook_rows(
    outcomes: Sequence[SubmissionOutcome],
    columns: Sequence[tuple[str, str]],
    written: Sequence[WrittenQuestion] = (),
) -> list[dict[str, str]]:
    """The gradebook, one dict per outcome (keys in column order; see :data:`GRADEBOOK_TAIL`).

    ``columns`` are the auto-graded ``(set, question)`` columns, ``written`` the written questions (one column
    each, ``exNN.name``: the points a person gave, empty until merged).
    """
    rows = []
    for o in outcomes:
        row = {
            "submission": o.submission,
            "set": o.set_id or "",
            "status": o.status,
            "graded": "yes" if o.graded else "no",
        }
        for set_id, name in columns:
            if o.set_id != set_id:
                row[f"{set_id}.{name}"] = ""
            elif o.result is not None:
                row[f"{set_id}.{name}"] = format_points(o.result[name].points)
            else:
                row[f"{set_id}.{name}"] = "0"
        for q in written:
            score = o.written_scores.get(q.name) if o.set_id == q.set_id else None
            row[q.key] = format_points(score) if score is not None else ""
        row["total"] = format_points(o.points)
        row["max"] = format_points(o.max_points)
        row["percent"] = f"{100 * o.points / o.max_points:.1f}" if o.max_points else ""
        _fill_written_totals(row, [q for q in written if q.set_id == o.set_id])
        row["flags"] = "; ".join(o.flags)
        row["message"] = o.message
        rows.append(row)
    return rows


def _rows_csv(rows: Sequence[dict[str, str]], header: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(name, "") for name in header])
    return buffer.getvalue()


def gradebook_csv(
    outcomes: Sequence[SubmissionOutcome],
    columns: Sequence[tuple[str, str]],
    written: Sequence[WrittenQuestion] = (),
) -> str:
    """The gradebook as CSV text: one row per outcome."""
    header = [*GRADEBOOK_HEAD, *(f"{s}.{q}" for s, q in columns), *(q.key for q in written), *GRADEBOOK_TAIL]
    return _rows_csv(gradebook_rows(outcomes, columns, written), header)


# ----------------------------------------------------------------------------------------------------------------
# Manual scores of written questions
# ----------------------------------------------------------------------------------------------------------------
MANUAL_COLUMNS = ("submission", "question", "points")


def _set_lookup(sets: Mapping[str, ExerciseSet] | None) -> Callable[[str], ExerciseSet | None]:
    def lookup(set_id: str) -> ExerciseSet | None:
        if sets is not None:
            return sets.get(set_id)
        return load_set(set_id) if set_id in available_sets() else None

    return lookup


def read_manual_scores(
    scores_path: str | Path,
    *,
    sets: Mapping[str, ExerciseSet] | None = None,
    submissions: Iterable[str] | None = None,
) -> dict[tuple[str, str], float]:
    """``{(submission, "exNN.name"): points}`` from a ``scores.csv``, checked.

    The file has the columns ``submission,question,points`` (others, e.g. a comment, are ignored): ``submission``
    as in the gradebook's first column, ``question`` a written question ``exNN.name``, ``points`` between 0 and
    the question's points. A row whose ``points`` is empty is skipped (not graded yet).

    Args:
        sets: the exercise sets by id (default: the sets shipped with the package).
        submissions: the known submissions; when given, any other name is an error.
    Raises:
        ValueError: a missing file or column, an unknown submission or question, points that are not a number or
            outside ``[0, max]``, or the same (submission, question) twice — naming the line.
    """
    path = Path(scores_path)
    lookup = _set_lookup(sets)
    known = set(submissions) if submissions is not None else None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the manual scores {path}: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [(name or "").strip() for name in (reader.fieldnames or [])]
    missing = [c for c in MANUAL_COLUMNS if c not in header]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; the header must be {','.join(MANUAL_COLUMNS)}"
        )
    reader.fieldnames = header
    scores: dict[tuple[str, str], float] = {}
    lines: dict[tuple[str, str], int] = {}
    for row in reader:
        line = reader.line_num
        submission = (row.get("submission") or "").strip()
        key = (row.get("question") or "").strip()
        raw = (row.get("points") or "").strip()
        where = f"{path} line {line}"
        if known is not None and submission not in known:
            raise ValueError(f"{where}: unknown submission {submission!r} (not a submission of this gradebook)")
        set_id, _, name = key.partition(".")
        exercise_set = lookup(set_id) if SET_ID_PATTERN.fullmatch(set_id) else None
        question = getattr(exercise_set, "written", {}).get(name) if exercise_set is not None else None
        if question is None:
            why = (
                "an auto-graded question, not a written one"
                if exercise_set is not None and name in exercise_set.questions
                else "not a written question of any exercise set"
            )
            raise ValueError(f"{where}: unknown question {key!r} ({why}; write it as exNN.name)")
        if (submission, key) in lines:
            raise ValueError(
                f"{where}: duplicate row for {submission!r}, {key} (already on line {lines[submission, key]})"
            )
        lines[submission, key] = line
        if not raw:
            continue
        try:
            points = float(raw)
        except ValueError:
            raise ValueError(f"{where}: points must be a number, got {raw!r}") from None
        if not math.isfinite(points) or points < 0 or points > question.points:
            raise ValueError(
                f"{where}: points for {key} must be between 0 and {format_points(question.points)}, got {raw}"
            )
        scores[submission, key] = points
    return scores


def merge_manual_scores(
    gradebook_rows: Sequence[dict[str, str]],
    scores_path: str | Path,
    *,
    sets: Mapping[str, ExerciseSet] | None = None,
) -> list[dict[str, str]]:
    """The gradebook rows with the points of ``scores_path`` (see :func:`read_manual_scores`) merged in.

    Each score fills its ``exNN.name`` column; ``total_with_written`` becomes ``total`` plus the written points
    once every written question of the row's set has points, and ``max_with_written`` the maximum with them. The
    rows given are not modified.

    Raises:
        ValueError: as :func:`read_manual_scores`, and for a score of a question that is not in the
            submission's exercise set.
    """
    rows = [dict(row) for row in gradebook_rows]
    by_name = {row["submission"]: row for row in rows}
    lookup = _set_lookup(sets)
    scores = read_manual_scores(scores_path, sets=sets, submissions=by_name)
    for (submission, key), points in scores.items():
        row = by_name[submission]
        if row.get("set") != key.partition(".")[0]:
            raise ValueError(
                f"{scores_path}: {key} is not a question of {submission!r} "
                f"(its exercise set is {row.get('set') or 'unknown'})"
            )
        row[key] = format_points(points)
    for row in rows:
        exercise_set = lookup(row["set"]) if row.get("set") else None
        questions = list(getattr(exercise_set, "written", {}).values()) if exercise_set is not None else []
        for q in questions:
            row.setdefault(q.key, "")
        if "total" in row and "max" in row:
            _fill_written_totals(row, questions)
    return rows


def merge_scores_into_gradebook(
    gradebook: str | Path,
    scores_path: str | Path,
    *,
    out: str | Path | None = None,
    sets: Mapping[str, ExerciseSet] | None = None,
) -> Path:
    """Merge the points of ``scores_path`` into a gradebook CSV written by :func:`grade_directory`, without
    grading again (``mmcourse exercises merge-scores``); return the path written.

    The auto-graded columns are kept as they are; each score fills its ``exNN.name`` column and the
    ``*_with_written`` totals follow (see :func:`merge_manual_scores`). A score already in the gradebook and absent
    from ``scores_path`` stays. ``out`` defaults to ``gradebook`` itself, replaced in one step once everything is
    checked: on a bad score nothing is written. The feedback files are not rewritten (grading again with
    ``--manual`` does that).

    Raises:
        ValueError: an unreadable gradebook or one without the gradebook's columns, and as
            :func:`merge_manual_scores`.
    """
    path = Path(gradebook)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the gradebook {path}: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    missing = [c for c in (*GRADEBOOK_HEAD, *GRADEBOOK_TAIL) if c not in header]
    if missing:
        raise ValueError(f"{path} is not a gradebook of `mmcourse grade`: no column(s) {', '.join(missing)}")
    rows = merge_manual_scores(list(reader), scores_path, sets=sets)
    new_columns = sorted({key for row in rows for key in row if key not in header})
    cut = header.index(GRADEBOOK_TAIL[0])
    header = [*header[:cut], *new_columns, *header[cut:]]
    target = Path(out) if out is not None else path
    _atomic_write_text(target, _rows_csv(rows, header))
    return target


def _apply_scores(outcomes: Sequence[SubmissionOutcome], rows: Sequence[dict[str, str]], ctx: _Context) -> None:
    """Copy merged written points back into the outcomes (for the feedback files)."""
    by_name = {row["submission"]: row for row in rows}
    for o in outcomes:
        if o.set_id and o.set_id in ctx.sets:
            for q in getattr(ctx.sets[o.set_id], "written", {}).values():
                value = by_name.get(o.submission, {}).get(q.key, "")
                if value != "":
                    o.written_scores[q.name] = float(value)


# ----------------------------------------------------------------------------------------------------------------
# Export of written answers
# ----------------------------------------------------------------------------------------------------------------
def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line.strip() else ">" for line in text.strip().split("\n"))


def written_export(
    exercise_set: ExerciseSet,
    outcomes: Sequence[SubmissionOutcome],
    master: dict[str, tuple[WrittenCell, str | None]] | None = None,
    master_problem: str = "",
) -> str:
    """Markdown for the person grading the written questions of ``exercise_set``: per question its title,
    points, rubric and model answer (from the master), then each submission's answer (``(no answer)`` when the
    cell is missing or still ``YOUR ANSWER HERE``), quoted."""
    master = master or {}
    mine = [o for o in outcomes if o.set_id == exercise_set.id]
    lines = [
        f"# {exercise_set.id} — {exercise_set.title}: written answers",
        "",
        f"{len(mine)} submission(s). Give each answer its points in a scores.csv with the columns "
        "`submission,question,points` (question = `exNN.name`), then run "
        "`mmcourse exercises merge-scores grades.csv scores.csv` (or grade again with `--manual scores.csv`).",
    ]
    if master_problem:
        lines += ["", f"**No rubric or model answer: {master_problem}.**"]
    for q in exercise_set.written.values():
        parsed = master.get(q.name, (None, None))[0]
        lines += ["", f"## {q.key} — {q.title} ({format_points(q.points)} points)", "", "### Rubric", ""]
        lines.append(parsed.rubric if parsed is not None and parsed.rubric else "(not found in the master)")
        lines += ["", "### Model answer", ""]
        lines.append(parsed.answer if parsed is not None and parsed.answer else "(not found in the master)")
        lines += ["", "### Answers"]
        for o in mine:
            answer = o.answers.get(q.name)
            lines += ["", f"#### {o.submission}", ""]
            if q.name in o.answer_notes:
                lines += [f"*({o.answer_notes[q.name]})*", ""]
            lines.append(_quote(answer) if answer else "(no answer)")
    return "\n".join(lines) + "\n"


def _written_export_path(out_csv: Path, set_id: str) -> Path:
    return out_csv.with_name(f"{out_csv.stem}_written_{set_id}.md")


def feedback_text(outcome: SubmissionOutcome) -> str:
    """The feedback file of one submission."""
    lines = [
        f"Submission:   {outcome.submission}",
        f"Exercise set: {outcome.set_id or '-'}" + (f" (version {outcome.version})" if outcome.version else ""),
        f"Status:       {outcome.status}",
        f"Score:        {format_points(outcome.points)}/{format_points(outcome.max_points)}",
    ]
    if outcome.message:
        lines.append(f"Message:      {outcome.message}")
    if outcome.notes:
        lines += ["", "While running your notebook:"] + [f"  - {n}" for n in outcome.notes]
    if outcome.result is not None:
        lines += ["", outcome.result.report(show_hints=True)]
    elif outcome.set_id:
        lines += ["", "No tests could run, so every question scores 0."]
    if outcome.answers:
        lines += ["", "Written questions (graded by a person, not part of the score above):"]
        for name, answer in outcome.answers.items():
            score = outcome.written_scores.get(name)
            graded = f"{format_points(score)} points" if score is not None else "not graded yet"
            lines.append(f"  - {outcome.set_id}.{name}: {'answered' if answer else 'no answer'} ({graded})")
    return "\n".join(lines) + "\n"


def _feedback_name(rel: str) -> str:
    return re.sub(r"[^\w.\- ()]", "_", rel.replace("/", "__")) + ".txt"


def grade_directory(
    submissions_dir: str | Path,
    out_csv: str | Path,
    *,
    feedback_dir: str | Path | None = None,
    options: GradingOptions | None = None,
    progress: Callable[[SubmissionOutcome], None] | None = None,
    manual_scores: str | Path | None = None,
) -> GradeSummary:
    """Grade every file under ``submissions_dir``; write ``out_csv`` and one feedback file per submission.

    Args:
        submissions_dir: folder of submitted notebooks (searched recursively; never modified).
        out_csv: the gradebook to write (atomically).
        feedback_dir: where feedback files go (default: ``<out_csv stem>_feedback/`` beside the CSV).
        options: :class:`GradingOptions`.
        progress: called with each outcome as it completes.
        manual_scores: a ``scores.csv`` of points for written questions (see :func:`merge_manual_scores`),
            checked before any notebook runs.
    Returns:
        a :class:`GradeSummary`; ``summary.all_graded`` is what the CLI's exit code reports.
    """
    options = options or GradingOptions()
    submissions_dir = Path(submissions_dir)
    if not submissions_dir.is_dir():
        raise NotADirectoryError(f"submissions_dir must be a directory, got {submissions_dir}")
    out_csv = Path(out_csv)
    feedback_dir = Path(feedback_dir) if feedback_dir is not None else out_csv.with_name(out_csv.stem + "_feedback")
    if out_csv.resolve().is_relative_to(submissions_dir.resolve()) or feedback_dir.resolve().is_relative_to(
        submissions_dir.resolve()
    ):
        raise ValueError("the gradebook and the feedback folder must be outside the submissions folder")
    start = time.perf_counter()
    ctx = _Context(options)
    paths = find_submissions(submissions_dir)
    if manual_scores is not None:  # fail before the (long) grading, not after it
        read_manual_scores(manual_scores, submissions=[p.relative_to(submissions_dir).as_posix() for p in paths])

    async def main() -> list[SubmissionOutcome]:
        semaphore = asyncio.Semaphore(options.workers)

        async def one(path: Path) -> SubmissionOutcome:
            outcome = await _grade_file(path, path.relative_to(submissions_dir).as_posix(), ctx, semaphore)
            if progress is not None:
                progress(outcome)
            return outcome

        return list(await asyncio.gather(*(one(p) for p in paths)))

    outcomes = asyncio.run(main())
    columns, written = _question_columns(outcomes, ctx), _written_columns(outcomes, ctx)
    header = [*GRADEBOOK_HEAD, *(f"{s}.{q}" for s, q in columns), *(q.key for q in written), *GRADEBOOK_TAIL]
    rows = gradebook_rows(outcomes, columns, written)
    problem = None
    if manual_scores is not None:
        try:
            rows = merge_manual_scores(rows, manual_scores, sets=ctx.sets)
            _apply_scores(outcomes, rows, ctx)
        except ValueError as exc:
            problem = exc
    _atomic_write_text(out_csv, _rows_csv(rows, header))
    for set_id in sorted({o.set_id for o in outcomes if o.set_id}):
        if getattr(ctx.sets[set_id], "written", None):
            master, master_problem = ctx.master(set_id)
            text = written_export(ctx.sets[set_id], outcomes, master, master_problem)
            _atomic_write_text(_written_export_path(out_csv, set_id), text)
    used: set[str] = set()
    for o in outcomes:
        name = _feedback_name(o.submission)
        while name in used:  # "a/b.ipynb" and "a__b.ipynb" would share a name
            name = name[: -len(".txt")] + "_.txt"
        used.add(name)
        _atomic_write_text(feedback_dir / name, feedback_text(o))
    if problem is not None:
        raise ValueError(f"{problem} (the gradebook was written without the manual scores)")
    return GradeSummary(outcomes, out_csv, feedback_dir, time.perf_counter() - start)


def grade_notebook(path: str | Path, options: GradingOptions | None = None) -> SubmissionOutcome:
    """Grade one notebook file as :func:`grade_directory` grades each submission (same kernel, limits and tests);
    write nothing. ``outcome.result`` holds the per-question, per-test results, or is None when no tests could run
    (``outcome.status`` and ``outcome.message`` say why)."""
    path = Path(path)
    ctx = _Context(options or GradingOptions())

    async def main() -> SubmissionOutcome:
        return await _grade_file(path, path.name, ctx, asyncio.Semaphore(1))

    return asyncio.run(main())


def default_hidden_dir() -> Path | None:
    """``exercises/instructor/hidden`` of the course checkout, if there is one."""
    from mmcourse.grading.layout import HIDDEN_DIR, course_root

    try:
        path = course_root() / HIDDEN_DIR
    except FileNotFoundError:
        return None
    return path if path.is_dir() else None


def default_masters_dir() -> Path | None:
    """``exercises/instructor/masters`` of the course checkout, if there is one."""
    from mmcourse.grading.layout import MASTERS_DIR, course_root

    try:
        path = course_root() / MASTERS_DIR
    except FileNotFoundError:
        return None
    return path if path.is_dir() else None
