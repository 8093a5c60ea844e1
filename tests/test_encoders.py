"""Image/text encoders and projection heads: shapes, pooling rules, masking, parameter budgets, bad input."""

import pytest
import torch

from mmcourse.nn.encoders import (
    EncoderOutput,
    PatchEmbedding,
    ProjectionHead,
    SmallCNN,
    TextTransformer,
    TinyViT,
)


def test_patch_embedding_is_a_linear_map_of_each_patch():
    torch.manual_seed(0)
    embed = PatchEmbedding(image_size=8, patch_size=4, in_channels=3, dim=5)
    images = torch.rand(2, 3, 8, 8)
    out = embed(images)
    assert out.shape == (2, 4, 5) and embed.num_patches == 4
    # patch 1 (row 0, col 1) by hand: flatten the 3x4x4 pixels, apply the conv's weight as a matrix
    patch = images[:, :, 0:4, 4:8].reshape(2, -1)
    manual = patch @ embed.proj.weight.reshape(5, -1).T + embed.proj.bias
    torch.testing.assert_close(out[:, 1], manual, atol=1e-5, rtol=1e-5)


def test_tiny_vit_outputs_and_pooling():
    torch.manual_seed(0)
    vit = TinyViT(image_size=16, patch_size=4, dim=32, depth=1, num_heads=4).eval()
    out = vit(torch.rand(3, 3, 16, 16))
    assert isinstance(out, EncoderOutput)
    assert out.tokens.shape == (3, 16, 32) and out.pooled.shape == (3, 32) and vit.grid_size == 4
    mean_vit = TinyViT(image_size=16, patch_size=4, dim=32, depth=1, pool="mean").eval()
    tokens, pooled = mean_vit(torch.rand(2, 3, 16, 16))
    torch.testing.assert_close(pooled, tokens.mean(1))


def test_small_cnn_tokens_grid_and_parameter_budget():
    cnn = SmallCNN(width=16, dim=64, image_size=32).eval()
    tokens, pooled = cnn(torch.rand(2, 3, 32, 32))
    assert tokens.shape == (2, 16, 64) and pooled.shape == (2, 64) and cnn.grid_size == 4
    torch.testing.assert_close(pooled, tokens.mean(1))
    params = [sum(p.numel() for p in SmallCNN(width=w).parameters()) for w in (12, 16)]
    assert all(40_000 <= n <= 90_000 for n in params), params
    # without image_size it accepts any size divisible by 8
    assert SmallCNN(width=8)(torch.rand(1, 3, 24, 16)).tokens.shape == (1, 6, 64)
    tokens, pooled = SmallCNN(width=4, dim=8, pool="max", norm="group")(torch.rand(2, 3, 16, 16))
    torch.testing.assert_close(pooled, tokens.amax(1))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in SmallCNN(width=4, norm="none").modules())


def test_small_cnn_convolutions_per_block():
    def convs_at_each_resolution(cnn, size=32):
        x, counts = torch.rand(1, cnn.in_channels, size, size), {}
        for layer in cnn.features:
            if isinstance(layer, torch.nn.Conv2d):
                counts[x.shape[-1]] = counts.get(x.shape[-1], 0) + 1
            x = layer(x)
        return counts

    assert convs_at_each_resolution(SmallCNN(width=4, dim=8).eval()) == {32: 2, 16: 2, 8: 2}
    lean = SmallCNN(5, width=4, dim=8, image_size=32, convs=(1, 2, 2)).eval()
    assert lean.convs == (1, 2, 2) and convs_at_each_resolution(lean) == {32: 1, 16: 2, 8: 2}
    assert lean(torch.rand(2, 5, 32, 32)).tokens.shape == (2, 16, 8)
    # the default keeps its layer order, so weights saved from a default encoder still load
    assert list(SmallCNN(width=4, dim=8, convs=2).state_dict()) == list(SmallCNN(width=4, dim=8).state_dict())
    for bad in (0, (1, 2), (1, 0, 2), (1, 2, True), "2", 1.5):
        with pytest.raises(ValueError, match="convs must be an int >= 1 or three of them"):
            SmallCNN(convs=bad)


