"""CrossModalAttention speed: fast path vs an SDPA reference module vs nn.MultiheadAttention vs the article's class.

Forward + backward at B=32, 8 heads, Lq=16, Lk=64, d=256 on the CPU, without and with a key padding mask.
The timed variants run in interleaved rounds (each round times every variant once) and the reported time is the
median over rounds, so a burst of load from other processes hits all variants alike.
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.dev.timing import measure
from mmcourse.nn.attention import CrossModalAttention


class SDPAReference(nn.Module):
    """The minimal multi-head attention around ``F.scaled_dot_product_attention`` (no checks, no extras)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, query, key, value, mask=None):
        b, lq, d = query.shape
        q = self.q_proj(query).view(b, lq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        attn_mask = None if mask is None else mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, d))


class ArticleAttention(nn.Module):
    """The article's §3.2 computation (explicit softmax, ``-1e9`` fill), for comparison."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim, self.dim = num_heads, dim // num_heads, dim
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.scale = self.head_dim**-0.5

    def forward(self, query, key, value, mask=None):
        b = query.size(0)
        q = self.q_proj(query).view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            attn = attn.masked_fill(mask[:, None, None, :] == 0, -1e9)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).contiguous().view(b, -1, self.dim)
        return self.out_proj(out)


def _variants(dim: int, heads: int, device: str = "cpu") -> dict:
    torch.manual_seed(0)
    ours = CrossModalAttention(dim, heads, dropout=0.0).to(device)
    mha = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True).to(device)
    sdpa = SDPAReference(dim, heads).to(device)
    article = ArticleAttention(dim, heads).to(device)
    return {
        "CrossModalAttention (fast path)": lambda q, k, m: ours(q, k, k, m),
        "CrossModalAttention (need_weights)": lambda q, k, m: ours(q, k, k, m, need_weights=True)[0],
        "SDPA reference module": lambda q, k, m: sdpa(q, k, k, m),
        "nn.MultiheadAttention (default need_weights=True)": lambda q, k, m: mha(
            q, k, k, key_padding_mask=None if m is None else ~m
        )[0],
        "nn.MultiheadAttention (need_weights=False)": lambda q, k, m: mha(
            q, k, k, key_padding_mask=None if m is None else ~m, need_weights=False
        )[0],
        "article class (manual softmax)": lambda q, k, m: article(q, k, k, m),
    }


def _forward(fn, query, key, mask):
    with torch.no_grad():
        fn(query, key, mask)


def _forward_backward(fn, query, key, mask):
    fn(query, key, mask).sum().backward()


def run(quick: bool = False, device: str = "cpu") -> dict:
    batch, heads, lq, lk, dim = 32, 8, 16, 64, 256
    rounds, repeats, warmup = (1, 1, 1) if quick else (7, 10, 2)
    g = torch.Generator().manual_seed(0)
    query = torch.randn(batch, lq, dim, generator=g).to(device).requires_grad_()
    key = torch.randn(batch, lk, dim, generator=g).to(device).requires_grad_()
    padding = torch.ones(batch, lk, dtype=torch.bool)
    padding[:, 48:] = False
    padding = padding.to(device)
    variants = _variants(dim, heads, device)
    rows = []
    cases = [("none", None)] if quick else [("none", None), ("padding (B, Lk)", padding)]
    for mask_name, mask in cases:
        medians = {(name, p): [] for name in variants for p in ("fwd", "fwd+bwd")}
        for _ in range(rounds):  # interleaved, so a burst of load hits every variant alike
            for name, fn in variants.items():
                for p, run_pass in (("fwd", _forward), ("fwd+bwd", _forward_backward)):
                    timing = measure(
                        lambda fn=fn, mask=mask, run_pass=run_pass: run_pass(fn, query, key, mask),
                        warmup=warmup,
                        repeats=repeats,
                    )
                    medians[name, p].append(timing.median)
        ms = {key_: statistics.median(values) * 1e3 for key_, values in medians.items()}
        for name in variants:
            both = medians[name, "fwd+bwd"]
            rows.append(
                {
                    "variant": name,
                    "mask": mask_name,
                    "fwd ms": round(ms[name, "fwd"], 3),
                    "fwd vs SDPA ref": round(ms[name, "fwd"] / ms["SDPA reference module", "fwd"], 3),
                    "fwd+bwd ms": round(ms[name, "fwd+bwd"], 3),
                    "fwd+bwd vs SDPA ref": round(ms[name, "fwd+bwd"] / ms["SDPA reference module", "fwd+bwd"], 3),
                    "fwd+bwd round spread ms": f"{min(both) * 1e3:.2f}-{max(both) * 1e3:.2f}",
                }
            )
    return {
        "title": f"Attention fwd and fwd+bwd, B={batch}, H={heads}, Lq={lq}, Lk={lk}, d={dim}, "
        + ("CPU" if device == "cpu" else device)
        + f" ({torch.get_num_threads()} CPU threads)",
        "columns": list(rows[0]),
        "rows": rows,
        "notes": (
            "Median over interleaved rounds of medians (mmcourse.dev.timing.measure). Targets: fast path <= 1.1x the "
            "SDPA reference and faster than nn.MultiheadAttention. Shared CPUs make single numbers noisy; compare "
            "ratios within one run."
        ),
    }
