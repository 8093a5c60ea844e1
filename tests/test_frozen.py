"""Tests of mmcourse.nn.frozen: cached tokens of a frozen image encoder, and the stand-in encoder that reads them."""

from __future__ import annotations

import pytest
import torch

from mmcourse.models.captioner import Captioner, ImageTokens
from mmcourse.nn.encoders import EncoderOutput, SmallCNN, TinyViT
from mmcourse.nn.frozen import PrecomputedTokens, frozen_image_tokens


def cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(3, width=4, dim=8, image_size=16)


def test_tokens_equal_the_encoder_in_eval_mode_whatever_the_batch_size():
    encoder = cnn().train()
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    tokens = frozen_image_tokens(encoder, images, batch_size=2)
    with torch.no_grad():
        expected = encoder.eval()(images).tokens
    assert tokens.shape == (5, 4, 8)
    assert torch.allclose(tokens, expected, atol=1e-6)
    assert not tokens.requires_grad


def test_the_encoder_is_left_untouched():
    encoder = cnn().train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}  # BatchNorm running stats included
    frozen_image_tokens(encoder, torch.rand(6, 3, 16, 16))
    assert encoder.training
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_any_encoder_output_form_is_accepted():
    vit = TinyViT(image_size=16, patch_size=4, dim=16, depth=1, num_heads=2)
    images = torch.rand(2, 3, 16, 16)
    assert frozen_image_tokens(vit, images).shape == (2, 16, 16)  # the 16 patch tokens

    class TupleEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 4)

        def forward(self, x):
            tokens = self.linear(x.flatten(2).transpose(1, 2))
            return tokens, tokens.mean(1)

    assert frozen_image_tokens(TupleEncoder(), images).shape == (2, 256, 4)


def test_frozen_image_tokens_validation():
    with pytest.raises(TypeError, match="encoder"):
        frozen_image_tokens(lambda x: x, torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="images"):
        frozen_image_tokens(cnn(), torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="at least one"):
        frozen_image_tokens(cnn(), torch.rand(0, 3, 16, 16))
    with pytest.raises(ValueError, match="batch_size"):
        frozen_image_tokens(cnn(), torch.rand(1, 3, 16, 16), batch_size=0)


def test_precomputed_tokens_pass_through_and_check_shapes():
    stand_in = PrecomputedTokens(8, grid_size=2)
    tokens = torch.randn(3, 4, 8)
    out = stand_in(tokens)
    assert isinstance(out, EncoderOutput)
    assert torch.equal(out.tokens, tokens) and torch.allclose(out.pooled, tokens.mean(1))
    assert list(stand_in.parameters()) == []
    assert stand_in.dim == 8 and stand_in.grid_size == 2
    with pytest.raises(ValueError, match=r"\(B, 4, 8\)"):
        stand_in(torch.randn(3, 9, 8))
    with pytest.raises(ValueError, match="tokens"):
        stand_in(torch.randn(3, 4, 7))
    assert PrecomputedTokens(8)(torch.randn(2, 5, 8)).tokens.shape == (2, 5, 8)  # no grid: any length
    with pytest.raises(ValueError, match="dim"):
        PrecomputedTokens(0)
    with pytest.raises(TypeError, match="grid_size"):
        PrecomputedTokens(8, grid_size=2.0)


def test_a_captioner_trains_on_cached_tokens_only():
    encoder = cnn()
    tokens = frozen_image_tokens(encoder, torch.rand(4, 3, 16, 16))
    torch.manual_seed(0)
    captioner = Captioner(20, ImageTokens(PrecomputedTokens(8, grid_size=2), layers=0), dim=16, depth=1,
                          num_heads=2, max_len=6)  # fmt: skip
    caption_ids = torch.tensor([[1, 7, 8, 5, 0, 0]] * 4)
    loss = captioner.loss(tokens, caption_ids)
    loss.backward()
    assert torch.isfinite(loss)
    assert captioner.image_encoder.pos.grad is not None  # the token positions are learnt
    assert captioner.generate(tokens, max_len=4).shape[0] == 4