def test_text_transformer_pooling_rules():
    torch.manual_seed(0)
    ids = torch.tensor([[1, 7, 8, 5, 0, 0], [1, 9, 7, 8, 10, 5]])
    mask = (ids != 0).long()
    for pool in ("eos", "cls", "mean"):
        enc = TextTransformer(vocab_size=12, dim=16, depth=1, num_heads=2, max_len=8, pool=pool).eval()
        tokens, pooled = enc(ids, mask)
        assert tokens.shape == (2, 6, 16) and pooled.shape == (2, 16)
        if pool == "eos":  # last real token = [EOS] at positions 3 and 5
            torch.testing.assert_close(pooled, tokens[[0, 1], [3, 5]])
        elif pool == "cls":
            torch.testing.assert_close(pooled, tokens[:, 0])
        else:
            torch.testing.assert_close(pooled[0], tokens[0, :4].mean(0))


def test_text_transformer_ignores_padding_content():
    torch.manual_seed(0)
    enc = TextTransformer(vocab_size=12, dim=16, depth=2, num_heads=2, max_len=8).eval()
    ids = torch.tensor([[1, 7, 8, 5, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    other = torch.tensor([[1, 7, 8, 5, 11, 3]])
    torch.testing.assert_close(enc(ids, mask).pooled, enc(other, mask).pooled)
    # word order matters to a transformer with positions
    swapped = torch.tensor([[1, 8, 7, 5, 0, 0]])
    assert not torch.allclose(enc(ids, mask).pooled, enc(swapped, mask).pooled)


def test_causal_text_transformer_eos_sees_everything():
    torch.manual_seed(0)
    enc = TextTransformer(vocab_size=12, dim=16, depth=1, num_heads=2, causal=True).eval()
    a = enc(torch.tensor([[1, 7, 8, 5]])).pooled
    b = enc(torch.tensor([[1, 7, 9, 5]])).pooled
    assert not torch.allclose(a, b)


def test_projection_head():
    assert ProjectionHead(16, 8)(torch.randn(4, 16)).shape == (4, 8)
    assert ProjectionHead(16, 8, hidden_dim=32)(torch.randn(2, 3, 16)).shape == (2, 3, 8)


def test_bad_inputs():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        PatchEmbedding(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match=r"images must be 16x16"):
        TinyViT(image_size=16, patch_size=4, dim=16, depth=1)(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\)"):
        SmallCNN()(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="images must be 4-D"):
        SmallCNN()(torch.rand(3, 32, 32))
    enc = TextTransformer(vocab_size=12, dim=16, depth=1, num_heads=2, max_len=8)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 12\)"):
        enc(torch.tensor([[1, 12]]))
    with pytest.raises(ValueError, match="longer than max_len=8"):
        enc(torch.ones(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        enc(torch.ones(2, 4, dtype=torch.long), torch.ones(2, 5))
    with pytest.raises(TypeError, match="input_ids must be an integer"):
        enc(torch.ones(2, 4))
    with pytest.raises(ValueError, match="pool must be one of"):
        TextTransformer(vocab_size=12, pool="max")
    with pytest.raises(ValueError, match="x must have last dim 16"):
        ProjectionHead(16, 8)(torch.randn(2, 15))


def test_tokens_of_reads_an_encoder_output_a_tuple_or_a_tensor():
    from mmcourse.nn.encoders import EncoderOutput, tokens_of

    tokens = torch.randn(2, 5, 8)
    assert tokens_of(EncoderOutput(tokens, tokens.mean(1))) is tokens
    assert tokens_of((tokens, None)) is tokens and tokens_of(tokens) is tokens
    with pytest.raises(ValueError, match="image tokens"):
        tokens_of(torch.randn(2, 8))
