"""Principal component analysis in plain torch: a 2-D view of an embedding space (chapter 2, article §2.1).

Chapter 2 draws the shared image–text space before and after alignment. The embeddings live in ``D`` dimensions;
PCA finds the ``k`` orthogonal directions of largest variance and projects onto them. It is computed from the
singular value decomposition of the centred data, ``X - mean = U S Vᵀ``: the rows of ``Vᵀ`` are the principal
directions and ``S² / (N - 1)`` their variances.

The sign of a singular vector is arbitrary (``v`` and ``-v`` are equally valid), so :func:`fit_pca` fixes it —
the largest-magnitude loading of every component is made positive — and the same data always gives the same
picture.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mmcourse._checks import check_positive, check_tensor

__all__ = ["PCA", "fit_pca", "pca_transform", "pca_project"]


class PCA(NamedTuple):
    """A fitted PCA: ``mean`` ``(D,)``, ``components`` ``(k, D)`` (orthonormal rows), ``explained_variance``
    ``(k,)`` and ``explained_variance_ratio`` ``(k,)`` (fraction of the total variance each component keeps)."""

    mean: torch.Tensor
    components: torch.Tensor
    explained_variance: torch.Tensor
    explained_variance_ratio: torch.Tensor


def fit_pca(x: torch.Tensor, k: int = 2) -> PCA:
    """Fit a ``k``-component PCA to the rows of ``x``.

    Args:
        x: ``(N, D)`` floating tensor, ``N >= 2`` samples, finite.
        k: number of components, ``1 <= k <= min(N, D)``.
    Returns:
        a :class:`PCA` (computed in float64, returned in ``x``'s dtype); component signs are fixed so that each
        component's largest-magnitude loading is positive.
    """
    check_tensor(x, "x", ndim=2, floating=True, finite=True)
    check_positive(k, "k", integer=True)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"x must have at least 2 rows to measure variance, got shape {tuple(x.shape)}")
    if k > min(n, d):
        raise ValueError(f"k must be <= min(N, D) = {min(n, d)} for x of shape {tuple(x.shape)}, got k={k}")
    data = x.detach().to(torch.float64)
    mean = data.mean(dim=0)
    _, singular_values, vh = torch.linalg.svd(data - mean, full_matrices=False)
    components = vh[:k]
    # sign convention: the largest |loading| of each component is positive
    largest = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(k), largest])
    components = components * signs[:, None]
    variance = singular_values**2 / (n - 1)
    total = variance.sum()
    ratio = variance[:k] / total if total > 0 else torch.zeros(k, dtype=torch.float64)
    return PCA(mean.to(x.dtype), components.to(x.dtype), variance[:k].to(x.dtype), ratio.to(x.dtype))


def pca_transform(x: torch.Tensor, pca: PCA) -> torch.Tensor:
    """Project ``x`` ``(N, D)`` onto a fitted PCA: ``(x - mean) @ componentsᵀ`` → ``(N, k)``."""
    check_tensor(x, "x", ndim=2, floating=True)
    if not isinstance(pca, PCA):
        raise TypeError(f"pca must be a PCA from fit_pca, got {type(pca).__name__}")
    if x.size(1) != pca.mean.numel():
        raise ValueError(f"x must have {pca.mean.numel()} columns (the PCA's D), got shape {tuple(x.shape)}")
    mean = pca.mean.to(device=x.device, dtype=x.dtype)
    return (x.detach() - mean) @ pca.components.to(device=x.device, dtype=x.dtype).t()


def pca_project(x: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, PCA]:
    """Fit a PCA to ``x`` ``(N, D)`` and project it: returns ``(coordinates (N, k), pca)``."""
    pca = fit_pca(x, k)
    return pca_transform(x, pca), pca
