"""Chapter 7's shown code (cells tagged ``lesson``) agrees with the labs the chapter then runs repeatedly."""

import pytest
import torch
from lesson_code import lesson_namespace

from mmcourse.labs import ch07_sensor_fusion, ch07_sparsity
from mmcourse.train import seeded


@pytest.fixture(scope="module")
def ns():
    return lesson_namespace("07_challenges.ipynb")


def _images(n=6, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shown_flip_and_shift_is_the_labs_augmentation(ns, seed):
    images = _images(seed=seed)
    shown = ns["flip_and_shift"](images, torch.Generator().manual_seed(seed))
    lab = ch07_sparsity.augment_images(images, ["flip", "shift"], torch.Generator().manual_seed(seed))
    assert torch.equal(shown, lab)
    assert not torch.equal(shown, images)


@pytest.mark.parametrize("num_pairs, rate", [(8, 0.5), (36, 0.25), (108, 0.75), (10, 0.0), (5, 1.0)])
def test_shown_mismatch_is_corrupt_pairing(ns, num_pairs, rate):
    for seed in range(3):
        shown = ns["mismatch"](num_pairs, rate, torch.Generator().manual_seed(seed))
        lab = ch07_sparsity.corrupt_pairing(num_pairs, rate, torch.Generator().manual_seed(seed))
        assert torch.equal(shown, lab)


def test_shown_two_views_and_ssl_loss_are_the_labs(ns):
    images = _images(8)
    shown_views = ns["two_views"](images, torch.Generator().manual_seed(3))
    lab_views = ch07_sparsity.two_views(images, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(shown_views, lab_views))
    with seeded(0):
        model = ch07_sparsity.SSLPretrainer(16)
    model.train()
    shown = ns["ssl_loss"](model.encoder, model.head, images, torch.Generator().manual_seed(4))
    lab = ch07_sparsity.ssl_loss(model.encoder, model.head, images, torch.Generator().manual_seed(4))
    torch.testing.assert_close(shown, lab, rtol=0, atol=0)
    assert float(shown.detach()) > 0


def test_shown_inverse_variance_is_the_labs(ns):
    readings = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)) + 10
    for noise in ([1.0, 2.0, 0.5], torch.rand(50, 3, generator=torch.Generator().manual_seed(1)) + 0.2):
        torch.testing.assert_close(ns["inverse_variance"](readings, noise),
                                   ch07_sensor_fusion.fuse_inverse_variance(readings, noise))
