"""The exercise format, the assertions, the test runner (errors, time limits, reference guard) and check()."""

import functools
import linecache
import math
import sys
import types

import pytest
import torch

from mmcourse.grading import check
from mmcourse.grading.expect import (
    Mismatch,
    expect_close,
    expect_equal,
    expect_number,
    expect_raises,
    expect_tensor,
    fmt,
)
from mmcourse.grading.results import QuestionResult, SetResult
from mmcourse.grading.runner import ReferenceGuard, run_question, run_set
from mmcourse.grading.spec import ExerciseSet, HiddenTests, available_sets, load_set, parse_check_name


# ----------------------------------------------------------------------------------------------------------------
# A tiny set and a fake "library" whose reference implementation answers must not call
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def reference_library(monkeypatch):
    lib = types.ModuleType("fake_reference_lib")
    exec(
        "def reference_square(x, *, power=2):\n"
        "    return x ** power\n"
        "class ReferenceLayer:\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.ready = True\n",
        lib.__dict__,
    )
    monkeypatch.setitem(sys.modules, "fake_reference_lib", lib)
    return lib


def tiny_set() -> ExerciseSet:
    s = ExerciseSet("ex99", "Tiny", chapter="00_test", version=3)
    q = s.question("square", "Square a tensor", forbidden=("fake_reference_lib.reference_square", "math.hypot"))

    @q.test(points=1, hint="x * x")
    def squares_small_numbers(fn):
        """squares [1, 2, 3]"""
        expect_close(fn(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([1.0, 4.0, 9.0]))

    @q.test(points=2)
    def matches_the_reference(fn):
        """agrees with the library on random input"""
        lib = sys.modules["fake_reference_lib"]
        x = torch.randn(5, generator=torch.Generator().manual_seed(0))
        expect_close(fn(x), lib.reference_square(x))  # the test itself may call the reference

    return s


def answer_namespace(source: str) -> dict:
    """Define an answer the way a notebook cell does: exec in a namespace, source registered in linecache."""
    ns = {"__name__": "__main__"}
    filename = f"<cell {abs(hash(source))}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), ns)
    return ns


# ----------------------------------------------------------------------------------------------------------------
# spec
# ----------------------------------------------------------------------------------------------------------------
def test_spec_validates_its_inputs():
    with pytest.raises(ValueError, match="set_id"):
        ExerciseSet("chapter4", "x", chapter="04")
    with pytest.raises(ValueError, match="version"):
        ExerciseSet("ex04", "x", chapter="04", version=0)
    s = ExerciseSet("ex04", "x", chapter="04")
    q = s.question("f", "f")
    with pytest.raises(ValueError, match="declared twice"):
        s.question("f", "again")
    with pytest.raises(ValueError, match="identifier"):
        s.question("not a name", "x")
    with pytest.raises(ValueError, match="points"):
        q.test(points=0)
    with pytest.raises(KeyError, match="its questions are: f"):
        s["g"]

    @q.test()
    def t(fn):
        """doc line"""

    with pytest.raises(ValueError, match="two tests"):
        q.test()(t)
    assert q.tests[0].description == "doc line"
    hidden = HiddenTests("ex04")
    hidden.test("nope")(lambda fn: None)
    with pytest.raises(ValueError, match="unknown questions"):
        hidden.check_against(s)


def test_parse_check_name_and_registry():
    assert parse_check_name("ex04.clip_loss") == ("ex04", "clip_loss")
    assert parse_check_name("ex04") == ("ex04", None)
    for bad in ("clip_loss", "ex4.x", "ex04.1x", ""):
        with pytest.raises(ValueError, match="ex04.clip_loss"):
            parse_check_name(bad)
    with pytest.raises(TypeError):
        parse_check_name(4)
    assert available_sets() == [f"ex0{i}" for i in range(1, 9)]
    assert load_set("ex04").id == "ex04"
    with pytest.raises(ValueError, match="unknown exercise set"):
        load_set("ex42")


# ----------------------------------------------------------------------------------------------------------------
# expect
# ----------------------------------------------------------------------------------------------------------------
def test_expect_close_reports_shapes_values_and_the_worst_entry():
    with pytest.raises(Mismatch) as info:
        expect_close(torch.zeros(2, 3), torch.zeros(3, 2))
    assert info.value.lines() == ["the result has the wrong shape", "expected: shape (3, 2)", "got:      shape (2, 3)"]
    with pytest.raises(Mismatch) as info:
        expect_close(torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0]))
    text = "\n".join(info.value.lines())
    assert "1 of 2 values differ; largest difference 0.5000 at index (1,)" in text
    assert "got:      tensor of shape (2,), dtype float32: [1.0000, 2.5000]" in text
    expect_close(torch.tensor([1.0, 2.0 + 1e-7]), torch.tensor([1.0, 2.0]))


