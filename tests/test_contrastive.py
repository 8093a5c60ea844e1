"""Contrastive (CLIP) and sigmoid (SigLIP) losses against references and closed forms; zero-shot classifier."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmcourse.objectives.contrastive import LogitScale, SigLIPHead, clip_loss, contrastive_loss, siglip_loss
from mmcourse.retrieval import zero_shot_accuracy, zero_shot_classifier, zero_shot_predict


# The article's §4.1 function, verbatim (newlines restored).
def article_contrastive_loss(image_features, text_features, temperature=0.07):
    # 标准化特征向量
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    # 计算图像-文本相似度矩阵
    logits = image_features @ text_features.t() / temperature
    # 构建标签(对角线元素为正样本)
    batch_size = image_features.size(0)
    labels = torch.arange(batch_size, device=image_features.device)
    # 双向损失:图像到文本和文本到图像
    loss_i2t = F.cross_entropy(logits, labels)
    loss_t2i = F.cross_entropy(logits.t(), labels)
    # 总损失
    loss = (loss_i2t + loss_t2i) / 2
    return loss


def _features(n=8, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def test_equals_transformers_clip_loss_on_same_logits():
    modeling_clip = pytest.importorskip("transformers.models.clip.modeling_clip")
    reference = getattr(modeling_clip, "image_text_contrastive_loss", None) or modeling_clip.clip_loss
    img, txt = _features()
    temperature = 0.07
    logits_per_text = F.normalize(txt, dim=-1) @ F.normalize(img, dim=-1).t() / temperature
    expected = reference(logits_per_text)
    torch.testing.assert_close(contrastive_loss(img, txt, temperature), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(clip_loss(logits_per_text.t()), expected, atol=1e-6, rtol=1e-6)


def test_equals_the_article_function():
    img, txt = _features(n=5, d=7, seed=3)
    for temperature in (0.07, 0.5, 2.0):
        torch.testing.assert_close(
            contrastive_loss(img, txt, temperature), article_contrastive_loss(img, txt, temperature)
        )


def test_identical_embeddings_give_log_n():
    for n in (2, 7, 32):
        same = torch.randn(1, 12).expand(n, 12)
        torch.testing.assert_close(contrastive_loss(same, same), torch.tensor(math.log(n)))


@pytest.mark.parametrize("temperature", [0.07, 0.25, 1.0])
def test_orthonormal_embeddings_closed_form(temperature):
    n = 6
    basis = torch.linalg.qr(torch.randn(10, 10, generator=torch.Generator().manual_seed(0)))[0][:n]
    s = 1.0 / temperature
    expected = math.log(1 + (n - 1) * math.exp(-s))
    torch.testing.assert_close(
        contrastive_loss(basis, basis, temperature), torch.tensor(expected), rtol=1e-5, atol=1e-6
    )


def test_symmetric_and_scale_invariant():
    img, txt = _features()
    torch.testing.assert_close(contrastive_loss(img, txt), contrastive_loss(txt, img))
    torch.testing.assert_close(contrastive_loss(3 * img, 0.5 * txt), contrastive_loss(img, txt))


def test_learnable_temperature_tensor_gets_gradient():
    img, txt = _features()
    temperature = torch.tensor(0.1, requires_grad=True)
    contrastive_loss(img, txt, temperature).backward()
    assert temperature.grad is not None and torch.isfinite(temperature.grad)


def test_logit_scale_init_and_clamp():
    scale = LogitScale()
    torch.testing.assert_close(scale(), torch.tensor(1 / 0.07))
    assert abs(scale.temperature - 0.07) < 1e-6
    with torch.no_grad():
        scale.log_scale.fill_(10.0)  # e^10 >> 100
    assert float(scale().detach()) == 100.0


def test_siglip_identical_embeddings_closed_form():
    # every logit = s*1 + b; loss = softplus(-(s+b)) + (N-1) softplus(s+b); at s=10, b=-10: N ln 2
    for n in (1, 4, 9):
        same = torch.randn(1, 8).expand(n, 8)
        torch.testing.assert_close(siglip_loss(same, same, 10.0, -10.0), torch.tensor(n * math.log(2)))
        s, b = 5.0, -2.0
        expected = F.softplus(torch.tensor(-(s + b))) + (n - 1) * F.softplus(torch.tensor(s + b))
        torch.testing.assert_close(siglip_loss(same, same, s, b), expected)


def test_siglip_orthonormal_closed_form_and_hf_formula():
    n = 5
    basis = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))[0][:n]
    expected = F.softplus(torch.tensor(0.0)) + (n - 1) * F.softplus(torch.tensor(-10.0))
    torch.testing.assert_close(siglip_loss(basis, basis, 10.0, -10.0), expected)
    # the formula of Hugging Face's SiglipModel (logits_per_text = text @ image.T * scale + bias)
    img, txt = _features(n=6)
    img_n, txt_n = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = txt_n @ img_n.t() * 7.0 + (-3.0)
    labels = 2 * torch.eye(6) - 1
    hf = -F.logsigmoid(labels * logits).sum(-1).mean()
    torch.testing.assert_close(siglip_loss(img, txt, 7.0, -3.0), hf)


def test_siglip_head_init_and_training_signal():
    head = SigLIPHead()
    torch.testing.assert_close(head.scale, torch.tensor(10.0))
    assert float(head.bias.detach()) == -10.0
    img, txt = _features()
    head(img, txt).backward()
    assert head.log_scale.grad is not None and head.bias.grad is not None


class _BagOfWordsModel(torch.nn.Module):
    """encode_text = mean of fixed word vectors: makes zero-shot results computable by hand."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def encode_text(self, ids, mask):
        vectors = self.table[ids] * mask.unsqueeze(-1)
        return vectors.sum(1) / mask.sum(1, keepdim=True)


