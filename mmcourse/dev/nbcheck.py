"""pytest plugin: the chapter notebooks re-executed by nbval, checked exactly or by their claims.

Loaded by ``-p mmcourse.dev.nbcheck`` (pyproject's pytest options). It

- sets the reference environment (:data:`mmcourse.dev.notebooks.REFERENCE_ENV`; the CPU pins of
  :data:`mmcourse.dev.notebooks.CPU_PINS` unless the environment already sets them) before anything imports torch;
- collects every notebook pytest is given as an nbval notebook that decides, per notebook, how its stored outputs
  are checked (:func:`mmcourse.dev.notebooks.check_mode`):

  - **exact** on the platform the outputs were made on (recorded in the notebook by ``execute``): every output,
    through ``tests/sanitize.cfg``, as nbval does;
  - **claims** anywhere else (another CPU family, a GPU, other versions): only the claim lines
    (:mod:`mmcourse.labs.common`) are compared, through ``tests/sanitize_claims.cfg`` on top, and stderr is not
    compared;
    a cell that raises or a claim that prints ``NO`` fails as before.

  ``MMCOURSE_NOTEBOOK_CHECK=exact`` or ``=claims`` forces a mode;
- prints each notebook's mode at the start of the run.

``pytest --nbval`` bypasses it (plain nbval, every output compared).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mmcourse.dev.notebooks import (
    CPU_PINS,
    MODE_VARIABLE,
    REFERENCE_ENV,
    REPO_ROOT,
    check_mode,
    platform_fingerprint,
    stored_platform,
)

__all__ = [
    "CLAIMS_SANITIZE_FILE", "apply_reference_env", "current_platform", "notebook_mode", "pytest_configure",
    "pytest_collect_file", "pytest_report_header",
]

CLAIMS_SANITIZE_FILE = REPO_ROOT / "tests" / "sanitize_claims.cfg"
_platform: dict[str, str] | None = None


def apply_reference_env() -> None:
    """Set the reference environment in ``os.environ``. ``MMCOURSE_TEST_GPU=1`` keeps GPUs visible (outputs may then
    differ: the notebooks are checked by their claims)."""
    for key, value in REFERENCE_ENV.items():
        if key == "CUDA_VISIBLE_DEVICES" and os.environ.get("MMCOURSE_TEST_GPU") == "1":
            continue
        os.environ[key] = value
    for key, value in CPU_PINS.items():
        os.environ.setdefault(key, value)


def current_platform() -> dict[str, str]:
    """:func:`~mmcourse.dev.notebooks.platform_fingerprint` of this test run (computed once)."""
    global _platform
    if _platform is None:
        _platform = platform_fingerprint()
    return _platform


def notebook_mode(path: Path) -> tuple[str, str]:
    """``(mode, reason)`` for the notebook at ``path`` in this test run."""
    stored = stored_platform(json.loads(Path(path).read_text(encoding="utf-8")))
    return check_mode(stored, current_platform(), os.environ.get(MODE_VARIABLE) or None)


def pytest_configure(config) -> None:
    apply_reference_env()


def _checks_notebooks(config) -> bool:
    return not (config.option.nbval or config.option.nbval_lax)


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".ipynb" and _checks_notebooks(parent.config):
        return _notebook_class().from_parent(parent, path=file_path)
    return None


def pytest_report_header(config, start_path):
    if not _checks_notebooks(config):
        return None
    modes: dict[tuple[str, str], list[str]] = {}
    for path in sorted(Path(REPO_ROOT, "notebooks").glob("*.ipynb")):
        modes.setdefault(notebook_mode(path), []).append(path.stem)
    lines = []
    for (mode, reason), names in modes.items():
        what = "every output compared" if mode == "exact" else "claim lines and errors compared"
        lines.append(f"notebook check: {mode} ({what}) for {', '.join(names)}: {reason}")
    return lines


_class = None


def _notebook_class():
    """nbval's notebook collector with the check mode (built on first use: nbval is a test-only dependency)."""
    global _class
    if _class is None:
        from nbval.plugin import IPyNbFile

        class CourseNotebook(IPyNbFile):
            """A notebook whose stored outputs are checked in :func:`notebook_mode`'s mode."""

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.check_mode, self.check_reason = notebook_mode(Path(str(self.path)))
                if self.check_mode == "claims":
                    self.skip_compare = (*self.skip_compare, "stderr")

            def get_sanitize_files(self):
                files = list(super().get_sanitize_files())
                if self.check_mode == "claims":
                    files.append(str(CLAIMS_SANITIZE_FILE))
                return files

        _class = CourseNotebook
    return _class
