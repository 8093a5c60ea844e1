"""CrossModalAttention against nn.MultiheadAttention, the article's class and its own explicit path."""

import pytest
import torch
import torch.nn as nn

from mmcourse.nn.attention import CrossModalAttention, normalize_attention_mask


# The article's §3.2 class, verbatim (newlines restored).
class ArticleCrossModalAttention(nn.Module):
    def __init__(self, dim, num_heads=8, dropout=0.1):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # Query来自模态A,Key和Value来自模态B
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.scale = self.head_dim**-0.5

    def forward(self, query, key, value, mask=None):
        batch_size = query.size(0)
        # 线性投影并多头化
        q = self.q_proj(query).view(batch_size, -1, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(batch_size, -1, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(batch_size, -1, self.num_heads, self.head_dim).transpose(1, 2)
        # 计算注意力权重
        attn = (q @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            attn = attn.masked_fill(mask == 0, -1e9)
        attn = attn.softmax(dim=-1)
        attn = self.dropout(attn)
        # 应用注意力
        out = (attn @ v).transpose(1, 2).contiguous().view(batch_size, -1, self.dim)
        out = self.out_proj(out)
        return out


DIM, HEADS = 32, 4


def _inputs(batch=3, lq=5, lk=7, dim=DIM, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, n, dim, generator=g) for n in (lq, lk, lk))


def _padding_mask(batch=3, lk=7):
    mask = torch.ones(batch, lk, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, :2] = False
    return mask


def _mha_copy(attn: CrossModalAttention) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(attn.dim, attn.num_heads, dropout=0.0, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        mha.out_proj.weight.copy_(attn.out_proj.weight)
        mha.out_proj.bias.copy_(attn.out_proj.bias)
    return mha.eval()


@pytest.fixture
def attn():
    torch.manual_seed(0)
    return CrossModalAttention(DIM, HEADS, dropout=0.1).eval()


def test_matches_multihead_attention_without_mask(attn):
    q, k, v = _inputs()
    expected, expected_w = _mha_copy(attn)(q, k, v, average_attn_weights=False)
    out, weights = attn(q, k, v, need_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, expected_w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn(q, k, v), expected, atol=1e-5, rtol=1e-5)


def test_matches_multihead_attention_with_padding_mask(attn):
    q, k, v = _inputs()
    mask = _padding_mask()
    # nn.MultiheadAttention: key_padding_mask True = ignore, the opposite of ours
    expected, _ = _mha_copy(attn)(q, k, v, key_padding_mask=~mask)
    torch.testing.assert_close(attn(q, k, v, mask), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn(q, k, v, mask.long()), expected, atol=1e-5, rtol=1e-5)


def test_matches_multihead_attention_with_full_mask(attn):
    q, k, v = _inputs()
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(3, 5, 7, generator=g) > 0.4
    mask[..., 0] = True  # every query keeps one key (nn.MultiheadAttention gives NaN otherwise)
    mha_mask = (~mask).repeat_interleave(HEADS, dim=0)  # (B*H, Lq, Lk), True = ignore
    expected, _ = _mha_copy(attn)(q, k, v, attn_mask=mha_mask)
    torch.testing.assert_close(attn(q, k, v, mask), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn(q, k, v, mask, need_weights=True)[0], expected, atol=1e-5, rtol=1e-5)


def test_fast_path_equals_weights_path_for_all_mask_layouts(attn):
    q, k, v = _inputs()
    g = torch.Generator().manual_seed(2)
    masks = [
        None,
        _padding_mask(),
        _padding_mask().float(),
        torch.rand(3, 5, 7, generator=g) > 0.5,
        torch.rand(3, HEADS, 5, 7, generator=g) > 0.5,
        torch.rand(1, 1, 5, 7, generator=g) > 0.5,
    ]
    for mask in masks:
        fast = attn(q, k, v, mask)
        slow, _ = attn(q, k, v, mask, need_weights=True)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_masked_keys_get_exactly_zero_weight(attn):
    q, k, v = _inputs()
    mask = _padding_mask()
    _, weights = attn(q, k, v, mask, need_weights=True)
    assert weights.shape == (3, HEADS, 5, 7)
    blocked = ~mask[:, None, None, :].expand_as(weights)
    assert (weights[blocked] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, HEADS, 5))


def test_fully_masked_rows_are_zero_not_nan_in_both_paths(attn):
    q, k, v = _inputs()
    mask = torch.ones(3, 5, 7, dtype=torch.bool)
    mask[0, 2] = False  # query 2 of sample 0 sees nothing
    mask[1] = False  # sample 1 sees nothing at all
    q.requires_grad_(True)
    fast = attn(q, k, v, mask)
    slow, weights = attn(q, k, v, mask, need_weights=True)
    for out in (fast, slow):
        assert torch.isfinite(out).all()
        assert (out[0, 2] == 0).all() and (out[1] == 0).all()
        assert (out[0, 1] != 0).any()
    assert (weights[0, :, 2] == 0).all()
    (fast.sum() + slow.sum()).backward()
    assert torch.isfinite(q.grad).all()


def test_half_precision_fill_does_not_overflow():
    torch.manual_seed(0)
    attn = CrossModalAttention(16, 2, dropout=0.0).eval()
    q, k, v = _inputs(dim=16)
    mask = _padding_mask()
    reference = attn(q, k, v, mask, need_weights=True)[0]
    attn_bf16 = attn.to(torch.bfloat16)
    out, weights = attn_bf16(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, need_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.1)


def test_article_state_dict_loads_and_gives_same_output():
    torch.manual_seed(0)
    article = ArticleCrossModalAttention(DIM, HEADS).eval()
    ours = CrossModalAttention(DIM, HEADS)
    ours.load_state_dict(article.state_dict())
    ours.eval()
    q, k, v = _inputs()
    torch.testing.assert_close(ours(q, k, v), article(q, k, v), atol=1e-5, rtol=1e-5)
    # with a padding mask in the article's (B, 1, 1, Lk) layout both agree too
    mask = _padding_mask()[:, None, None, :].long()
    torch.testing.assert_close(ours(q, k, v, mask), article(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_query_and_key_lengths_may_differ(attn):
    q, k, v = _inputs(lq=1, lk=11)
    assert attn(q, k, v).shape == (3, 1, DIM)
    q, k, v = _inputs(lq=9, lk=2)
    out, weights = attn(q, k, v, need_weights=True)
    assert out.shape == (3, 9, DIM) and weights.shape == (3, HEADS, 9, 2)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    attn = CrossModalAttention(DIM, HEADS, dropout=0.5)
    q, k, v = _inputs()
    attn.eval()
    torch.testing.assert_close(attn(q, k, v), attn(q, k, v))
    attn.train()
    assert not torch.allclose(attn(q, k, v), attn(q, k, v))


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((3, 5, DIM), (3, 7, DIM), (3, 7, DIM + 1)), "value must have last dim"),
        (((3, 5, DIM), (2, 7, DIM), (2, 7, DIM)), "same batch size"),
        (((3, 5, DIM), (3, 7, DIM), (3, 6, DIM)), "same length Lk"),
        (((5, DIM), (3, 7, DIM), (3, 7, DIM)), "query must be 3-D"),
    ],
)
def test_bad_shapes_are_named(attn, shapes, match):
    q, k, v = (torch.randn(*s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        attn(q, k, v)


def test_bad_masks(attn):
    q, k, v = _inputs()
    with pytest.raises(ValueError, match=r"mask must have layout \(B, Lk\)"):
        attn(q, k, v, torch.ones(3, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="only 0/1"):
        attn(q, k, v, torch.zeros(3, 7).masked_fill(_padding_mask(), float("-inf")))
    with pytest.raises(ValueError, match="mask must be 2-D or 3-D or 4-D"):
        attn(q, k, v, torch.ones(7, dtype=torch.bool))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        CrossModalAttention(30, 8)
    with pytest.raises(ValueError, match="dropout"):
        CrossModalAttention(32, 4, dropout=1.5)


def test_normalize_attention_mask_layouts():
    assert normalize_attention_mask(torch.ones(2, 7), 2, 4, 5, 7).shape == (2, 1, 1, 7)
    assert normalize_attention_mask(torch.ones(2, 5, 7), 2, 4, 5, 7).shape == (2, 1, 5, 7)
    assert normalize_attention_mask(torch.ones(1, 4, 5, 7), 2, 4, 5, 7).dtype == torch.bool
