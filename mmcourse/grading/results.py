"""Results of running tests: per test, per question, per set; plain-text reports and JSON round-trips.

The same objects are printed by :func:`mmcourse.grading.check` in the student's notebook and, serialised to JSON
inside the grading kernel, turned into the instructor's feedback files. Reports are deterministic text (no
timings, no addresses) so they can be stored in notebooks and compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["TestResult", "QuestionResult", "SetResult", "WrittenResult", "format_points"]

PASS, FAIL = "✓", "✗"


def format_points(x: float) -> str:
    """``3`` for whole numbers, ``1.5`` otherwise."""
    return f"{x:g}"


@dataclass
class TestResult:
    """The outcome of one test."""

    __test__ = False  # not a pytest test class

    name: str
    description: str
    max_points: float
    passed: bool
    message: list[str] = field(default_factory=list)
    hint: str = ""
    hidden: bool = False

    @property
    def points(self) -> float:
        return self.max_points if self.passed else 0.0

    def report_lines(self, *, show_hints: bool = True) -> list[str]:
        mark = PASS if self.passed else FAIL
        tag = " [hidden]" if self.hidden else ""
        lines = [f"  {mark} {self.description}{tag} ({format_points(self.points)}/{format_points(self.max_points)})"]
        if not self.passed:
            lines += [f"      {line}" for line in self.message]
            if show_hints and self.hint:
                lines.append(f"      hint: {self.hint}")
        return lines


@dataclass
class QuestionResult:
    """The outcome of one question: its tests, and whether the answer broke the rules."""

    key: str
    title: str
    tests: list[TestResult] = field(default_factory=list)
    violation: str | None = None
    note: str | None = None

    @property
    def name(self) -> str:
        return self.key.partition(".")[2]

    @property
    def points(self) -> float:
        if self.violation:
            return 0.0
        return float(sum(t.points for t in self.tests))

    @property
    def max_points(self) -> float:
        return float(sum(t.max_points for t in self.tests))

    @property
    def passed(self) -> bool:
        return not self.violation and all(t.passed for t in self.tests)

    def report(self, *, show_hints: bool = True) -> str:
        n_pass = sum(t.passed for t in self.tests)
        head = (
            f"{self.key} — {self.title}: {format_points(self.points)}/{format_points(self.max_points)} points "
            f"({n_pass} of {len(self.tests)} tests passed)"
        )
        lines = [head]
        if self.note:
            lines.append(f"  {FAIL} {self.note}")
        if self.violation:
            lines.append(f"  {FAIL} {self.violation}")
        messages = {tuple(t.message) for t in self.tests}
        if self.tests and not any(t.passed for t in self.tests) and len(messages) == 1 and len(self.tests) > 1:
            # every test failed the same way (not implemented, not defined...): say it once
            common = messages.pop()
            if not self.note:
                lines += [f"  {FAIL} {line}" for line in common]
            for t in self.tests:
                lines += TestResult(t.name, t.description, t.max_points, False, [], "", t.hidden).report_lines()
            return "\n".join(lines)
        for t in self.tests:
            lines += t.report_lines(show_hints=show_hints)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> QuestionResult:
        tests = [TestResult(**t) for t in data.get("tests", [])]
        return cls(data["key"], data["title"], tests, data.get("violation"), data.get("note"))

    def __repr__(self) -> str:
        return (
            f"<QuestionResult {self.key}: {format_points(self.points)}/{format_points(self.max_points)} points, "
            f"{sum(t.passed for t in self.tests)}/{len(self.tests)} tests passed>"
        )


@dataclass
class SetResult:
    """The outcome of every question of an exercise set."""

    set_id: str
    version: int
    questions: list[QuestionResult] = field(default_factory=list)

    @property
    def points(self) -> float:
        return float(sum(q.points for q in self.questions))

    @property
    def max_points(self) -> float:
        return float(sum(q.max_points for q in self.questions))

    def __getitem__(self, name: str) -> QuestionResult:
        for q in self.questions:
            if q.name == name:
                return q
        raise KeyError(name)

    def report(self, *, show_hints: bool = True) -> str:
        head = f"{self.set_id}: {format_points(self.points)}/{format_points(self.max_points)} points"
        return "\n\n".join([head, *(q.report(show_hints=show_hints) for q in self.questions)])

    def to_dict(self) -> dict:
        return {"set_id": self.set_id, "version": self.version, "questions": [q.to_dict() for q in self.questions]}

    @classmethod
    def from_dict(cls, data: dict) -> SetResult:
        return cls(data["set_id"], int(data["version"]), [QuestionResult.from_dict(q) for q in data["questions"]])

    def __repr__(self) -> str:
        return (
            f"<SetResult {self.set_id}: {format_points(self.points)}/{format_points(self.max_points)} points "
            f"in {len(self.questions)} questions>"
        )


#: What :func:`mmcourse.grading.check` can tell about a written answer (``None``: it cannot see the notebook).
WRITTEN_STATES = {
    "answered": f"{PASS} your answer cell has an answer",
    "unanswered": f"{FAIL} your answer cell still says YOUR ANSWER HERE",
    "missing": f"{FAIL} no answer cell for this question (keep the cell under the question)",
}


@dataclass
class WrittenResult:
    """A written question as ``check`` sees it: graded by a person, so no points yet; maybe whether it is answered.

    ``state`` is ``"answered"``, ``"unanswered"`` (still ``YOUR ANSWER HERE``), ``"missing"`` (no answer cell) or
    ``None`` when the notebook file could not be read from the kernel (then only the points are reported).
    """

    key: str
    title: str
    max_points: float
    state: str | None = None
    source: str = ""  # where the state was read, e.g. "ex04_contrastive.ipynb as last saved"

    @property
    def name(self) -> str:
        return self.key.partition(".")[2]

    @property
    def points(self) -> float:
        return 0.0  # not known until a person grades it

    @property
    def passed(self) -> bool:
        return self.state == "answered"

    def report(self, *, show_hints: bool = True) -> str:
        lines = [f"{self.key} — {self.title}: {format_points(self.max_points)} points, graded by a person (written)"]
        if self.state in WRITTEN_STATES:
            where = f" (in {self.source})" if self.source else ""
            lines.append(f"  {WRITTEN_STATES[self.state]}{where}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<WrittenResult {self.key}: {format_points(self.max_points)} points, graded by a person>"
