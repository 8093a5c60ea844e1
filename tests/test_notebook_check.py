"""The notebook check modes: exact on the platform the outputs were made on, claim lines elsewhere.

Unit tests of the pieces (claim lines, the claims sanitizer, the mode decision, the platform fingerprint), and
end-to-end runs of pytest on small notebooks: a changed float fails only the exact check, a claim that no longer
holds or a cell that raises fails both, and chapter 1 passes under another CPU's kernels.
"""

import copy
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import nbformat
import pytest
from nbval.plugin import get_sanitize_patterns

from mmcourse.dev.notebooks import (
    CPU_PINS,
    MODE_VARIABLE,
    PLATFORM_KEY,
    REPO_ROOT,
    check_mode,
    platform_in,
    sanitize,
    stored_platform,
)
from mmcourse.labs.common import CLAIM_PREFIX, claim

CLAIMS_CFG = REPO_ROOT / "tests" / "sanitize_claims.cfg"


# ------------------------------------------------------------------------------------------------ claim lines


def test_claim_prints_yes_or_no_and_returns_nothing(capsys):
    assert claim("fused beats image only by >= 0.10", 0.9 - 0.5 >= 0.10) is None  # a cell's last line echoes nothing
    claim("  a statement that fails ", False)
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{CLAIM_PREFIX}fused beats image only by >= 0.10: yes", f"{CLAIM_PREFIX}a statement that fails: NO"]


def test_claim_takes_anything_with_a_truth_value(capsys):
    import numpy as np
    import torch

    claim("a tensor", torch.tensor(True))
    claim("a numpy bool", np.bool_(False))
    assert capsys.readouterr().out.splitlines() == [f"{CLAIM_PREFIX}a tensor: yes", f"{CLAIM_PREFIX}a numpy bool: NO"]


@pytest.mark.parametrize("statement", ["", "   ", "two\nlines", 3])
def test_claim_rejects_a_statement_that_is_not_one_line_of_text(statement):
    with pytest.raises(ValueError, match="one non-empty line"):
        claim(statement, True)


def test_the_claims_sanitizer_keeps_only_claim_lines():
    patterns = get_sanitize_patterns(CLAIMS_CFG.read_text(encoding="utf-8"))
    assert patterns, "no pattern found in sanitize_claims.cfg"
    text = f"accuracy 0.912\n{CLAIM_PREFIX}fused wins: yes\nloss 0.3\n{CLAIM_PREFIX}at chance: NO\ntail without newline"
    assert sanitize(text, patterns) == f"{CLAIM_PREFIX}fused wins: yes\n{CLAIM_PREFIX}at chance: NO\n"
    assert sanitize("<Figure size 500x300 with 1 Axes>", patterns) == ""
    assert sanitize("", patterns) == ""


# ------------------------------------------------------------------------------------------------ modes


PLATFORM = {"machine": "x86_64", "cpu_kernels": "AVX2", "torch": "2.13.0+cpu", "numpy": "2.4.6"}


def test_the_same_platform_is_checked_exactly():
    assert check_mode(PLATFORM, dict(PLATFORM)) == ("exact", "same platform as the stored outputs")


def test_another_platform_is_checked_by_claims_and_says_why():
    mode, reason = check_mode(PLATFORM, PLATFORM | {"torch": "2.14.0", "cpu_kernels": "DEFAULT"})
    assert mode == "claims"
    assert "torch '2.14.0' here, '2.13.0+cpu' in the outputs" in reason and "cpu_kernels 'DEFAULT' here" in reason


def test_a_notebook_without_a_recorded_platform_is_checked_by_claims():
    assert check_mode(None, PLATFORM)[0] == "claims"
    assert stored_platform({"metadata": {}}) is None
    assert stored_platform({"metadata": {"mmcourse": {PLATFORM_KEY: PLATFORM}}}) == PLATFORM


def test_a_forced_mode_wins_and_a_wrong_one_is_refused():
    assert check_mode(PLATFORM, PLATFORM, "claims")[0] == "claims"
    assert check_mode(None, PLATFORM, "exact")[0] == "exact"
    with pytest.raises(ValueError, match=MODE_VARIABLE):
        check_mode(PLATFORM, PLATFORM, "strict")


def test_the_fingerprint_sees_the_cpu_kernels_and_the_pins():
    here = platform_in(dict(os.environ))
    older = platform_in(dict(os.environ) | {"ATEN_CPU_CAPABILITY": "default"})
    assert older["cpu_kernels"] == "DEFAULT" and "ATEN_CPU_CAPABILITY=default" in older["cpu_pins"]
    assert {k: v for k, v in older.items() if k not in ("cpu_kernels", "cpu_pins")} == \
        {k: v for k, v in here.items() if k not in ("cpu_kernels", "cpu_pins")}
    assert set(here) >= {"machine", "cpu_kernels", "accelerator", "python", "torch", "numpy", "transformers"}


