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
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmcourse.grading.authoring import notebook_set_id
from mmcourse.grading.results import SetResult, format_points
from mmcourse.grading.spec import SET_ID_PATTERN, ExerciseSet, HiddenTests, available_sets, load_set

__all__ = [
    "GradingOptions",
    "SubmissionOutcome",
    "GradeSummary",
    "grade_directory",
    "load_hidden_tests",
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
    """

    workers: int = 2
    timeout: float = 120.0
    grading_timeout: float = 60.0
    test_timeout: float = 10.0
    memory_mb: int | None = 4096
    hidden_dir: Path | None = None
    force_set: str | None = None
    startup_timeout: float = 60.0

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


def gradebook_csv(outcomes: Sequence[SubmissionOutcome], columns: Sequence[tuple[str, str]]) -> str:
    """The gradebook as CSV text: one row per outcome."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    question_names = [f"{s}.{q}" for s, q in columns]
    writer.writerow(
        ["submission", "set", "status", "graded", *question_names, "total", "max", "percent", "flags", "message"]
    )
    for o in outcomes:
        scores = []
        for set_id, name in columns:
            if o.set_id != set_id:
                scores.append("")
            elif o.result is not None:
                scores.append(format_points(o.result[name].points))
            else:
                scores.append("0")
        percent = f"{100 * o.points / o.max_points:.1f}" if o.max_points else ""
        writer.writerow(
            [
                o.submission,
                o.set_id or "",
                o.status,
                "yes" if o.graded else "no",
                *scores,
                format_points(o.points),
                format_points(o.max_points),
                percent,
                "; ".join(o.flags),
                o.message,
            ]
        )
    return buffer.getvalue()


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
) -> GradeSummary:
    """Grade every file under ``submissions_dir``; write ``out_csv`` and one feedback file per submission.

    Args:
        submissions_dir: folder of submitted notebooks (searched recursively; never modified).
        out_csv: the gradebook to write (atomically).
        feedback_dir: where feedback files go (default: ``<out_csv stem>_feedback/`` beside the CSV).
        options: :class:`GradingOptions`.
        progress: called with each outcome as it completes.
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

    async def main() -> list[SubmissionOutcome]:
        semaphore = asyncio.Semaphore(options.workers)

        async def one(path: Path) -> SubmissionOutcome:
            outcome = await _grade_file(path, path.relative_to(submissions_dir).as_posix(), ctx, semaphore)
            if progress is not None:
                progress(outcome)
            return outcome

        return list(await asyncio.gather(*(one(p) for p in paths)))

    outcomes = asyncio.run(main())
    _atomic_write_text(out_csv, gradebook_csv(outcomes, _question_columns(outcomes, ctx)))
    used: set[str] = set()
    for o in outcomes:
        name = _feedback_name(o.submission)
        while name in used:  # "a/b.ipynb" and "a__b.ipynb" would share a name
            name = name[: -len(".txt")] + "_.txt"
        used.add(name)
        _atomic_write_text(feedback_dir / name, feedback_text(o))
    return GradeSummary(outcomes, out_csv, feedback_dir, time.perf_counter() - start)


def default_hidden_dir() -> Path | None:
    """``exercises/instructor/hidden`` of the course checkout, if there is one."""
    from mmcourse.grading.layout import HIDDEN_DIR, course_root

    try:
        path = course_root() / HIDDEN_DIR
    except FileNotFoundError:
        return None
    return path if path.is_dir() else None
