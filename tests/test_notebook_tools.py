"""The maintainer pipeline: stamping, sanitizing, executing and checking notebooks."""

import nbformat
import pytest

from mmcourse.dev import notebooks as nbt

URL = "https://github.com/example/course"


def _nb(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_repository_url_comes_from_pyproject():
    url = nbt.repository_url()
    assert url.startswith("https://github.com/") and not url.endswith("/")
    assert url in (nbt.REPO_ROOT / "pyproject.toml").read_text()


def test_stamp_inserts_badge_and_setup_then_is_idempotent():
    nb = _nb("import mmcourse")
    assert nbt.stamp_problems(nb, "notebooks/01_x.ipynb", URL)
    assert nbt.stamp_notebook(nb, "notebooks/01_x.ipynb", URL) is True
    assert nbt.stamp_problems(nb, "notebooks/01_x.ipynb", URL) == []
    assert "example/course/blob/main/notebooks/01_x.ipynb" in nb.cells[0].source
    assert nb.cells[1].source.startswith("# NBVAL_SKIP\n")
    assert f"git+{URL}" in nb.cells[1].source
    assert nbt.stamp_notebook(nb, "notebooks/01_x.ipynb", URL) is False
    assert len(nb.cells) == 3 and nb.cells[2].source == "import mmcourse"


def test_stamp_detects_and_fixes_a_stale_url():
    nb = _nb("x = 1")
    nbt.stamp_notebook(nb, "notebooks/01_x.ipynb", "https://github.com/old/place")
    problems = nbt.stamp_problems(nb, "notebooks/01_x.ipynb", URL)
    assert "the Colab badge points to the wrong URL" in problems and "the setup cell is out of date" in problems
    assert nbt.stamp_notebook(nb, "notebooks/01_x.ipynb", URL) is True
    assert nbt.stamp_problems(nb, "notebooks/01_x.ipynb", URL) == [] and len(nb.cells) == 3


def test_badge_rejects_a_non_github_url():
    with pytest.raises(ValueError, match="github.com/OWNER/NAME"):
        nbt.badge_source("notebooks/a.ipynb", "https://example.org/x")


def test_setup_cell_is_valid_python_and_does_nothing_off_colab():
    src = nbt.setup_source(URL)
    compile(src, "<setup>", "exec")
    namespace = {}
    exec(src, namespace)
    assert namespace["IN_COLAB"] is False


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("<Figure size 640x480 with 1 Axes at 0x7f3a2b1c9d00>", "<Figure size 640x480 with 1 Axes at 0xADDRESS>"),
        ("100%|██████████| 300/300 [00:12<00:00, 24.01it/s]", "PROGRESS-BAR"),
        ("trained in 12.3 s", "trained in DURATION"),
        ("latency 4.20 ms, 2.1x faster", "latency DURATION, Nx faster-or-slower"),
        ("0.98x slower than fp32", "Nx faster-or-slower than fp32"),  # timing noise can flip a ratio near 1
        ("device: cuda:0", "device: DEVICE"),
        ("accuracy 0.997, size 3.6x smaller", "accuracy 0.997, size 3.6x smaller"),
    ],
)
def test_sanitize_file_patterns(raw, expected):
    assert nbt.sanitize(raw, nbt.sanitize_patterns()) == expected


def test_chapter_notebooks_rejects_non_notebooks(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="expected a notebook"):
        nbt.chapter_notebooks([tmp_path / "a.txt"])


def test_execute_write_and_check_round_trip(tmp_path):
    """Executing twice gives identical compared outputs; a changed result is reported as a difference."""
    path = tmp_path / "01_demo.ipynb"
    nb = _nb("import os\nprint(os.environ['OMP_NUM_THREADS'], os.environ['HF_HUB_OFFLINE'])", "1 + 1")
    nbt.write_notebook(nb, path)
    assert nbt.main(["execute", str(path)]) == 0
    stored = nbt.read_notebook(path)
    assert stored.cells[0].outputs[0].text == "1 1\n"
    assert stored.cells[1].outputs[0].data["text/plain"] == "2"
    assert [c.execution_count for c in stored.cells] == [1, 2]
    assert path.stat().st_mode & 0o777 == 0o644  # the atomic write keeps a normal file mode
    assert "execution" not in stored.cells[0].metadata  # no timestamps: stable diffs
    assert nbt.main(["execute", "--check", str(path)]) == 0

    stored.cells[1].outputs[0].data["text/plain"] = "3"
    nbt.write_notebook(stored, path)
    before = path.read_bytes()
    assert nbt.main(["execute", "--check", str(path)]) == 1
    assert path.read_bytes() == before  # --check never writes


def test_a_failing_notebook_is_reported_and_not_overwritten(tmp_path, capsys):
    path = tmp_path / "02_broken.ipynb"
    nbt.write_notebook(_nb("raise RuntimeError('boom')"), path)
    before = path.read_bytes()
    assert nbt.main(["execute", str(path)]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert path.read_bytes() == before
