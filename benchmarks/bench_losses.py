"""Contrastive losses: agreement with the references and fwd+bwd time (article §4.1, chapter 4).

For batch sizes N and widths D: ``mmcourse.objectives.contrastive.contrastive_loss`` vs the article's function vs
Hugging Face CLIP's loss on the same logits, and ``siglip_loss`` vs the formula of ``SiglipModel``.
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F

from mmcourse.dev.timing import measure
from mmcourse.objectives.contrastive import contrastive_loss, siglip_loss


def _article_loss(image_features, text_features, temperature=0.07):
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = image_features @ text_features.t() / temperature
    labels = torch.arange(image_features.size(0), device=image_features.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def _hf_clip_loss(image_features, text_features, temperature=0.07):
    from transformers.models.clip import modeling_clip

    reference = getattr(modeling_clip, "image_text_contrastive_loss", None) or modeling_clip.clip_loss
    logits_per_text = F.normalize(text_features, dim=-1) @ F.normalize(image_features, dim=-1).t() / temperature
    return reference(logits_per_text)


def _hf_siglip_formula(image_features, text_features, scale=10.0, bias=-10.0):
    logits = F.normalize(text_features, dim=-1) @ F.normalize(image_features, dim=-1).t() * scale + bias
    labels = 2 * torch.eye(logits.size(0), device=logits.device) - 1
    return -F.logsigmoid(labels * logits).sum(-1).mean()


def _time(fn, image, text, repeats: int) -> float:
    def step():
        image.grad = text.grad = None
        fn(image, text).backward()

    return measure(step, warmup=2, repeats=repeats).median * 1e3


def run(quick: bool = False, device: str = "cpu") -> dict:
    sizes = [(64, 64)] if quick else [(64, 64), (256, 64), (1024, 64), (1024, 512)]
    rounds, repeats = (1, 3) if quick else (5, 10)
    rows = []
    for n, d in sizes:
        g = torch.Generator().manual_seed(n + d)
        image = torch.randn(n, d, generator=g).to(device).requires_grad_()
        text = torch.randn(n, d, generator=g).to(device).requires_grad_()
        with torch.no_grad():
            ours = contrastive_loss(image, text)
            ours_sig = siglip_loss(image, text, 10.0, -10.0)
            diffs = {
                "article": abs(float(ours - _article_loss(image, text))),
                "HF CLIP": abs(float(ours - _hf_clip_loss(image, text))),
                "HF SigLIP formula": abs(float(ours_sig - _hf_siglip_formula(image, text))),
            }
        losses = {
            "contrastive_loss": contrastive_loss,
            "article": _article_loss,
            "HF CLIP": _hf_clip_loss,
            "siglip_loss": lambda a, b: siglip_loss(a, b, 10.0, -10.0),
        }
        per_round: dict[str, list[float]] = {name: [] for name in losses}
        for _ in range(rounds):  # interleaved, so a burst of load hits every variant alike
            for name, fn in losses.items():
                per_round[name].append(_time(fn, image, text, repeats))
        timings = {name: statistics.median(values) for name, values in per_round.items()}
        for name, ms in timings.items():
            ref = {"contrastive_loss": None, "siglip_loss": "HF SigLIP formula"}.get(name, name)
            rows.append(
                {
                    "N": n,
                    "D": d,
                    "loss": name,
                    "fwd+bwd ms": round(ms, 3),
                    "|diff| vs ours": "-" if ref is None else f"{diffs[ref]:.2e}",
                }
            )
    return {
        "title": f"Contrastive losses: fwd+bwd time and agreement with the references ({device})",
        "columns": ["N", "D", "loss", "fwd+bwd ms", "|diff| vs ours"],
        "rows": rows,
        "notes": (
            "|diff| compares loss values with ours (contrastive_loss for the CLIP rows, siglip_loss for SigLIP); "
            "ours adds input validation (a finite check). Times: median over interleaved rounds; shared CPU, noisy."
        ),
    }
