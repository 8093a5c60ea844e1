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
    """Independent version: explicit loops over pairs and classes, log-sum-exp by hand, in float64."""
    i = image.double() / image.double().norm(dim=1, keepdim=True)
    t = text.double() / text.double().norm(dim=1, keepdim=True)
    b = i.shape[0]
    w, bias = head.weight.detach().double()[0], head.bias.detach().double()[0]
    bce = []
    for shift in range(k + 1):
        for row in range(b):
            other = (row - shift) % b
            x, y = i[row], t[other]
            logit = w @ torch.cat([x, y, x * y, (x - y).abs()]) + bias
            target = 1.0 if bool(torch.equal(text_ids[row], text_ids[other])) else 0.0
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
    sim = logit_scale * i @ t.T
    rows = [torch.logsumexp(sim[r], 0) - sim[r, r] for r in range(b)]
    cols = [torch.logsumexp(sim[:, c], 0) - sim[c, c] for c in range(b)]
    contrastive = (torch.stack(rows).mean() + torch.stack(cols).mean()) / 2
    return {"implicit": implicit, "explicit": explicit, "contrastive": contrastive}


def _random_problem(seed, b=6, d=4):
    g = _gen(seed)
    image, text = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    # captions 0 and 1 are word for word the same, and so are 3 and 5: rolled pairs of them are true matches
    text_ids = torch.tensor([[7, 1], [7, 1], [2, 2], [4, 1], [9, 9], [4, 1]])[:b]
    labels = {"color": torch.randint(0, 3, (b,), generator=g), "shape": torch.randint(0, 4, (b,), generator=g)}
    weights = {"color": torch.randn(3, d, generator=g), "shape": torch.randn(4, d, generator=g)}
    torch.manual_seed(seed)
    head = nn.Linear(4 * d, 1)
    return image, text, text_ids, labels, head, weights


@HIDDEN.test("alignment_losses", points=0.5)
def agrees_with_a_loop_reference_on_random_inputs(fn):
    """random embeddings, duplicate captions, 1 or 2 negatives per pair: all three losses match a loop reference"""
    for seed, (k, logit_scale, class_scale) in enumerate([(1, 1 / 0.07, 10.0), (2, 3.0, 2.5)]):
        image, text, ids, labels, head, weights = _random_problem(seed + 20)
        got = fn(
            image, text, ids, labels, head, weights, num_negatives=k, logit_scale=logit_scale, class_scale=class_scale
        )
        want = _reference_losses(image, text, ids, labels, head, weights, k, logit_scale, class_scale)
        for key in ("implicit", "explicit", "contrastive"):
            expect_number(got[key], float(want[key]), atol=1e-4, what=f"losses[{key!r}] (num_negatives={k})")


@HIDDEN.test("alignment_losses", points=0.5)
def invariant_to_embedding_length_and_to_reordering_the_batch(fn):
    """rescaling the embeddings changes nothing; permuting the pairs leaves explicit and contrastive unchanged"""
    image, text, ids, labels, head, weights = _random_problem(30)
    base = fn(image, text, ids, labels, head, weights)
    scaled = fn(3.0 * image, 0.2 * text, ids, labels, head, weights)
    for key in ("implicit", "explicit", "contrastive"):
        expect_number(
            scaled[key], float(base[key].detach()), atol=1e-4, what=f"losses[{key!r}] with rescaled embeddings"
        )
    perm = torch.tensor([2, 0, 5, 1, 4, 3])
    permuted = fn(image[perm], text[perm], ids[perm], {k: v[perm] for k, v in labels.items()}, head, weights)
    for key in ("explicit", "contrastive"):
        expect_number(
            permuted[key], float(base[key].detach()), atol=1e-4, what=f"losses[{key!r}] with the pairs reordered"
        )


@HIDDEN.test("alignment_losses", points=0.5)
def contrastive_limits_of_the_temperature(fn):
    """contrastive: log(B) at logit_scale 0; tends to 0 for aligned pairs as logit_scale grows"""
    image, text, ids, labels, head, weights = _random_problem(31)
    out = fn(image, text, ids, labels, head, weights, logit_scale=0.0)
    expect_number(out["contrastive"], math.log(6), atol=1e-5, what="the contrastive loss at logit_scale 0")
    emb = torch.eye(6)
    sharp = fn(emb, emb.clone(), ids, labels, nn.Linear(24, 1), {"color": torch.eye(3, 6)}, logit_scale=50.0)
    expect_number(sharp["contrastive"], low=0.0, high=1e-6, what="aligned pairs at logit_scale 50")
