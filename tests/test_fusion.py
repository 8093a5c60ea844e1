"""Early, late and cross-attention fusion classifiers: shapes, what each fusion can see, bad input."""

import pytest
import torch
from torch import nn

from mmcourse.models.fusion import CrossAttentionFusionClassifier, EarlyFusionClassifier, LateFusionClassifier
from mmcourse.nn.encoders import SmallCNN, TextTransformer


def _encoders():
    torch.manual_seed(0)
    return SmallCNN(width=4, dim=16).eval(), TextTransformer(20, dim=16, depth=1, num_heads=2, max_len=8).eval()


def _batch():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 16, 16, generator=g)
    ids = torch.randint(7, 20, (3, 6), generator=g)
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[2, 4:] = 0
    return images, ids, mask


@pytest.mark.parametrize("cls", [EarlyFusionClassifier, LateFusionClassifier, CrossAttentionFusionClassifier])
def test_logits_shape_and_gradients(cls):
    model = cls(*_encoders(), num_classes=5)
    logits = model(*_batch())
    assert logits.shape == (3, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_late_fusion_is_the_mean_of_single_modality_decisions():
    model = LateFusionClassifier(*_encoders(), num_classes=4).eval()
    image_logits, text_logits = model.modality_logits(*_batch())
    torch.testing.assert_close(model(*_batch()), (image_logits + text_logits) / 2)
    model.combine = "probs"
    expected = ((image_logits.softmax(-1) + text_logits.softmax(-1)) / 2).log()
    torch.testing.assert_close(model(*_batch()), expected)


def test_cross_attention_fusion_weights_and_padding():
    model = CrossAttentionFusionClassifier(*_encoders(), num_classes=4, dim=24, depth=2).eval()
    images, ids, mask = _batch()
    logits, weights = model(images, ids, mask, need_weights=True)
    assert logits.shape == (3, 4) and len(weights) == 2 and weights[0].shape == (3, 4, 6, 4)
    changed = ids.clone()
    changed[2, 4:] = 19  # padded positions: no effect
    torch.testing.assert_close(model(images, changed, mask), model(images, ids, mask))


def test_bad_inputs():
    model = EarlyFusionClassifier(*_encoders(), num_classes=3)
    images, ids, mask = _batch()
    with pytest.raises(ValueError, match="same batch size"):
        model(images[:2], ids, mask)
    with pytest.raises(TypeError, match=r"image_encoder must be an nn.Module with an int attribute .dim"):
        LateFusionClassifier(torch.nn.Identity(), _encoders()[1], num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be > 0"):
        EarlyFusionClassifier(*_encoders(), num_classes=0)


def test_classifier_accuracy_counts_right_answers_in_any_chunking_and_restores_the_mode():
    from mmcourse.labs.common import classifier_accuracy

    class FirstPixelSays(nn.Module):  # predicts class 1 where the first pixel is bright
        def forward(self, images, input_ids, attention_mask):
            bright = images[:, 0, 0, 0] > 0.5
            return torch.stack([~bright, bright], dim=1).float()

    images = torch.zeros(10, 1, 2, 2)
    images[:6, 0, 0, 0] = 1.0
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])  # right on 4 + 4 of 10
    data = {"images": images, "input_ids": torch.zeros(10, 3, dtype=torch.long),
            "attention_mask": torch.ones(10, 3, dtype=torch.long), "labels": labels, "ignored": torch.zeros(10)}
    model = FirstPixelSays().train()
    assert classifier_accuracy(model, data) == classifier_accuracy(model, data, batch_size=3) == 0.8
    assert model.training
