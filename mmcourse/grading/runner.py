"""Running a question's tests against a student's answer, shared by ``check()`` and the instructor's grader.

Three protections wrap every test:

* **Errors are results.** Whatever the student's code raises (``NotImplementedError``, ``SystemExit``, a shape
  error, a timeout) becomes a failed test with a one-line explanation; the checker itself never crashes.
* **Time limit.** Each test may run ``time_limit`` seconds (``SIGALRM``; only in the main thread of a Unix
  process, i.e. inside a notebook kernel), so one endless loop costs one test, not the whole notebook.
* **Reference implementations earn nothing.** A question may list ``forbidden`` dotted names (e.g.
  ``"mmcourse.objectives.contrastive.contrastive_loss"``): while its tests run, those objects are swapped for tripwires.
  A pure-Python function keeps its identity but gets a trampoline ``__code__``, so every reference to it (imported name,
  alias, list element, ``functools.partial``, default argument) goes through the tripwire; builtins are replaced by
  attribute (on their module and in the student's namespace). The tripwire walks the call stack: if a frame of the
  student's notebook lies between it and the test, the call comes from the answer — the question is marked as a
  violation and scores 0 — otherwise (a test computing its expected value) it calls the original. An answer that *is*
  the reference (``clip_loss = contrastive_loss``, a partial or subclass of it) is caught by identity. What this cannot
  see: an answer that pastes the library's source code, or one that deliberately reaches the original through
  interpreter internals; the grader flags such code for review instead.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import itertools
import linecache
import signal
import sys
import threading
import traceback
import types
from collections.abc import Iterator, Mapping

from mmcourse.grading.results import QuestionResult, SetResult, TestResult
from mmcourse.grading.spec import ExerciseSet, HiddenTests, Question, TestCase

__all__ = [
    "TestTimeout",
    "ReferenceImplementationUsed",
    "ReferenceGuard",
    "time_limit",
    "run_question",
    "run_set",
]

_GUARD_GLOBAL = "__mmcourse_reference_guard__"
_guard_keys = itertools.count()


class TestTimeout(BaseException):
    """Raised inside a test that ran longer than its time limit (a BaseException: ``except Exception`` in the
    student's code cannot swallow it)."""

    __test__ = False


class ReferenceImplementationUsed(Exception):
    """Raised by a tripwire when the student's answer calls a forbidden reference implementation."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TestTimeout` in the block after ``seconds`` (no-op without SIGALRM or off the main thread)."""
    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise TestTimeout(f"did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------------------------------------------
# The reference-implementation guard
# ----------------------------------------------------------------------------------------------------------------
def _call_test(test_fn, answer):
    """The boundary frame: the guard's stack walk stops here (frames above belong to the test harness)."""
    return test_fn(answer)


_BOUNDARY_CODE = _call_test.__code__


def _resolve(dotted: str):
    """``"pkg.mod.attr"`` → ``(module, "attr", object)``; None when the module or attribute does not exist."""
    module_name, _, attr = dotted.rpartition(".")
    while module_name:
        try:
            owner = importlib.import_module(module_name)
            break
        except ImportError:
            module_name, _, head = module_name.rpartition(".")
            attr = f"{head}.{attr}"
    else:
        return None
    *path, last = attr.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    if not hasattr(owner, last):
        return None
    return owner, last, getattr(owner, last)


def _trampoline_code(name: str, key: int, freevars: tuple[str, ...]) -> types.CodeType:
    """A ``(*args, **kwargs)`` code object with ``freevars`` (so it fits any closure) that calls the guard."""
    lines = ["def _outer():"]
    lines += [f"    {v} = None" for v in freevars]
    lines.append(f"    def {name}(*args, **kwargs):")
    if freevars:
        lines.append(f"        ({', '.join(freevars)},)")
    lines.append(f"        return {_GUARD_GLOBAL}[{key}](args, kwargs)")
    lines.append(f"    return {name}")
    namespace: dict = {}
    exec(compile("\n".join(lines), "<mmcourse reference guard>", "exec"), namespace)
    return namespace["_outer"]().__code__


class ReferenceGuard:
    """Context manager that turns ``forbidden`` objects into tripwires for code from ``namespace``.

    Args:
        forbidden: dotted names (``"mmcourse.objectives.contrastive.contrastive_loss"``,
            ``"torch.quantize_per_channel"``, a class name guards its ``__init__`` and ``forward``). Names that do not
            resolve are skipped.
        namespace: the student's globals (the notebook's namespace).
    """

    def __init__(self, forbidden: tuple[str, ...], namespace: Mapping):
        self.namespace = namespace
        self.targets: list[tuple[str, object, str, object]] = []  # (dotted, owner, attr, obj)
        for dotted in forbidden:
            resolved = _resolve(dotted)
            if resolved is not None and not any(resolved[2] is t[3] for t in self.targets):
                self.targets.append((dotted, *resolved))
        self.violation: str | None = None
        self._undo: list = []

    # -- identity -------------------------------------------------------------------------------------------
    def identity_violation(self, answer) -> str | None:
        """A message if ``answer`` is (a wrapper, partial, alias or subclass of) a forbidden object."""
        for dotted, _, _, obj in self.targets:
            if self._is_or_wraps(answer, obj):
                return self._message(dotted)
        return None

    def _is_or_wraps(self, answer, obj) -> bool:
        seen = 0
        candidates = [answer]
        while candidates and seen < 50:
            cand = candidates.pop()
            seen += 1
            if cand is obj:
                return True
            if isinstance(obj, type) and isinstance(cand, type):
                try:
                    if issubclass(cand, obj):
                        return True
                except TypeError:
                    pass
            code = getattr(cand, "__code__", None)
            if code is not None and code is getattr(obj, "__code__", object()):
                return True
            if isinstance(cand, functools.partial):
                candidates.append(cand.func)
            for attr in ("__wrapped__", "__func__"):
                inner = getattr(cand, attr, None) if not isinstance(cand, type) else None
                if inner is not None:
                    candidates.append(inner)
            if isinstance(cand, types.FunctionType):
                candidates.extend(cand.__defaults__ or ())
                candidates.extend((cand.__kwdefaults__ or {}).values())
                for cell in cand.__closure__ or ():
                    with contextlib.suppress(ValueError):
                        candidates.append(cell.cell_contents)
        return False

    @staticmethod
    def _message(dotted: str) -> str:
        return (
            f"uses the library's reference implementation `{dotted}`: this question scores 0 — "
            "write the computation yourself"
        )

    # -- tripwires --------------------------------------------------------------------------------------------
    def _called_from_answer(self) -> bool:
        frame = sys._getframe(2)
        while frame is not None and frame.f_code is not _BOUNDARY_CODE:
            if frame.f_globals is self.namespace:
                return True
            frame = frame.f_back
        return False

    def _handler(self, dotted: str, original):
        def handle(args, kwargs):
            if self._called_from_answer():
                self.violation = self.violation or self._message(dotted)
                raise ReferenceImplementationUsed(self._message(dotted))
            return original(*args, **kwargs)

        return handle

    def _swap_code(self, dotted: str, func: types.FunctionType) -> None:
        copy = types.FunctionType(func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__)
        copy.__kwdefaults__ = func.__kwdefaults__
        key = next(_guard_keys)
        registry = func.__globals__.setdefault(_GUARD_GLOBAL, {})
        registry[key] = self._handler(dotted, copy)
        original_code = func.__code__
        func.__code__ = _trampoline_code(func.__name__, key, original_code.co_freevars)

        def undo():
            func.__code__ = original_code
            registry.pop(key, None)
            if not registry:
                func.__globals__.pop(_GUARD_GLOBAL, None)

        self._undo.append(undo)

    def _patch_attribute(self, dotted: str, owner, attr: str, obj) -> None:
        handle = self._handler(dotted, obj)

        @functools.wraps(obj)
        def tripwire(*args, **kwargs):
            return handle(args, kwargs)

        setattr(owner, attr, tripwire)
        self._undo.append(lambda: setattr(owner, attr, obj))
        for name, value in list(self.namespace.items()):
            if value is obj:
                self.namespace[name] = tripwire
                self._undo.append(lambda name=name: self.namespace.__setitem__(name, obj))

    def __enter__(self) -> ReferenceGuard:
        try:
            for dotted, owner, attr, obj in self.targets:
                if isinstance(obj, types.FunctionType):
                    self._swap_code(dotted, obj)
                elif isinstance(obj, type):
                    for method in ("__init__", "forward"):
                        func = obj.__dict__.get(method)
                        if isinstance(func, types.FunctionType):
                            self._swap_code(f"{dotted}.{method}", func)
                elif callable(obj):
                    self._patch_attribute(dotted, owner, attr, obj)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        while self._undo:
            self._undo.pop()()


# ----------------------------------------------------------------------------------------------------------------
# Running tests
# ----------------------------------------------------------------------------------------------------------------
class _Discard(io.TextIOBase):
    """Swallows what the student's code prints during grading (however much it is)."""

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:
        return len(s)


def _student_location(exc: BaseException, namespace: Mapping) -> str:
    """`` (in clip_loss: `logits = a @ b`)`` for the innermost traceback frame from the student's namespace."""
    found = ""
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_globals is namespace:
            line = linecache.getline(frame.f_code.co_filename, lineno, frame.f_globals).strip()
            found = f" (in {frame.f_code.co_name}" + (f": `{line}`)" if line else ")")
    return found


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _run_test(test: TestCase, answer, namespace: Mapping, seconds: float | None, capture: bool) -> TestResult:
    def failed(*lines: str) -> TestResult:
        return TestResult(test.name, test.description, test.points, False, list(lines), test.hint, test.hidden)

    sink = _Discard()
    redirect = (contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink)) if capture else ()
    try:
        with contextlib.ExitStack() as stack:
            for ctx in redirect:
                stack.enter_context(ctx)
            with time_limit(seconds):
                _call_test(test.fn, answer)
    except AssertionError as exc:
        lines = exc.lines() if hasattr(exc, "lines") else [_short(exc) or "assertion failed"]
        return failed(*lines)
    except NotImplementedError:
        return failed("not implemented yet: replace `raise NotImplementedError` with your code")
    except ReferenceImplementationUsed as exc:
        return failed(str(exc))
    except TestTimeout as exc:
        return failed(f"your code {exc} (an endless loop?)")
    except SystemExit:
        return failed("your code called sys.exit() / exit(); return a value instead")
    except RecursionError:
        return failed("RecursionError: maximum recursion depth exceeded (a function calling itself forever?)")
    except Exception as exc:  # noqa: BLE001 - every error of the student's code becomes a result
        where = _student_location(exc, namespace)
        return failed(_short(f"{type(exc).__name__}: {exc}") + where)
    return TestResult(test.name, test.description, test.points, True, [], test.hint, test.hidden)


def run_question(
    question: Question,
    namespace: Mapping,
    hidden: HiddenTests | None = None,
    *,
    answer=None,
    time_limit: float | None = None,
    capture_output: bool = False,
) -> QuestionResult:
    """Run the public (and ``hidden``) tests of ``question`` on ``namespace[question.name]``.

    Args:
        question: the question to grade.
        namespace: the student's globals (a notebook's namespace).
        hidden: instructor-only tests to run after the public ones.
        answer: the object to test (default: ``namespace[question.name]``).
        time_limit: seconds per test (``None``: no limit).
        capture_output: swallow what the student's code prints (the grader does; ``check`` does not).
    Returns:
        a :class:`QuestionResult` (never raises for anything the student's code does).
    """
    tests = question.all_tests(hidden)
    if answer is None:
        answer = namespace.get(question.name)
    if answer is None:
        what = "class" if question.kind == "class" else "function"
        note = (
            f"no {what} named `{question.name}` in this notebook: run the cell that defines it "
            "(and keep its name) before checking"
        )
        results = [TestResult(t.name, t.description, t.points, False, ["not run"], t.hint, t.hidden) for t in tests]
        return QuestionResult(question.key, question.title, results, note=note)
    note = None
    if question.kind == "class" and not isinstance(answer, type):
        note = f"`{question.name}` should be a class, got {type(answer).__name__}"
    elif question.kind == "function" and (isinstance(answer, type) or not callable(answer)):
        note = f"`{question.name}` should be a function, got {type(answer).__name__}"
    guard = ReferenceGuard(question.forbidden, namespace)
    violation = guard.identity_violation(answer)
    with guard:
        results = [_run_test(t, answer, namespace, time_limit, capture_output) for t in tests]
    return QuestionResult(question.key, question.title, results, violation or guard.violation, note)


def run_set(
    exercise_set: ExerciseSet,
    namespace: Mapping,
    hidden: HiddenTests | None = None,
    *,
    time_limit: float | None = None,
    capture_output: bool = False,
) -> SetResult:
    """Run :func:`run_question` for every question of ``exercise_set``, in order."""
    if hidden is not None:
        hidden.check_against(exercise_set)
    questions = [
        run_question(q, namespace, hidden, time_limit=time_limit, capture_output=capture_output) for q in exercise_set
    ]
    return SetResult(exercise_set.id, exercise_set.version, questions)
