"""Real photos that install with the course: eight colour photographs, each with captions, source and licence.

ShapesWorld is the course's world; a pretrained model (chapters 4, 6, 8) is best seen on real photographs. These
come inside the wheels of two course dependencies — scikit-image (``skimage/data``) and scikit-learn
(``sklearn/datasets/images``) — so nothing is downloaded at run time. Only files shipped in the wheels are used
(scikit-image fetches some other samples on first use: not those), and only photos whose licence the shipping
package states as public domain, CC0 or CC BY (its ``skimage.data`` docstrings and ``sklearn/datasets/images/
README.txt``). The captions were written for this course. The files are read with PIL; neither package is imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Photo", "real_photos", "photos_to_tensor"]

_PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn"}

# name, package, file in the package, zero-shot label, licence, credit, captions written for the course
_PHOTOS = (
    ("astronaut", "skimage", "data/astronaut.png", "astronaut", "public domain", "NASA (Eileen Collins)",
     ("an astronaut in an orange spacesuit smiling in front of an american flag",
      "a woman in an orange space suit with a helmet and a model space shuttle")),
    ("cat", "skimage", "data/chelsea.png", "cat", "CC0", "Stefan van der Walt",
     ("a close-up of a tabby cat with green eyes", "the face of a striped cat")),
    ("coffee", "skimage", "data/coffee.png", "coffee cup", "CC0", "Rachel Michetti",
     ("a cup of espresso on a red saucer with a spoon", "a small red coffee cup on a wooden table")),
    ("rocket", "skimage", "data/rocket.jpg", "rocket", "public domain", "SpaceX (DSCOVR on Falcon 9)",
     ("a rocket on its launch pad at dusk between tall towers", "a white rocket lit by floodlights before launch")),
    ("galaxies", "skimage", "data/hubble_deep_field.jpg", "galaxy", "public domain", "NASA (Hubble eXtreme Deep Field)",
     ("thousands of distant galaxies on a black sky", "a deep space image full of small colourful galaxies")),
    ("retina", "skimage", "data/retina.jpg", "retina", "CC0", "Mikael Häggström",
     ("a photograph of a human retina with red blood vessels",
      "the orange back of an eye with branching blood vessels and a bright spot")),
    ("pagoda", "sklearn", "datasets/images/china.jpg", "pagoda", "CC BY 2.0", "danielbuechele (Flickr)",
     ("a chinese pagoda with red pillars and green roofs above a lake",
      "a tall traditional tower among trees with a lake behind it")),
    ("dahlia", "sklearn", "datasets/images/flower.jpg", "flower", "CC BY 2.0", "vultilion (Flickr)",
     ("an orange dahlia in close-up", "a round orange flower against a dark green background")),
)


@dataclass(frozen=True, eq=False)
class Photo:
    """One photo: ``image`` an RGB ``PIL.Image`` (shorter side ``size`` px), ``label`` its class for zero-shot
    classification (``"cat"``), ``captions`` two sentences written for the course, ``source`` the package and file
    it comes from, ``licence`` and ``credit`` (the photographer or agency)."""

    name: str
    label: str
    captions: tuple[str, ...]
    image: object
    source: str
    licence: str
    credit: str


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds the installed package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"real_photos() reads photos shipped inside {_PACKAGES[package]}, which is not installed: "
            f"pip install {' '.join(_PACKAGES.values())} (both are dependencies of the course)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def real_photos(size: int = 224) -> list[Photo]:
    """The eight photos, each resized (bicubic) so that its shorter side is ``size`` px, aspect ratio kept.

    Raises:
        ModuleNotFoundError: scikit-image or scikit-learn is missing (the message says what to install).
    """
    from PIL import Image

    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    photos = []
    for name, package, file, label, licence, credit, captions in _PHOTOS:
        with Image.open(_package_dir(package) / file) as image:
            image = image.convert("RGB")
        scale = size / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        source = f"{_PACKAGES[package]}: {package}/{file}"
        photos.append(Photo(name, label, captions, image, source, licence, credit))
    return photos


def photos_to_tensor(photos: list[Photo], size: int) -> torch.Tensor:
    """The photos' centre squares at ``size`` × ``size`` px (bilinear, antialiased): ``(N, 3, size, size)`` float
    in ``[0, 1]`` — the input of the course's own models (ShapesWorld size, e.g. 32)."""
    import numpy as np
    from PIL import Image

    if not isinstance(photos, (list, tuple)) or not photos or not all(isinstance(p, Photo) for p in photos):
        raise TypeError("photos must be a non-empty list of Photo (from real_photos())")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    squares = []
    for photo in photos:
        width, height = photo.image.size
        side = min(width, height)
        box = ((width - side) // 2, (height - side) // 2, (width - side) // 2 + side, (height - side) // 2 + side)
        square = photo.image.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
        squares.append(np.asarray(square, dtype=np.float32) / 255)
    return torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2).contiguous()
