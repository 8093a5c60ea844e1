"""Transformer blocks: reference equality, masking, causality, shapes."""

import pytest
import torch
from torch import nn

from mmcourse.nn.blocks import (
    CrossAttentionBlock,
    MultimodalEncoder,
    SelfAttentionBlock,
    TransformerEncoder,
    causal_mask,
    combine_masks,
)

D, H = 32, 4


def _copy_into_torch_layer(block: SelfAttentionBlock) -> nn.TransformerEncoderLayer:
    hidden = block.mlp.net[0].out_features
    layer = nn.TransformerEncoderLayer(
        D, H, hidden, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    attn = block.attn
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(
            torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        )
        layer.self_attn.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        layer.self_attn.out_proj.load_state_dict(attn.out_proj.state_dict())
        layer.norm1.load_state_dict(block.norm1.state_dict())
        layer.norm2.load_state_dict(block.norm2.state_dict())
        layer.linear1.load_state_dict(block.mlp.net[0].state_dict())
        layer.linear2.load_state_dict(block.mlp.net[3].state_dict())
    return layer.eval()


def test_self_attention_block_equals_torch_pre_norm_layer():
    torch.manual_seed(0)
    block = SelfAttentionBlock(D, H, mlp_ratio=2.0).eval()
    layer = _copy_into_torch_layer(block)
    x = torch.randn(2, 6, D)
    pad = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    expected = layer(x, src_key_padding_mask=pad == 0)
    out = block(x, pad)
    # torch's fast path may return zeros at padded positions: compare real tokens
    torch.testing.assert_close(out[pad.bool()], expected[pad.bool()], atol=1e-5, rtol=1e-5)


def test_encoder_ignores_padded_tokens():
    torch.manual_seed(0)
    enc = TransformerEncoder(D, depth=2, num_heads=H).eval()
    x = torch.randn(2, 6, D)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    y = x.clone()
    y[1, 3:] = torch.randn(3, D) * 10
    torch.testing.assert_close(enc(x, mask)[1, :3], enc(y, mask)[1, :3])
    out, weights = enc(x, mask, need_weights=True)
    assert len(weights) == 2 and weights[0].shape == (2, H, 6, 6)
    assert (weights[-1][1, :, :, 3:] == 0).all()


def test_causal_encoder_does_not_look_ahead():
    torch.manual_seed(0)
    enc = TransformerEncoder(D, depth=2, num_heads=H, causal=True).eval()
    x = torch.randn(2, 6, D)
    y = x.clone()
    y[:, 4:] = torch.randn(2, 2, D)
    torch.testing.assert_close(enc(x)[:, :4], enc(y)[:, :4])
    assert not torch.allclose(enc(x)[:, 4:], enc(y)[:, 4:])


def test_cross_attention_block_uses_only_unmasked_context():
    torch.manual_seed(0)
    block = CrossAttentionBlock(D, H, context_dim=48).eval()
    text, image = torch.randn(2, 5, D), torch.randn(2, 9, 48)
    image_mask = torch.ones(2, 9)
    image_mask[:, 6:] = 0
    other = image.clone()
    other[:, 6:] = torch.randn(2, 3, 48)
    out, weights = block(text, image, context_mask=image_mask, need_weights=True)
    assert out.shape == (2, 5, D) and weights.shape == (2, H, 5, 9)
    torch.testing.assert_close(out, block(text, other, context_mask=image_mask))
    # without the mask the extra context changes the output
    assert not torch.allclose(block(text, image), block(text, other))


def test_causal_multimodal_encoder_is_a_decoder_conditioned_on_context():
    torch.manual_seed(0)
    dec = MultimodalEncoder(D, depth=2, num_heads=H, context_dim=16, causal=True).eval()
    text, image = torch.randn(2, 6, D), torch.randn(2, 4, 16)
    pad = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    out = dec(text, image, pad)
    assert out.shape == (2, 6, D)
    changed = text.clone()
    changed[:, 3:] = torch.randn(2, 3, D)
    torch.testing.assert_close(dec(changed, image, pad)[:, :3], out[:, :3])
    assert not torch.allclose(dec(text, torch.randn(2, 4, 16), pad), out)
    _, weights = dec(text, image, pad, need_weights=True)
    assert len(weights) == 2 and weights[0].shape == (2, H, 6, 4)


def test_multimodal_encoder_shapes_and_weights():
    torch.manual_seed(0)
    enc = MultimodalEncoder(D, depth=2, num_heads=H, context_dim=64)
    text, image = torch.randn(3, 5, D), torch.randn(3, 16, 64)
    out, weights = enc(text, image, torch.ones(3, 5), need_weights=True)
    assert out.shape == (3, 5, D)
    assert [w.shape for w in weights] == [(3, H, 5, 16)] * 2
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(3, H, 5))
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_mask_helpers():
    m = causal_mask(4)
    assert m.dtype == torch.bool and m[2, 3].item() is False and m[3, 2].item() is True
    pad = torch.tensor([[1, 1, 0]])
    both = combine_masks(pad, True, 3)
    assert both.shape == (1, 1, 3, 3) and both[0, 0, 2].tolist() == [True, True, False]
    assert combine_masks(None, False, 3) is None


def test_bad_inputs():
    block = CrossAttentionBlock(D, H)
    with pytest.raises(ValueError, match="same batch size"):
        block(torch.randn(2, 5, D), torch.randn(3, 4, D))
    with pytest.raises(ValueError, match="context must be 3-D"):
        block(torch.randn(2, 5, D), torch.randn(4, D))
    with pytest.raises(ValueError, match="padding_mask must have shape"):
        decoder_layer = CrossAttentionBlock(D, H, self_attention=True, causal=True)
        decoder_layer(torch.randn(2, 5, D), torch.randn(2, 4, D), torch.ones(2, 6))
    with pytest.raises(ValueError, match="depth must be > 0"):
        TransformerEncoder(D, depth=0)
    with pytest.raises(ValueError, match="causal=True needs self_attention"):
        CrossAttentionBlock(D, H, causal=True)