def test_expect_refuses_tensor_subclasses_and_non_numbers():
    class Liar(torch.Tensor):
        pass

    fake = torch.zeros(2).as_subclass(Liar)
    with pytest.raises(Mismatch, match="must be a torch.Tensor"):
        expect_tensor(fake, shape=(2,))
    with pytest.raises(Mismatch, match="must be a number"):
        expect_number("1.0", 1.0)
    with pytest.raises(Mismatch, match="too small"):
        expect_number(0.5, low=0.6)
    assert expect_number(torch.tensor(2.0), 2.0) == 2.0


def test_expect_equal_and_raises():
    with pytest.raises(Mismatch, match="bool tensor"):
        expect_equal(torch.tensor([1, 0]), torch.tensor([True, False]))
    with pytest.raises(Mismatch, match="wrong type"):
        expect_equal("3", 3)
    with pytest.raises(Mismatch, match="should raise ValueError") as info:
        expect_raises(ValueError, lambda: None)
    assert "no exception" in str(info.value.lines())
    with pytest.raises(Mismatch) as info:
        expect_raises(ValueError, lambda: 1 / 0)
    assert "ZeroDivisionError" in "\n".join(info.value.lines())
    with pytest.raises(NotImplementedError):
        expect_raises(ValueError, _not_implemented)
    assert fmt(torch.zeros(3)) == "tensor of shape (3,), dtype float32: [0.0000, 0.0000, 0.0000]"
    assert fmt(torch.zeros(10)).endswith("0.0000, ...]")


def _not_implemented():
    raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------------
# runner: errors become results
# ----------------------------------------------------------------------------------------------------------------
def test_correct_partial_and_missing_answers(reference_library):
    s = tiny_set()
    right = run_set(s, answer_namespace("def square(x):\n    return x * x\n"))
    assert (right.points, right.max_points) == (3.0, 3.0)
    wrong = run_set(s, answer_namespace("def square(x):\n    return x * 2\n"))
    assert wrong.points == 0.0 and "has the wrong values" in wrong.report()
    missing = run_set(s, {})
    assert missing.points == 0.0
    assert "no function named `square`" in missing.report()


def test_student_exceptions_are_reported_with_their_line(reference_library):
    s = tiny_set()
    source = "def square(x):\n    y = x + 1\n    raise ValueError('bad')\n"
    result = run_question(s["square"], answer_namespace(source))
    assert not result.passed
    assert "ValueError: bad (in square: `raise ValueError('bad')`)" in result.report()
    stub = run_question(s["square"], answer_namespace("def square(x):\n    raise NotImplementedError\n"))
    report = stub.report()
    assert report.count("not implemented yet") == 1, "a common failure is said once"
    exits = run_question(s["square"], answer_namespace("import sys\ndef square(x):\n    sys.exit(1)\n"))
    assert "sys.exit()" in exits.report()


def test_endless_loops_hit_the_time_limit(reference_library):
    s = tiny_set()
    ns = answer_namespace(
        "def square(x):\n    while True:\n        try:\n            pass\n        except Exception:\n            pass\n"
    )
    result = run_question(s["square"], ns, time_limit=0.2)
    assert [t.passed for t in result.tests] == [False, False]
    assert "did not finish within 0.2 s" in result.report()


def test_printing_is_captured_when_asked(reference_library, capsys):
    s = tiny_set()
    ns = answer_namespace("def square(x):\n    print('debug ' * 1000)\n    return x * x\n")
    assert run_question(s["square"], ns, capture_output=True).passed
    assert capsys.readouterr().out == ""


def test_hidden_tests_add_to_the_question(reference_library):
    s = tiny_set()
    hidden = HiddenTests("ex99")

    @hidden.test("square", points=4)
    def handles_integers(fn):
        """integers too"""
        expect_equal(fn(torch.tensor([3])), torch.tensor([9]))

    result = run_set(s, answer_namespace("def square(x):\n    return x * x\n"), hidden)
    assert (result.points, result.max_points) == (7.0, 7.0)
    assert "[hidden]" in result.report()
    again = SetResult.from_dict(result.to_dict())
    assert again.report() == result.report() and again.points == 7.0


# ----------------------------------------------------------------------------------------------------------------
# runner: reference implementations earn nothing
# ----------------------------------------------------------------------------------------------------------------
CHEATS = {
    "module attribute": "import fake_reference_lib\n"
    "def square(x):\n    return fake_reference_lib.reference_square(x)\n",
    "imported name": "from fake_reference_lib import reference_square as r\ndef square(x):\n    return r(x)\n",
    "default argument": "from fake_reference_lib import reference_square\n"
    "def square(x, _f=reference_square):\n    return _f(x)\n",
    "hidden in a list": "import fake_reference_lib\nBOX = [fake_reference_lib.reference_square]\n"
    "def square(x):\n    return BOX[0](x)\n",
    "via a helper": "import fake_reference_lib as L\ndef helper(x):\n    return L.reference_square(x)\n"
    "def square(x):\n    return helper(x)\n",
    "the reference itself": "from fake_reference_lib import reference_square as square\n",
    "a partial": "import functools, fake_reference_lib\n"
    "square = functools.partial(fake_reference_lib.reference_square, power=2)\n",
    "a builtin": "import math, torch\ndef square(x):\n"
    "    return torch.tensor([math.hypot(float(v), 0.0) ** 2 for v in x])\n",
}


