"""Hidden tests of exercise set 2 (instructor only: not in the package, not in the student release)."""

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
