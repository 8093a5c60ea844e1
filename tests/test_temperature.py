"""The temperature helpers: softmax directions, the share of the push on negatives, the sweep and its figures."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mmcourse.labs.ch04_contrastive import (
    effective_negatives,
    negative_weights,
    scaled_softmax,
    show_softmax_temperatures,
    show_temperature,
    show_temperature_sweep,
    show_template_accuracies,
    show_training,
    temperature_sweep,
)
from mmcourse.objectives.contrastive import contrastive_loss


@pytest.fixture
def features():
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(6, 16, generator=generator), dim=-1)
    texts = F.normalize(images + 0.5 * torch.randn(6, 16, generator=generator), dim=-1)
    return images, texts


def test_scaled_softmax_normalises_rows_or_columns(features):
    images, texts = features
    similarity = images @ texts.t()
    rows = scaled_softmax(similarity, 0.1)
    columns = scaled_softmax(similarity, 0.1, direction="text_to_image")
    torch.testing.assert_close(rows.sum(1), torch.ones(6))
    torch.testing.assert_close(columns.sum(0), torch.ones(6))
    torch.testing.assert_close(rows, torch.softmax(similarity * 10, dim=1))
    # a lower temperature sharpens: the largest probability of every row grows
    assert (scaled_softmax(similarity, 0.01).max(1).values >= rows.max(1).values).all()


def test_negative_weights_are_the_gradient_shares_of_the_negatives(features):
    images, texts = features
    similarity = (images @ texts.t()).requires_grad_(True)
    tau = 0.2
    weights = negative_weights(similarity.detach(), tau)
    assert (weights.diagonal() == 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(6))
    # image->text cross-entropy: dL_i/dS_ij = p_ij / tau for j != i, so the shares are the renormalised gradients
    loss = F.cross_entropy(similarity / tau, torch.arange(6), reduction="sum")
    (gradient,) = torch.autograd.grad(loss, similarity)
    off_diagonal = gradient.masked_fill(torch.eye(6, dtype=torch.bool), 0.0)
    torch.testing.assert_close(weights, off_diagonal / off_diagonal.sum(1, keepdim=True))


def test_effective_negatives_range_from_all_to_one():
    n = 5
    flat = torch.zeros(n, n)
    torch.testing.assert_close(effective_negatives(flat, 0.07), torch.full((n,), float(n - 1)))
    one_hard = torch.zeros(n, n)
    one_hard[torch.arange(n), (torch.arange(n) + 1) % n] = 0.9  # one similar negative per row
    assert (effective_negatives(one_hard, 0.01) < 1.001).all()
    high = effective_negatives(one_hard, 10.0)
    assert (high > n - 1.01).all() and (high <= n - 1 + 1e-6).all()


def test_sweep_matches_the_article_loss_and_the_analytic_gradient(features):
    images, texts = features
    similarity = images @ texts.t()
    temperatures = [1.0, 0.07, 0.01]
    sweep = temperature_sweep(similarity, temperatures)
    assert sweep["temperature"] == temperatures
    for j, t in enumerate(temperatures):
        assert sweep["loss"][j] == pytest.approx(float(contrastive_loss(images, texts, t)), rel=1e-5)
        logits = similarity.double() / t
        rows, columns = logits.softmax(1), logits.softmax(0)
        eye = torch.eye(6, dtype=torch.float64)
        analytic = ((rows - eye) + (columns - eye)) / (2 * 6 * t)  # d/dS of the mean of both cross-entropies
        assert sweep["gradient_norm"][j] == pytest.approx(float(analytic.norm()), rel=1e-6)
        assert sweep["positive_probability"][j] == pytest.approx(float(rows.diagonal().mean()), rel=1e-6)
    # the gradient grows like 1 / tau and fewer negatives share it
    assert sweep["gradient_norm"][0] < sweep["gradient_norm"][1] < sweep["gradient_norm"][2]
    assert sweep["effective_negatives"][0] > sweep["effective_negatives"][1] > sweep["effective_negatives"][2]
    # identical embeddings: log N at every temperature
    flat = temperature_sweep(torch.ones(6, 6), [1.0, 0.01])
    assert flat["loss"] == pytest.approx([math.log(6)] * 2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        scaled_softmax(torch.zeros(3, 3), 0.0)
    with pytest.raises(ValueError, match="direction must be one of"):
        scaled_softmax(torch.zeros(3, 3), 0.1, direction="rows")
    with pytest.raises(ValueError, match="similarity must be a square"):
        negative_weights(torch.zeros(3, 4), 0.1)
    with pytest.raises(TypeError, match="similarity must be a floating-point tensor"):
        effective_negatives(torch.zeros(3, 3, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="temperatures must be a non-empty sequence"):
        temperature_sweep(torch.zeros(3, 3), [])
    with pytest.raises(ValueError, match=r"temperatures\[...\] must be > 0"):
        temperature_sweep(torch.zeros(3, 3), [0.1, -1.0])
    with pytest.raises(ValueError, match="row must be an int"):
        show_temperature(torch.zeros(3, 3), 0.1, row=3)
    with pytest.raises(ValueError, match="image_labels must hold one string per row"):
        show_softmax_temperatures(torch.zeros(3, 3), [0.1], image_labels=["a", "b"])
    with pytest.raises(ValueError, match="sweeps must be a non-empty dict"):
        show_temperature_sweep({})
    with pytest.raises(ValueError, match="log must hold equally long"):
        show_training({"loss": [1.0, 0.5], "logit_scale": [14.3]})
    with pytest.raises(ValueError, match="evaluations must be a non-empty dict"):
        show_template_accuracies({})


def test_figures(features):
    images, texts = features
    similarity = images @ texts.t()
    labels = [f"caption {i}" for i in range(6)]
    fig = show_softmax_temperatures(similarity, [1.0, 0.07], labels, labels)
    assert len(fig.axes) == 5  # similarity, two softmax panels, two colour bars
    fig2 = show_temperature(similarity, 0.07, row=2, image_labels=labels, text_labels=labels)
    assert "temperature 0.07" in fig2._suptitle.get_text()
    fig3 = show_temperature_sweep({"random": temperature_sweep(similarity, [1.0, 0.1])}, mark=0.07)
    assert len(fig3.axes) == 3
    plt.close("all")


def test_training_figures():
    log = {"loss": [4.8, 3.0, 2.0, 1.5], "logit_scale": [14.3, 14.5, 15.0, 15.2]}
    fig = show_training(log, floor=0.6, window=2)
    loss_axis, scale_axis = fig.axes
    smoothed = loss_axis.lines[1].get_ydata()
    assert list(smoothed) == pytest.approx([4.8, 3.9, 2.5, 1.75])  # running mean over the last 2 steps
    assert list(scale_axis.lines[0].get_ydata()) == pytest.approx([1 / s for s in log["logit_scale"]])
    evaluations = {20: {"{}": 0.1, "a photo of {}": 0.2, "ensemble": 0.15}, 40: {"{}": 0.9, "a photo of {}": 0.8,
                                                                               "ensemble": 0.85}}
    fig2 = show_template_accuracies(evaluations, chance=1 / 24)
    assert len(fig2.axes[0].lines) == 4  # two templates, the ensemble, chance
    plt.close("all")
