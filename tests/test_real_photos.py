"""Tests of mmcourse.data.photos: eight real photos shipped inside scikit-image's and scikit-learn's wheels."""

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmcourse.data import Photo, photos, photos_to_tensor, real_photos

LICENCES = {"public domain", "CC0", "CC BY 2.0"}


@pytest.fixture(scope="module")
def shipped():
    return real_photos()


def test_at_least_eight_photos_with_captions_source_and_licence(shipped):
    assert len(shipped) >= 8
    assert len({p.name for p in shipped}) == len(shipped)
    for p in shipped:
        assert isinstance(p, Photo)
        assert p.licence in LICENCES, p
        assert p.credit and p.label
        assert 1 <= len(p.captions) <= 2 and all(c and c == c.strip() and len(c.split()) >= 4 for c in p.captions)
        package, file = p.source.split(": ")
        assert package in ("scikit-image", "scikit-learn") and file.startswith(("skimage/", "sklearn/"))


def test_every_photo_is_a_file_listed_in_its_installed_wheel(shipped):
    """Shipped in the wheel (its RECORD), not fetched on first use by scikit-image's downloader."""
    for p in shipped:
        package, file = p.source.split(": ")
        listed = {f.as_posix() for f in importlib.metadata.files(package)}
        assert file in listed, f"{file} is not in the {package} wheel"
        assert Path(importlib.metadata.distribution(package).locate_file(file)).is_file()


def _skimage_docstring(file: str) -> str:
    import skimage.data

    return getattr(skimage.data, Path(file).stem).__doc__


def _sklearn_readme_block(file: str) -> str:
    readme = Path(importlib.metadata.distribution("scikit-learn").locate_file("sklearn/datasets/images/README.txt"))
    blocks = readme.read_text().split("Image: ")
    return next(block for block in blocks if block.startswith(Path(file).name))


def test_each_licence_is_the_one_its_package_states(shipped):
    for p in shipped:
        package, file = p.source.split(": ")
        if package == "scikit-image":
            text = " ".join(_skimage_docstring(file).split()).lower()
            wanted = {"public domain": "public domain", "CC0": "cc0"}[p.licence]
        else:
            text = _sklearn_readme_block(file)
            wanted = {"CC BY 2.0": "creativecommons.org/licenses/by/2.0/"}[p.licence]
        assert wanted in text, f"{p.name}: {p.licence!r} not stated for {file}"


def test_sizes_colour_and_aspect(shipped):
    from PIL import Image

    for p in shipped:
        assert p.image.mode == "RGB" and min(p.image.size) == 224
        package, file = p.source.split(": ")
        with Image.open(importlib.metadata.distribution(package).locate_file(file)) as original:
            ratio = original.width / original.height
        assert abs(p.image.width / p.image.height - ratio) < 0.01, p.name
        pixels = np.asarray(p.image, dtype=np.int16)  # (H, W, 3)
        spread = pixels.max(axis=2) - pixels.min(axis=2)  # 0 wherever a pixel is grey
        assert np.percentile(spread, 99) >= 40, f"{p.name} is not a colour photo"
    small = real_photos(size=64)
    assert all(min(p.image.size) == 64 for p in small)
    assert [p.captions for p in small] == [p.captions for p in shipped]


def test_photos_are_the_same_every_time(shipped):
    again = real_photos()
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(shipped, again))


@pytest.mark.parametrize("size", [8, 0, 224.0, True, "224"])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ValueError, match="size"):
        real_photos(size=size)


def test_photos_to_tensor(shipped):
    images = photos_to_tensor(shipped, 32)
    assert images.shape == (len(shipped), 3, 32, 32) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    cat = next(i for i, p in enumerate(shipped) if p.name == "cat")
    assert not torch.equal(images[0], images[cat])
    with pytest.raises(TypeError, match="photos"):
        photos_to_tensor([], 32)
    with pytest.raises(TypeError, match="photos"):
        photos_to_tensor(images, 32)
    with pytest.raises(ValueError, match="size"):
        photos_to_tensor(shipped, 0)


def test_a_missing_package_gives_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(photos.importlib.util, "find_spec", lambda name: None if name == "sklearn" else real(name))
    with pytest.raises(ModuleNotFoundError, match="pip install scikit-image scikit-learn"):
        real_photos()


def test_neither_package_is_imported():
    code = ("import sys, mmcourse.data as d; d.real_photos(size=32); "
            "print(sorted(m for m in ('skimage', 'sklearn', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