class _Tok:
    words = {"a": 1, "photo": 2, "of": 3, "red": 4, "blue": 5, "circle": 6}

    def encode(self, texts, max_len=16):
        rows = [[self.words[w] for w in t.split()] for t in texts]
        ids = torch.zeros(len(rows), max_len, dtype=torch.long)
        mask = torch.zeros(len(rows), max_len, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask


def test_zero_shot_classifier_ensembles_templates():
    g = torch.Generator().manual_seed(0)
    model = _BagOfWordsModel(torch.randn(7, 4, generator=g))
    templates = ["a {}", "a photo of a {}"]
    weights = zero_shot_classifier(model, _Tok(), ["red circle", "blue circle"], templates)
    assert weights.shape == (2, 4)
    torch.testing.assert_close(weights.norm(dim=-1), torch.ones(2))
    # by hand: normalise each template embedding, mean, renormalise
    for c, name in enumerate(["red circle", "blue circle"]):
        ids, mask = _Tok().encode([t.format(name) for t in templates])
        each = F.normalize(model.encode_text(ids, mask), dim=-1)
        torch.testing.assert_close(weights[c], F.normalize(each.mean(0), dim=-1))
    # a plain function works too
    same = zero_shot_classifier(model.encode_text, _Tok(), ["red circle", "blue circle"], templates)
    torch.testing.assert_close(same, weights)
    # images equal to the class vectors are classified correctly
    labels = torch.tensor([1, 0, 1])
    images = weights[labels] * 3
    assert zero_shot_predict(images, weights).tolist() == labels.tolist()
    assert zero_shot_accuracy(images, weights, labels) == 1.0


def test_bad_inputs():
    img, txt = _features()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        contrastive_loss(img, txt, 0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        contrastive_loss(img, txt, -0.1)
    with pytest.raises(ValueError, match="same size along dim 0"):
        contrastive_loss(img, txt[:5])
    with pytest.raises(ValueError, match="same size along dim 1"):
        contrastive_loss(img, txt[:, :3])
    with pytest.raises(ValueError, match="image_features must be 2-D"):
        contrastive_loss(img[0], txt[0])
    bad = img.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="image_features contains NaN"):
        contrastive_loss(bad, txt)
    with pytest.raises(ValueError, match="logit_scale must be > 0"):
        siglip_loss(img, txt, -1.0, 0.0)
    with pytest.raises(ValueError, match="must be square"):
        clip_loss(torch.randn(3, 4))
    with pytest.raises(ValueError, match="containing"):
        zero_shot_classifier(_BagOfWordsModel(torch.randn(7, 4)), _Tok(), ["red circle"], ["a photo"])
    with pytest.raises(ValueError, match=r"image_features and classifier must have the same size along dim 1"):
        zero_shot_predict(torch.randn(3, 4), torch.randn(2, 5))


def test_clip_loss_with_hard_negatives_and_a_mask_of_non_negatives():
    """Extra columns join the image→text softmax only; masked pairs count in neither direction; the diagonal always
    counts. Compared with the loss written out by hand."""
    g = torch.Generator().manual_seed(0)
    logits, extra = torch.randn(4, 4, generator=g), torch.randn(4, 3, generator=g)
    keep = torch.rand(4, 7, generator=g) > 0.3
    keep[:, :4] &= keep[:, :4].t().clone()  # symmetric, like "same group"
    eye = torch.eye(4, dtype=torch.bool)
    keep_all = keep | torch.cat([eye, torch.zeros(4, 3, dtype=torch.bool)], 1)
    i2t = torch.cat([logits, extra], 1).masked_fill(~keep_all, float("-inf"))
    t2i = logits.t().masked_fill(~keep_all[:, :4].t(), float("-inf"))
    labels = torch.arange(4)
    expected = (F.cross_entropy(i2t, labels) + F.cross_entropy(t2i, labels)) / 2
    got = clip_loss(logits, extra, negative_mask=keep)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(clip_loss(logits, extra), clip_loss(logits, extra, negative_mask=torch.ones(4, 7).bool()))
    assert clip_loss(logits, extra) > clip_loss(logits)  # more negatives, higher loss
    with pytest.raises(ValueError, match="negative_mask must be a bool tensor of shape"):
        clip_loss(logits, extra, negative_mask=keep[:, :4])
