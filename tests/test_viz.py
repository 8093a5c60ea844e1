"""Plotting functions for ShapesWorld: each returns a Figure with the expected panels and rejects bad input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mmcourse import viz  # noqa: E402
from mmcourse.data import COLORS, NEGATIVE_KINDS, SHAPES, ShapesWorld  # noqa: E402


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(20, image_size=16, max_objects=2, seed=0, audio=True)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def drawn_images(fig):
    return [ax for ax in fig.axes if ax.images]


def test_show_scenes_world_with_captions(world):
    fig = viz.show_scenes(world, indices=[0, 3, 5], ncols=2)
    assert isinstance(fig, Figure)
    axes = drawn_images(fig)
    assert len(axes) == 3
    assert [ax.get_title().replace("\n", " ") for ax in axes] == [world.captions[i] for i in (0, 3, 5)]
    assert axes[1].images[0].get_array().shape == (16, 16, 3)


def test_show_scenes_tensor_and_custom_captions(world):
    fig = viz.show_scenes(world.images[:4], captions=["p", "q", "r", "s"])
    assert [ax.get_title() for ax in drawn_images(fig)] == ["p", "q", "r", "s"]
    fig = viz.show_scenes(world.images[0], captions=False)
    assert len(drawn_images(fig)) == 1 and drawn_images(fig)[0].get_title() == ""
    assert len(drawn_images(viz.show_scenes(world))) == 16


def test_show_palette_has_every_colour_and_shape():
    fig = viz.show_palette(24)
    axes = drawn_images(fig)
    assert len(axes) == len(COLORS) * len(SHAPES)
    assert [ax.get_title() for ax in axes[: len(SHAPES)]] == list(SHAPES)
    assert [ax.get_ylabel() for ax in axes[:: len(SHAPES)]] == list(COLORS)


def test_show_vqa_and_negatives(world):
    index = next(i for i in range(len(world)) if world.num_objects[i] == 2)
    fig = viz.show_vqa(world, index)
    text = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert all(q["question"] in text for q in world.questions(index))
    fig = viz.show_negatives(world, index)
    text = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert world.captions[index] in text
    assert all(world.negative(index, k) in text for k in NEGATIVE_KINDS if world.negative(index, k))


def test_show_spectrogram(world):
    fig = viz.show_spectrogram(world, 1)
    assert isinstance(fig, Figure)
    image_axes = drawn_images(fig)
    assert len(image_axes) == 2  # the scene and the spectrogram
    assert image_axes[1].images[0].get_array().shape == tuple(world.spectrograms[1].shape)
    assert any(ax.lines for ax in fig.axes)  # the waveform
    bare = viz.show_spectrogram(torch.randn(32, 20))
    assert len(drawn_images(bare)) == 1 and not any(ax.lines for ax in bare.axes)


def test_viz_bad_input(world):
    with pytest.raises(TypeError, match=r"world_or_images must be a ShapesWorld or an image tensor, got list"):
        viz.show_scenes([1, 2])
    with pytest.raises(ValueError, match=r"captions must be True, False or 2 str"):
        viz.show_scenes(world, indices=[0, 1], captions=["only one"])
    with pytest.raises(ValueError, match=r"indices must be ints in \[0, 20\), got 20"):
        viz.show_scenes(world, indices=[20])
    with pytest.raises(ValueError, match=r"audio=True, got audio=False"):
        viz.show_spectrogram(ShapesWorld(2, 16, seed=0))
    with pytest.raises(ValueError, match=r"kinds must be names from .*'typo'"):
        viz.show_negatives(world, 0, kinds=["typo"])
    with pytest.raises(ValueError, match=r"index must be in \[0, 20\), got 99"):
        viz.show_vqa(world, 99)
