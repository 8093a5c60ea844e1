"""Test configuration: the reference environment for every test, and nbval's collection rules.

Chapter notebooks under ``notebooks/`` are collected by nbval in strict mode (``--nbval``, see pyproject.toml) and
compared through ``tests/sanitize.cfg``. We keep nbval's defaults for what is compared, including ``stderr``: a
warning that appears in a notebook is a defect to fix (or silence deliberately in the notebook), not noise to skip.
Only PNG images and widget views are not compared (nbval's own choice; figures are stored as PNG).
"""

import os

from mmcourse.notebooks import REFERENCE_ENV  # noqa: E402  (mmcourse.notebooks imports nothing heavy first)

# The same environment the stored outputs were produced in: offline, one thread per kernel, CPU only.
# MMCOURSE_TEST_GPU=1 keeps GPUs visible (for running the suite on a GPU machine; outputs may then differ).
for _key, _value in REFERENCE_ENV.items():
    if _key == "CUDA_VISIBLE_DEVICES" and os.environ.get("MMCOURSE_TEST_GPU") == "1":
        continue
    os.environ[_key] = _value

# Notebooks used as grader fixtures are inputs to tests, not notebooks to validate.
collect_ignore_glob = ["tests/fixtures/*", "exercises/*"]
