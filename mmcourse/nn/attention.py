"""Cross-modal multi-head attention: the article's §3.2 ``CrossModalAttention``, made robust (chapter 3).

The article's class projects queries from one modality and keys/values from another, splits them into
heads and applies ``softmax(q k^T / sqrt(d_head)) v``. This version keeps its constructor, its
``forward(query, key, value, mask=None)`` and its parameter names (``q_proj``, ``k_proj``, ``v_proj``,
``out_proj``), so a ``state_dict`` saved from the article's class loads here unchanged, and adds what the
article's version lacks:

* masks as bool or 0/1 tensors of shape ``(B, Lk)`` (padding), ``(B, Lq, Lk)`` or ``(B, H, Lq, Lk)``; size-1
  dims broadcast. As in the article, ``1``/``True`` means *attend* and ``0``/``False`` means *blocked*
  (the opposite of ``nn.MultiheadAttention``'s ``key_padding_mask``, the same as Hugging Face's
  ``attention_mask`` and SDPA's boolean mask);
* a dtype-safe fill (``torch.finfo(dtype).min`` instead of ``-1e9``, which overflows in float16);
* queries that may attend to no key at all get zeros instead of NaN (in both paths);
* attention weights on request (``need_weights=True``, for heat-maps), otherwise a fast path through
  ``F.scaled_dot_product_attention``;
* shape checks whose errors name the offending shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_positive, check_probability, check_tensor

__all__ = ["normalize_attention_mask", "CrossModalAttention"]


def normalize_attention_mask(
    mask: torch.Tensor, batch_size: int, num_heads: int, query_len: int, key_len: int
) -> torch.Tensor:
    """Turn a user mask into a bool tensor broadcastable to ``(B, H, Lq, Lk)``; ``True`` = attend.

    Args:
        mask: bool or 0/1 tensor of shape ``(B, Lk)`` (key padding), ``(B, Lq, Lk)`` or ``(B, H, Lq, Lk)``;
            every dim may also be 1 (broadcast). A 2-D mask is always read as ``(B, Lk)``.
        batch_size, num_heads, query_len, key_len: the sizes ``B, H, Lq, Lk`` of the attention.
    Returns:
        bool tensor of shape ``(B|1, 1|H, 1|Lq, Lk|1)``.
    """
    check_tensor(mask, "mask", ndim=(2, 3, 4))
    if mask.dtype != torch.bool:
        if mask.is_complex():
            raise TypeError(f"mask must be a bool or 0/1 tensor, got dtype {mask.dtype}")
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError(
                "mask must contain only 0/1 (1 = attend, 0 = blocked); got other values "
                "(an additive float mask such as -inf/0 is not accepted: pass mask == 0 instead)"
            )
        mask = mask != 0
    if mask.dim() == 2:  # (B, Lk) padding mask
        mask = mask[:, None, None, :]
        layout = "(B, Lk)"
    elif mask.dim() == 3:  # (B, Lq, Lk)
        mask = mask[:, None, :, :]
        layout = "(B, Lq, Lk)"
    else:
        layout = "(B, H, Lq, Lk)"
    expected = (batch_size, num_heads, query_len, key_len)
    for got, want in zip(mask.shape, expected, strict=True):
        if got not in (1, want):
            raise ValueError(
                f"mask must have layout {layout} broadcastable to (B, H, Lq, Lk) = {expected}, "
                f"got shape {tuple(mask.shape)} (after adding missing dims)"
            )
    return mask


class CrossModalAttention(nn.Module):
    """Multi-head attention where queries come from modality A and keys/values from modality B (article §3.2).

    Args:
        dim: model width ``D`` (input and output), divisible by ``num_heads``.
        num_heads: number of heads ``H``; each head has width ``D / H``.
        dropout: dropout on the attention weights, active only in ``train()`` mode.
        bias: whether the four projections have biases (the article's class has them).

    Shapes:
        query ``(B, Lq, D)``, key ``(B, Lk, D)``, value ``(B, Lk, D)`` → output ``(B, Lq, D)``;
        with ``need_weights=True`` also the weights ``(B, H, Lq, Lk)`` (before dropout; rows sum to 1, or to 0
        for a query that may attend to no key).

    A query blocked from every key (in every head) outputs exactly zero, so in a residual block it leaves its
    token unchanged.
    """

    def __init__(self, dim: int, num_heads: int = 8, dropout: float = 0.1, bias: bool = True):
        super().__init__()
        check_positive(dim, "dim", integer=True)
        check_positive(num_heads, "num_heads", integer=True)
        if dim % num_heads != 0:
            raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}")
        if dropout != 0:
            check_probability(dropout, "dropout", low_open=False)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # Query from modality A, key and value from modality B (names as in the article: state_dicts load).
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.scale = self.head_dim**-0.5

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, head_dim={self.head_dim}"

    def _check_inputs(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        for name, x in (("query", query), ("key", key), ("value", value)):
            check_tensor(x, name, ndim=3, floating=True)
            if x.size(-1) != self.dim:
                raise ValueError(
                    f"{name} must have last dim {self.dim} (the module's dim), got shape {tuple(x.shape)}"
                )
        if not (query.size(0) == key.size(0) == value.size(0)):
            raise ValueError(
                "query, key and value must have the same batch size, got shapes "
                f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )
        if key.size(1) != value.size(1):
            raise ValueError(
                "key and value must have the same length Lk, got shapes "
                f"{tuple(key.shape)} and {tuple(value.shape)}"
            )

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) → (B, H, L, D/H)."""
        batch_size, length, _ = x.shape
        return x.view(batch_size, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``query`` (B, Lq, D) to ``key``/``value`` (B, Lk, D).

        Args:
            mask: optional bool or 0/1 tensor, ``1``/``True`` = attend; shape ``(B, Lk)``, ``(B, Lq, Lk)`` or
                ``(B, H, Lq, Lk)`` (size-1 dims broadcast).
            need_weights: also return the attention weights ``(B, H, Lq, Lk)`` (explicit path).
        Returns:
            ``out`` (B, Lq, D), or ``(out, weights)`` when weights are requested.
        """
        self._check_inputs(query, key, value)
        batch_size, query_len, _ = query.shape
        key_len = key.size(1)
        attend = None
        if mask is not None:
            attend = normalize_attention_mask(mask, batch_size, self.num_heads, query_len, key_len)
            attend = attend.to(query.device)

        q = self._split_heads(self.q_proj(query))
        k = self._split_heads(self.k_proj(key))
        v = self._split_heads(self.v_proj(value))

        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, Lq, Lk)
            if attend is not None:
                scores = scores.masked_fill(~attend, torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1)
            if attend is not None:
                # exact zeros for blocked keys; a query with no allowed key gets an all-zero row, not NaN
                weights = weights.masked_fill(~attend, 0.0)
            context = self.dropout(weights) @ v
        else:
            dropout_p = self.dropout.p if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=dropout_p)
            if attend is not None:
                nothing_to_attend = ~attend.any(dim=-1, keepdim=True)  # (B|1, 1|H, Lq|1, 1)
                context = context.masked_fill(nothing_to_attend, 0.0)

        out = context.transpose(1, 2).reshape(batch_size, query_len, self.dim)
        out = self.out_proj(out)
        if attend is not None:
            blocked_everywhere = ~attend.any(dim=-1).any(dim=1)  # (B|1, Lq|1)
            out = out.masked_fill(blocked_everywhere.unsqueeze(-1), 0.0)
        if need_weights:
            return out, weights
        return out