@pytest.mark.parametrize("how", list(CHEATS))
def test_calling_the_reference_scores_zero(reference_library, how):
    result = run_question(tiny_set()["square"], answer_namespace(CHEATS[how]))
    assert result.points == 0.0, result.report()
    assert "reference implementation" in result.violation


def test_the_guard_restores_everything_and_lets_tests_use_the_reference(reference_library):
    original_code = reference_library.reference_square.__code__
    ns = answer_namespace(
        "import math\nfrom fake_reference_lib import reference_square as r\ndef square(x):\n    return x * x\n"
    )
    result = run_question(tiny_set()["square"], ns)
    assert result.passed and result.violation is None  # the test called the reference itself: fine
    assert reference_library.reference_square.__code__ is original_code
    assert ns["r"] is reference_library.reference_square and math.hypot(3, 4) == 5.0
    assert "__mmcourse_reference_guard__" not in reference_library.__dict__


def test_the_guard_covers_classes(reference_library):
    ns = answer_namespace(
        "import fake_reference_lib\nclass Mine(fake_reference_lib.ReferenceLayer):\n    pass\n"
        "def make():\n    return fake_reference_lib.ReferenceLayer()\n"
    )
    guard = ReferenceGuard(("fake_reference_lib.ReferenceLayer",), ns)
    assert guard.identity_violation(ns["Mine"]) is not None
    with guard:
        with pytest.raises(Exception, match="reference implementation"):
            ns["make"]()
        assert reference_library.ReferenceLayer().ready  # called from here (not the answer): works
    assert guard.violation is not None and reference_library.ReferenceLayer().ready


def test_unresolvable_forbidden_names_are_skipped():
    guard = ReferenceGuard(("no_such_module.f", "math.no_such_function"), {})
    assert guard.targets == []
    with guard:
        pass


# ----------------------------------------------------------------------------------------------------------------
# check()
# ----------------------------------------------------------------------------------------------------------------
def test_check_finds_the_answer_in_the_callers_namespace(capsys):
    ns = answer_namespace(
        "import torch\nfrom mmcourse.grading import check\n"
        "def early_fusion(image_features, text_features):\n"
        "    return torch.cat([text_features, image_features], dim=1)\n"
        "report = check('ex01.early_fusion')\n"
    )
    printed = capsys.readouterr().out
    report = ns["report"]
    assert isinstance(report.result, QuestionResult) and report.points == 1.0 and report.max_points == 3.0
    assert printed.strip() == str(report).strip()
    assert "✓ (B, Di) and (B, Dt) give (B, Di + Dt) (1/1)" in printed
    assert "✗ the image features come first, then the text features (0/1)" in printed
    assert "expected: tensor of shape (2, 3), dtype float32: [1.0000, 2.0000, 10.0000" in printed
    assert "hint: Image features first, then text features." in printed
    ns2 = answer_namespace(
        "import torch\nfrom mmcourse.grading import check\n"
        "def early_fusion(image_features, text_features):\n"
        "    return torch.cat([text_features, image_features], dim=1)\n"
        "report = check('ex01.early_fusion', quiet=True)\n"
    )
    assert str(ns2["report"]) == str(report), "reports are deterministic"


def test_check_explicit_answer_whole_set_and_display(capsys):
    report = check("ex01.modality_dropout", lambda image, text, p, generator=None: 1 / 0, quiet=True)
    assert report.points == 0 and "ZeroDivisionError: division by zero" in str(report)
    whole = check("ex01", quiet=True)
    assert isinstance(whole.result, SetResult) and whole.points == 0 and not whole.passed
    printed = check("ex01.early_fusion", namespace={})
    first = capsys.readouterr().out
    printed._ipython_display_()  # Jupyter's display right after check(): already printed, nothing more
    assert capsys.readouterr().out == ""
    printed._ipython_display_()  # a later display shows the report again
    assert capsys.readouterr().out == first
    assert repr(printed).startswith("<QuestionResult ex01.early_fusion: 0/3 points")


def test_check_rejects_bad_names():
    with pytest.raises(ValueError, match="ex04.clip_loss"):
        check("clip_loss")
    with pytest.raises(KeyError, match="its questions are"):
        check("ex01.nope")


def test_functools_partial_of_an_answer_is_still_tested(reference_library):
    ns = answer_namespace("def power(x, p):\n    return x ** p\n")
    ns["square"] = functools.partial(ns["power"], p=2)
    assert run_question(tiny_set()["square"], ns).passed
