"""PCA in plain torch (chapter 2's before/after plots)."""

import pytest
import torch

from mmcourse.viz.pca import PCA, fit_pca, pca_project, pca_transform


def _data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    # variance 9, 4, 1, 0.01 along four orthogonal directions, rotated
    latent = torch.randn(n, 4, generator=g) * torch.tensor([3.0, 2.0, 1.0, 0.1])
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    return latent @ rotation.t() + torch.tensor([5.0, -1.0, 0.0, 2.0]), rotation


def test_components_recover_the_directions_of_largest_variance():
    x, rotation = _data()
    pca = fit_pca(x, k=2)
    assert isinstance(pca, PCA)
    assert pca.components.shape == (2, 4)
    torch.testing.assert_close(pca.components @ pca.components.t(), torch.eye(2), atol=1e-5, rtol=0)
    for i in range(2):  # each component is (up to sign) the i-th rotated axis
        assert abs(float(pca.components[i] @ rotation[:, i])) > 0.98
    assert pca.explained_variance[0] > pca.explained_variance[1]
    assert 0.85 < float(pca.explained_variance_ratio.sum()) < 1.0


def test_matches_centered_covariance_eigen_decomposition():
    x, _ = _data(seed=1)
    pca = fit_pca(x, k=3)
    cov = torch.cov(x.t().double())
    eigenvalues = torch.linalg.eigvalsh(cov).flip(0)[:3]
    torch.testing.assert_close(pca.explained_variance.double(), eigenvalues, atol=1e-4, rtol=1e-4)


def test_projection_is_centered_and_uncorrelated():
    x, _ = _data(seed=2)
    points, pca = pca_project(x, k=2)
    assert points.shape == (200, 2)
    torch.testing.assert_close(points.mean(0), torch.zeros(2), atol=1e-4, rtol=0)
    cov = torch.cov(points.t())
    assert abs(float(cov[0, 1])) < 1e-3
    torch.testing.assert_close(pca_transform(x, pca), points)


def test_signs_are_fixed_so_results_do_not_flip():
    x, _ = _data(seed=3)
    a, b = fit_pca(x, 2), fit_pca(-x + 0.0, 2)  # negating the data flips the SVD signs
    for comp in (a.components, b.components):
        largest = comp.abs().argmax(dim=1)
        assert (comp[torch.arange(2), largest] > 0).all()
    torch.testing.assert_close(a.components, b.components, atol=1e-5, rtol=0)


def test_deterministic_and_keeps_dtype():
    x, _ = _data(seed=4)
    assert torch.equal(fit_pca(x).components, fit_pca(x).components)
    assert fit_pca(x).components.dtype == torch.float32
    assert fit_pca(x.double()).components.dtype == torch.float64


@pytest.mark.parametrize(
    "x, k, error",
    [
        (torch.randn(5), 1, ValueError),
        (torch.randn(1, 4), 1, ValueError),
        (torch.randn(10, 3), 4, ValueError),
        (torch.randn(10, 3), 0, ValueError),
        (torch.randint(0, 3, (10, 3)), 2, TypeError),
        (torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]), 1, ValueError),
    ],
)
def test_bad_inputs(x, k, error):
    with pytest.raises(error):
        fit_pca(x, k)


def test_transform_checks_width_and_type():
    x, _ = _data()
    pca = fit_pca(x)
    with pytest.raises(ValueError, match="4 columns"):
        pca_transform(torch.randn(3, 5), pca)
    with pytest.raises(TypeError, match="PCA"):
        pca_transform(x, (1, 2))
