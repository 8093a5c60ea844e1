"""Hidden tests of exercise set 2 (instructor only: not in the package, not in the student release)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.grading.expect import expect, expect_close, expect_number, expect_raises
from mmcourse.grading.spec import HiddenTests

HIDDEN = HiddenTests("ex02")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_cosine(a, b):
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.float64)
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            x, y = a[i].double(), b[j].double()
            out[i, j] = (x @ y) / (x.norm().clamp_min(1e-8) * y.norm().clamp_min(1e-8))
    return out.float()


@HIDDEN.test("cosine_similarity_matrix", points=1)
def matches_a_loop_on_random_inputs(fn):
    """random inputs agree with an element-by-element loop"""
    for seed, (n, m, d) in enumerate([(1, 1, 3), (5, 2, 7), (4, 9, 1)]):
        a, b = torch.randn(n, d, generator=_gen(seed)), torch.randn(m, d, generator=_gen(seed + 5))
        expect_close(fn(a, b), _reference_cosine(a, b), atol=1e-5)


@HIDDEN.test("cosine_similarity_matrix", points=1)
def zero_vectors_give_zero_not_nan(fn):
    """a zero vector has similarity 0 with everything (no NaN)"""
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    out = fn(a, torch.tensor([[1.0, 1.0]]))
    expect_close(out, torch.tensor([[0.0], [2**-0.5]]), atol=1e-5)


@HIDDEN.test("ProjectionHead", points=2)
def computes_linear_gelu_linear_normalize(cls):
    """output = normalize(Linear2(GELU(Linear1(x))))"""
    torch.manual_seed(3)
    model = cls(5, 3, 8)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    expect(len(linears) == 2, "expected exactly two nn.Linear layers", got=str(len(linears)))
    x = torch.randn(6, 5, generator=_gen(4))
    with torch.no_grad():
        want = F.normalize(linears[1](F.gelu(linears[0](x))), dim=-1)
        expect_close(model(x), want, atol=1e-5)


@HIDDEN.test("ProjectionHead", points=1)
def gradients_reach_the_first_layer(cls):
    """training signal reaches the first linear layer"""
    torch.manual_seed(5)
    model = cls(5, 3, 8)
    model(torch.randn(4, 5))[:, 0].sum().backward()
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    expect(first.weight.grad is not None and first.weight.grad.abs().sum() > 0, "no gradient in the first layer")


def _reference_gap(image, text):
    sim = _reference_cosine(image, text).double()
    n = sim.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    return float(sim.diagonal().mean() - sim[off].mean())


@HIDDEN.test("alignment_gap", points=1)
def matches_the_reference_on_random_embeddings(fn):
    """random embeddings agree with the reference"""
    for seed, (b, d) in enumerate([(2, 3), (7, 5), (16, 2)]):
        image, text = torch.randn(b, d, generator=_gen(seed)), torch.randn(b, d, generator=_gen(seed + 9))
        expect_number(fn(image, text), _reference_gap(image, text), atol=1e-5)


@HIDDEN.test("alignment_gap", points=1)
def needs_at_least_two_pairs(fn):
    """a batch of one pair raises ValueError (no mismatched pairs)"""
    expect_raises(ValueError, fn, torch.randn(1, 3), torch.randn(1, 3), what="alignment_gap with B = 1")


def _reference_losses(image, text, text_ids, labels, head, weights, k, logit_scale, class_scale):
    """Independent version: explicit loops over pairs, classes, images and texts, log-sum-exp by hand, in float64.

    ``head`` is an nn.Linear(4D, 1) whose parameters may require gradients (then so does the result)."""
    i = image.double() / image.double().norm(dim=1, keepdim=True)
    t = text.double() / text.double().norm(dim=1, keepdim=True)
    b = i.shape[0]
    w, bias = head.weight.double()[0], head.bias.double()[0]

    def same(a, c):
        return bool(torch.equal(text_ids[a], text_ids[c]))

    bce = []
    for shift in range(k + 1):
        for row in range(b):
            other = (row - shift) % b
            x, y = i[row], t[other]
            logit = w @ torch.cat([x, y, x * y, (x - y).abs()]) + bias
            target = 1.0 if same(row, other) else 0.0
            bce.append(-(target * F.logsigmoid(logit) + (1 - target) * F.logsigmoid(-logit)))
    implicit = torch.stack(bce).mean()
    ce = []
    for z in (i, t):
        for name, wts in weights.items():
            directions = wts.double() / wts.double().norm(dim=1, keepdim=True)
            for row in range(b):
                scores = class_scale * directions @ z[row]
                ce.append(torch.logsumexp(scores, 0) - scores[labels[name][row]])
    explicit = torch.stack(ce).mean()
    per_image, per_text = [], []
    for r in range(b):  # image r against every text; its positives: the texts with r's caption
        scores = torch.stack([logit_scale * (i[r] @ t[c]) for c in range(b)])
        positive = torch.stack([scores[c] for c in range(b) if same(r, c)])
        per_image.append(torch.logsumexp(scores, 0) - torch.logsumexp(positive, 0))
    for c in range(b):  # text c against every image
        scores = torch.stack([logit_scale * (i[r] @ t[c]) for r in range(b)])
        positive = torch.stack([scores[r] for r in range(b) if same(r, c)])
        per_text.append(torch.logsumexp(scores, 0) - torch.logsumexp(positive, 0))
    contrastive = (torch.stack(per_image).mean() + torch.stack(per_text).mean()) / 2
    return {"implicit": implicit, "explicit": explicit, "contrastive": contrastive}


def _random_problem(seed, b=6, d=4):
    g = _gen(seed)
    image, text = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    # captions 0 and 1 are word for word the same, and so are 3 and 5; 0 shares its second token with 3 and its first
    # with 4, but they are different captions
    text_ids = torch.tensor([[7, 1], [7, 1], [2, 2], [4, 1], [7, 9], [4, 1]])[:b]
    labels = {"color": torch.randint(0, 3, (b,), generator=g), "shape": torch.randint(0, 4, (b,), generator=g)}
    weights = {"color": torch.randn(3, d, generator=g), "shape": torch.randn(4, d, generator=g)}
    torch.manual_seed(seed)
    head = nn.Linear(4 * d, 1)
    return image, text, text_ids, labels, head, weights


_KEYS = ("implicit", "explicit", "contrastive")


@HIDDEN.test("alignment_losses", points=2)
def agrees_with_a_loop_reference_on_random_inputs(fn):
    """random embeddings, identical captions, 1 to 3 negatives per pair: all three losses match a loop reference"""
    cases = [(1, 1 / 0.07, 10.0, 6), (2, 3.0, 2.5, 6), (3, 0.5, 1.0, 5)]
    for seed, (k, logit_scale, class_scale, b) in enumerate(cases):
        image, text, ids, labels, head, weights = _random_problem(seed + 20, b=b)
        got = fn(
            image, text, ids, labels, head, weights, num_negatives=k, logit_scale=logit_scale, class_scale=class_scale
        )
        with torch.no_grad():
            want = _reference_losses(image, text, ids, labels, head, weights, k, logit_scale, class_scale)
        for key in _KEYS:
            expect_number(got[key], float(want[key]), atol=1e-4, what=f"losses[{key!r}] (B={b}, num_negatives={k})")


@HIDDEN.test("alignment_losses", points=1)
def invariant_to_embedding_length_reordering_and_swapping(fn):
    """invariant to rescaled embeddings, reordered pairs (explicit, contrastive), swapped modalities (contrastive)"""
    image, text, ids, labels, head, weights = _random_problem(30)
    base = fn(image, text, ids, labels, head, weights)
    scaled = fn(3.0 * image, 0.2 * text, ids, labels, head, weights)
    for key in _KEYS:
        expect_number(
            scaled[key], float(base[key].detach()), atol=1e-4, what=f"losses[{key!r}] with rescaled embeddings"
        )
    perm = torch.tensor([2, 0, 5, 1, 4, 3])
    permuted = fn(image[perm], text[perm], ids[perm], {k: v[perm] for k, v in labels.items()}, head, weights)
    for key in ("explicit", "contrastive"):
        expect_number(
            permuted[key], float(base[key].detach()), atol=1e-4, what=f"losses[{key!r}] with the pairs reordered"
        )
    swapped = fn(text, image, ids, labels, head, weights)
    expect_number(
        swapped["contrastive"],
        float(base["contrastive"].detach()),
        atol=1e-4,
        what="the contrastive loss with images and texts swapped",
    )


def _contrastive(fn, image, text, ids, logit_scale):
    d = image.shape[1]
    labels, weights = {"color": torch.zeros(image.shape[0], dtype=torch.long)}, {"color": torch.eye(2, d)}
    return fn(image, text, ids, labels, nn.Linear(4 * d, 1), weights, logit_scale=logit_scale)["contrastive"]


@HIDDEN.test("alignment_losses", points=1)
def contrastive_limits(fn):
    """contrastive: log(B) at scale 0 if captions differ, 0 if all are identical, tends to 0 for separated groups"""
    image, text = torch.randn(7, 3, generator=_gen(40)), torch.randn(7, 3, generator=_gen(41))
    distinct = torch.arange(7)[:, None]
    expect_number(
        _contrastive(fn, image, text, distinct, 0.0), math.log(7), atol=1e-5, what="distinct captions, logit_scale 0"
    )
    one_caption = torch.full((7, 3), 5)
    for scale in (1.0, 20.0):
        expect_number(
            _contrastive(fn, image, text, one_caption, scale),
            0.0,
            atol=1e-5,
            what=f"7 identical captions, logit_scale {scale:g}",
        )
    # three groups, each on its own axis, with a little noise: identical texts are no longer identical vectors, so a
    # loss that lets them compete keeps a floor of about log(group size), but the right one goes to 0
    groups = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    axes = torch.eye(3, 4)[groups]
    noisy_image = axes + 0.05 * torch.randn(7, 4, generator=_gen(42))
    noisy_text = axes + 0.05 * torch.randn(7, 4, generator=_gen(43))
    losses = [float(_contrastive(fn, noisy_image, noisy_text, groups[:, None], scale)) for scale in (2.0, 6.0, 60.0)]
    expect(
        losses[0] > losses[1] >= losses[2],
        "for separated groups the contrastive loss must fall as logit_scale grows",
        got=", ".join(f"{x:.4f}" for x in losses),
    )
    expect_number(losses[2], low=0.0, high=1e-6, what="separated noisy groups at logit_scale 60")


@HIDDEN.test("alignment_losses", points=1)
def gradients_agree_with_the_loop_reference(fn):
    """gradients of contrastive (both embeddings) and of implicit (the head) agree with autograd through a loop"""
    image, text, ids, labels, head, weights = _random_problem(50)
    image, text = image.requires_grad_(True), text.requires_grad_(True)
    got = fn(image, text, ids, labels, head, weights, num_negatives=2, logit_scale=4.0)
    want = _reference_losses(image, text, ids, labels, head, weights, 2, 4.0, 10.0)
    for key, inputs, names in (
        ("contrastive", (image, text), ("image_emb", "text_emb")),
        ("implicit", (head.weight,), ("the head's weight",)),
    ):
        expect(got[key].requires_grad, f"losses[{key!r}] carries no gradient")
        got_grads = torch.autograd.grad(got[key], inputs, retain_graph=True, allow_unused=True)
        want_grads = torch.autograd.grad(want[key], inputs, retain_graph=True)
        for name, g, w in zip(names, got_grads, want_grads, strict=True):
            expect(g is not None, f"no gradient of losses[{key!r}] reaches {name}")
            expect_close(g, w, atol=1e-5, what=f"the gradient of losses[{key!r}] with respect to {name}")
