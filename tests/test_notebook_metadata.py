"""Every notebook of the course — chapters, student exercise notebooks and their masters — names its kernel in full.

JupyterLab copies the running kernel's ``language_info`` into a notebook when the kernel starts. A notebook that
stores only part of it (``{"name": "python"}``) is thereby changed as soon as it is opened, and JupyterLab asks to
save it on close although the student changed nothing. The chapters are executed, so their metadata is the
kernel's own; the exercise notebooks are generated and get the same block from ``authoring.LANGUAGE_INFO``.
"""

from pathlib import Path

import nbformat
import pytest

from mmcourse.grading.authoring import KERNELSPEC, LANGUAGE_INFO

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STUDENT = sorted((ROOT / "exercises").glob("ex[0-9][0-9]_*.ipynb"))
MASTERS = sorted((ROOT / "exercises" / "instructor" / "masters").glob("ex[0-9][0-9]_*.ipynb"))
ALL = CHAPTERS + STUDENT + MASTERS
#: What ipykernel reports for a Python kernel (``language_info`` of its kernel_info reply).
LANGUAGE_KEYS = {"name", "version", "mimetype", "file_extension", "pygments_lexer", "codemirror_mode",
                 "nbconvert_exporter"}


def _metadata(path: Path) -> dict:
    return nbformat.read(str(path), as_version=4).metadata


def test_there_are_notebooks_of_each_kind():
    assert CHAPTERS and STUDENT and MASTERS
    assert len(STUDENT) == len(MASTERS)


@pytest.mark.parametrize("path", ALL, ids=[p.relative_to(ROOT).as_posix() for p in ALL])
def test_kernelspec_and_language_info_are_complete(path):
    metadata = _metadata(path)
    kernelspec = metadata.get("kernelspec", {})
    assert {"name", "display_name", "language"} <= set(kernelspec), f"{path.name}: kernelspec {kernelspec}"
    assert kernelspec["name"] == "python3" and kernelspec["language"] == "python", path.name
    info = metadata.get("language_info", {})
    missing = LANGUAGE_KEYS - set(info)
    assert not missing, f"{path.name}: language_info lacks {sorted(missing)}"
    assert info["name"] == "python" and info["mimetype"] == "text/x-python" and info["file_extension"] == ".py"
    assert info["pygments_lexer"] == "ipython3" and info["nbconvert_exporter"] == "python"
    assert info["codemirror_mode"] == {"name": "ipython", "version": 3}
    assert all(part.isdigit() for part in info["version"].split(".")), f"{path.name}: version {info['version']!r}"


@pytest.mark.parametrize("path", STUDENT + MASTERS, ids=[p.relative_to(ROOT).as_posix() for p in STUDENT + MASTERS])
def test_exercise_notebooks_store_the_generators_block(path):
    metadata = _metadata(path)
    assert metadata["kernelspec"] == KERNELSPEC, path.name
    assert metadata["language_info"] == LANGUAGE_INFO, f"{path.name}: run `mmcourse exercises generate`"


def test_the_generators_block_is_the_chapters_one():
    """The same kernel as the executed chapters (their Python's major.minor; the patch level may move)."""
    for path in CHAPTERS:
        info = _metadata(path)["language_info"]
        assert {k: v for k, v in info.items() if k != "version"} == {
            k: v for k, v in LANGUAGE_INFO.items() if k != "version"
        }, path.name
        assert info["version"].split(".")[:2] == LANGUAGE_INFO["version"].split(".")[:2], (
            f"{path.name} was executed with Python {info['version']}, the exercise notebooks say "
            f"{LANGUAGE_INFO['version']}: update authoring.LANGUAGE_INFO and regenerate"
        )


def test_the_generator_writes_the_block(tmp_path):
    from mmcourse.grading.authoring import student_notebook

    master = nbformat.read(str(MASTERS[0]), as_version=4)
    master.metadata["language_info"] = {"name": "python"}  # an old master: the generator still writes it in full
    nb = student_notebook(master, notebook_relpath=f"exercises/{MASTERS[0].name}")
    assert nb.metadata["language_info"] == LANGUAGE_INFO
    assert nb.metadata["language_info"] is not LANGUAGE_INFO  # a copy: editing one notebook cannot change the rest
