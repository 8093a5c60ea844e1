"""mmcourse: a hands-on course on multimodal AI (vision + language).

``import mmcourse`` is light: it imports nothing heavy until a function needs it. Heavier pieces (transformers in
:mod:`mmcourse.hf`, matplotlib in :mod:`mmcourse.viz`, ipywidgets in :mod:`mmcourse.viz.widgets`) are imported by
the modules that need them.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__version__ = "0.1.0"

__all__ = ["__version__", "setup", "pick_device"]


def pick_device() -> torch.device:
    """The best available device: ``cuda`` > ``mps`` > ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup(seed: int = 0, *, deterministic: bool = True, device: str | torch.device | None = None) -> torch.device:
    """Seed python, numpy and torch, make results reproducible, and return the device to use.

    Call it first in every notebook: ``device = mmcourse.setup(0)``.

    Args:
        seed: the seed for ``random``, ``numpy`` and ``torch`` (all devices).
        deterministic: ask torch for deterministic algorithms (``warn_only``, so ops without a deterministic
            version still run) and disable cuDNN autotuning.
        device: force a device (``"cpu"``, ``"cuda"``...); by default :func:`pick_device` chooses.
    Returns:
        the ``torch.device`` notebooks should move models and tensors to.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (seeding the legacy global RNG is the point here)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode also fills every new uninitialised tensor with NaN, a debugging aid that costs time
        # on every allocation (1.6x on chapter 8's INT8 layers); the course never reads uninitialised memory.
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=110)
    np.set_printoptions(precision=4, suppress=True, linewidth=110)
    return torch.device(device) if device is not None else pick_device()
