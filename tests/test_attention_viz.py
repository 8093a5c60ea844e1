"""Cross-attention heat-maps: weights → grids, attention mass on a region, the figure."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mmcourse.labs.ch03_architectures import (
    attention_mass,
    build_fusion_model,
    patch_heatmaps,
    show_word_attention,
    upsample_heatmap,
    word_patch_attention,
)


def test_patch_heatmaps_reshape_row_major_and_average_heads():
    weights = torch.zeros(1, 2, 3, 4)  # B=1, H=2, L=3, N=4 (2x2 grid)
    weights[0, 0, :, 1] = 1.0  # head 0 looks at patch 1 = row 0, column 1
    weights[0, 1, :, 2] = 1.0  # head 1 looks at patch 2 = row 1, column 0
    maps = patch_heatmaps(weights)
    assert maps.shape == (1, 3, 2, 2)
    assert maps[0, 0, 0, 1] == 0.5 and maps[0, 0, 1, 0] == 0.5
    one = patch_heatmaps(weights, head=1)
    assert one[0, 2, 1, 0] == 1.0 and one.sum() == 3.0


def test_patch_heatmaps_rejects_non_square_grids_and_bad_heads():
    with pytest.raises(ValueError, match="square grid"):
        patch_heatmaps(torch.rand(1, 2, 3, 5))
    with pytest.raises(ValueError, match="head"):
        patch_heatmaps(torch.rand(1, 2, 3, 4), head=2)
    with pytest.raises(ValueError, match="4-D"):
        patch_heatmaps(torch.rand(2, 3, 4))


def test_upsample_heatmap_repeats_cells():
    heat = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    up = upsample_heatmap(heat, 4)
    assert up.shape == (4, 4)
    assert up[0, 0] == up[1, 1] == 1.0 and up[0, 3] == 2.0 and up[3, 0] == 3.0
    with pytest.raises(ValueError):
        upsample_heatmap(heat, 5)


def test_attention_mass_counts_the_share_of_each_patch_in_the_region():
    heat = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])  # half on each top patch
    region = torch.zeros(1, 4, 4)
    region[0, :2, :2] = 1.0  # the whole top-left patch
    region[0, 0, 2:] = 1.0  # half of the top-right patch
    mass = attention_mass(heat, region)
    torch.testing.assert_close(mass, torch.tensor([0.5 * 1.0 + 0.5 * 0.5]))
    with pytest.raises(ValueError, match="batch size"):
        attention_mass(heat, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="divide"):
        attention_mass(heat, torch.zeros(1, 5, 5))


def test_word_patch_attention_from_a_cross_attention_classifier():
    torch.manual_seed(0)
    model = build_fusion_model("cross", vocab_size=20, image_size=16, patch_size=4, dim=16, max_len=6)
    images = torch.rand(3, 3, 16, 16)
    ids = torch.randint(7, 20, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1, 4:] = 0
    model.train()
    maps = word_patch_attention(model, images, ids, mask, layer=0)
    assert maps.shape == (3, 6, 4, 4)
    torch.testing.assert_close(maps.sum(dim=(-1, -2)), torch.ones(3, 6), atol=1e-5, rtol=0)
    assert model.training  # the mode is restored
    last = word_patch_attention(model, images, ids, mask, layer=-1, head=0)
    assert last.shape == (3, 6, 4, 4)
    with pytest.raises(ValueError, match="layer"):
        word_patch_attention(model, images, ids, mask, layer=2)


def test_show_word_attention_draws_one_panel_per_word():
    heat = torch.rand(5, 4, 4)
    heat = heat / heat.sum(dim=(1, 2), keepdim=True)
    fig = show_word_attention(torch.rand(3, 16, 16), heat, ["[CLS]", "a", "red", "circle", "[EOS]"], [2, 3],
                              title="test")
    assert len(fig.axes) == 3
    assert fig.axes[1].get_title() == '"red"'
    plt.close(fig)
    with pytest.raises(ValueError, match="words"):
        show_word_attention(torch.rand(3, 16, 16), heat, ["a"], [0])
    with pytest.raises(ValueError, match="positions"):
        show_word_attention(torch.rand(3, 16, 16), heat, ["w"] * 5, [7])