def test_the_tests_pin_the_cpu_kernels_unless_told_otherwise():
    for key in CPU_PINS:
        assert key in os.environ, f"{key} is not set in the test environment"


# ------------------------------------------------------------------------------------------------ end to end

LESSON = [
    "from mmcourse.labs.common import claim\naccuracy = 0.7",
    'print(f"accuracy {accuracy:.3f}")\nclaim("accuracy >= 0.5", accuracy >= 0.5)',
]


EXECUTE = """
import sys, nbformat
from mmcourse.dev.notebooks import execute_notebook, platform_fingerprint
nb = nbformat.read(sys.argv[1], as_version=4)
execute_notebook(nb, sys.argv[2], timeout=120, platform=platform_fingerprint())
nbformat.write(nb, sys.argv[1])
"""


@pytest.fixture(scope="module")
def executed_lesson(tmp_path_factory):
    """A two-cell notebook executed in a fresh kernel (from a fresh interpreter, which also owns the kernel's
    sockets), with the platform of this test run recorded."""
    folder = tmp_path_factory.mktemp("lesson")
    path = folder / "lesson.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in LESSON]), path)
    subprocess.run([sys.executable, "-c", EXECUTE, str(path), str(folder)], check=True, capture_output=True,
                   timeout=300)
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[1].outputs[0].text == f"accuracy 0.700\n{CLAIM_PREFIX}accuracy >= 0.5: yes\n"
    return nb


def _variant(nb, *, foreign=False, stored_accuracy=None, accuracy=None, raises=False):
    nb = copy.deepcopy(nb)
    if foreign:
        nb.metadata["mmcourse"][PLATFORM_KEY]["torch"] = "0.0-another-build"
    if stored_accuracy is not None:
        output = nb.cells[1].outputs[0]
        output.text = output.text.replace("0.700", stored_accuracy)
    if accuracy is not None:
        nb.cells[0].source = nb.cells[0].source.replace("0.7", accuracy)
    if raises:
        nb.cells[1].source = 'raise RuntimeError("a broken lesson")\n' + nb.cells[1].source
    return nb


def _run_pytest(folder, env_extra=None) -> dict[str, str]:
    """Run pytest (with the course's plugin) on every notebook in ``folder``; return notebook → passed/failed."""
    report = folder / "report.xml"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "mmcourse.dev.nbcheck", "-o", "addopts=",
               "--nbval-current-env", "--nbval-sanitize-with", str(REPO_ROOT / "tests" / "sanitize.cfg"),
               "--rootdir", str(folder), f"--junitxml={report}", str(folder)]
    env = {k: v for k, v in os.environ.items() if k != MODE_VARIABLE} | (env_extra or {})
    subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    results: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("classname", "").removesuffix(".ipynb").replace("/", ".").split(".")[-1]
        failed = case.find("failure") is not None or case.find("error") is not None
        if failed or name not in results:
            results[name] = "failed" if failed else "passed"
    return results


def test_a_changed_float_fails_only_the_exact_check_and_broken_lessons_fail_both(executed_lesson, tmp_path):
    variants = {
        "good": _variant(executed_lesson),
        "float_here": _variant(executed_lesson, stored_accuracy="0.650"),
        "float_foreign": _variant(executed_lesson, foreign=True, stored_accuracy="0.650"),
        "claim_fails_foreign": _variant(executed_lesson, foreign=True, accuracy="0.3"),
        "raises_foreign": _variant(executed_lesson, foreign=True, raises=True),
    }
    for name, nb in variants.items():
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    results = _run_pytest(tmp_path)
    assert results == {"good": "passed", "float_here": "failed", "float_foreign": "passed",
                       "claim_fails_foreign": "failed", "raises_foreign": "failed"}, results


def test_a_forced_mode_overrides_the_platform(executed_lesson, tmp_path):
    nbformat.write(_variant(executed_lesson, stored_accuracy="0.650"), tmp_path / "float_claims.ipynb")
    assert _run_pytest(tmp_path, {MODE_VARIABLE: "claims"}) == {"float_claims": "passed"}
    nbformat.write(_variant(executed_lesson, foreign=True, accuracy="0.3"), tmp_path / "float_claims.ipynb")
    assert _run_pytest(tmp_path, {MODE_VARIABLE: "claims"}) == {"float_claims": "failed"}


def test_chapter_1_passes_under_another_cpus_kernels(tmp_path):
    """The README's promise: on a processor whose kernels differ, the chapter's claims are checked, and hold."""
    chapter = REPO_ROOT / "notebooks" / "01_overview.ipynb"
    (tmp_path / chapter.name).write_bytes(chapter.read_bytes())
    assert _run_pytest(tmp_path, {"ATEN_CPU_CAPABILITY": "default"}) == {"01_overview": "passed"}
