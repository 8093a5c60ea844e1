"""Test configuration: nbval's collection rules for this repository.

The reference environment every test runs in, and how the chapter notebooks under ``notebooks/`` are checked
(exactly on the platform their outputs were made on, by their claim lines elsewhere), come from the pytest plugin
``mmcourse.dev.nbcheck`` (loaded by pyproject's ``-p mmcourse.dev.nbcheck``). Outputs are compared through
``tests/sanitize.cfg``, including ``stderr``: a warning that appears in a notebook is a defect to fix (or silence
deliberately in the notebook), not noise to skip. Only PNG images and widget views are not compared (nbval's own
choice; figures are stored as PNG).
"""

import hashlib
import tempfile
from pathlib import Path

import pytest

try:
    import fcntl
except ImportError:  # Windows: no file locks here, the files below may overlap
    fcntl = None

# Notebooks used as grader fixtures are inputs to tests, not notebooks to validate.
collect_ignore_glob = ["tests/fixtures/*", "exercises/*"]

# The browser test (a JupyterLab server, a kernel running chapter 1 and Chromium) would load the 2-core reference
# machine beside chapter 8's timings (its claims compare two timings) and beside the grader's time-limited kernels.
# Each test of these files holds one lock shared by the xdist workers while it runs, so they never overlap; the rest
# of the suite runs beside them as usual.
SERIAL_FILES = ("tests/test_browser.py", "tests/test_grading_grader.py", "notebooks/08_practice.ipynb")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if fcntl is None or item.nodeid.split("::", 1)[0] not in SERIAL_FILES:
        yield
        return
    key = hashlib.sha1(str(item.config.rootpath).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"mmcourse-serial-tests-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
