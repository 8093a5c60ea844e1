"""Test configuration: nbval's collection rules for this repository.

The reference environment every test runs in, and how the chapter notebooks under ``notebooks/`` are checked
(exactly on the platform their outputs were made on, by their claim lines elsewhere), come from the pytest plugin
``mmcourse.dev.nbcheck`` (loaded by pyproject's ``-p mmcourse.dev.nbcheck``). Outputs are compared through
``tests/sanitize.cfg``, including ``stderr``: a warning that appears in a notebook is a defect to fix (or silence
deliberately in the notebook), not noise to skip. Only PNG images and widget views are not compared (nbval's own
choice; figures are stored as PNG).
"""

# Notebooks used as grader fixtures are inputs to tests, not notebooks to validate.
collect_ignore_glob = ["tests/fixtures/*", "exercises/*"]
