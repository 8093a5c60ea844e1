"""Exercise set 2 (chapter 02_representation, article §2): a shared embedding space and how aligned it is."""

import math

import torch
from torch import nn

from mmcourse.grading.expect import expect, expect_close, expect_number, expect_raises, expect_tensor
from mmcourse.grading.spec import ExerciseSet
from mmcourse.train import seeded

SET = ExerciseSet(
    "ex02", "A shared space: projection heads and cosine similarity", chapter="02_representation", version=1
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
cosine = SET.question(
    "cosine_similarity_matrix",
    "Cosine similarity of every pair",
    forbidden=("mmcourse.retrieval.cosine_similarity_matrix",),
)


@cosine.test(points=1, hint="a (N, D) against b (M, D) gives one row per row of a: (N, M).")
def similarity_shape(fn):
    """a (N, D) and b (M, D) give an (N, M) matrix"""
    out = fn(torch.randn(3, 5, generator=_gen(0)), torch.randn(4, 5, generator=_gen(1)))
    expect_tensor(out, shape=(3, 4), floating=True)


@cosine.test(points=1, hint="Divide each row by its L2 norm, then take a @ b.T.")
def small_example_by_hand(fn):
    """a hand-computed 2 x 2 example"""
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    r = 1 / math.sqrt(2)
    expect_close(fn(a, b), torch.tensor([[0.0, 1.0], [r, r]]))


@cosine.test(points=1, hint="Cosine similarity ignores the length of the vectors.")
def self_similarity_is_one_at_any_scale(fn):
    """a row against a rescaled copy of itself scores 1"""
    a = torch.randn(6, 8, generator=_gen(2))
    out = fn(a, 3.5 * a)
    expect_close(torch.diagonal(out), torch.ones(6), what="the diagonal")


@cosine.test(points=1, hint="Raise ValueError when a.shape[1] != b.shape[1].")
def rejects_different_dimensions(fn):
    """different feature dimensions raise ValueError"""
    expect_raises(ValueError, fn, torch.randn(2, 3), torch.randn(2, 4), what="(2, 3) against (2, 4)")


# ---------------------------------------------------------------------------------------------------------------
head = SET.question(
    "ProjectionHead",
    "A projection head into the shared space",
    kind="class",
    forbidden=("mmcourse.nn.encoders.ProjectionHead",),
)


@head.test(points=1, hint="forward maps (B, in_dim) to (B, out_dim).")
def projection_shape(cls):
    """ProjectionHead(in_dim, out_dim, hidden_dim) maps (B, in_dim) to (B, out_dim)"""
    with seeded(0):
        model = cls(6, 4, 16)
        expect(isinstance(model, nn.Module), "ProjectionHead must subclass nn.Module")
        expect_tensor(model(torch.randn(5, 6)), shape=(5, 4), floating=True)


@head.test(points=1, hint="End with torch.nn.functional.normalize(x, dim=-1).")
def outputs_have_unit_length(cls):
    """every output row has L2 norm 1"""
    with seeded(0):
        out = cls(6, 4, 16)(torch.randn(7, 6) * 10)
        expect_close(out.norm(dim=-1), torch.ones(7), atol=1e-5, what="the row norms")


@head.test(points=1, hint="Two nn.Linear layers with biases: in_dim*hidden + hidden + hidden*out_dim + out_dim.")
def parameter_count(cls):
    """has the parameters of Linear(in, hidden) + Linear(hidden, out)"""
    model = cls(6, 4, 16)
    count = sum(p.numel() for p in model.parameters())
    expect(
        count == 6 * 16 + 16 + 16 * 4 + 4,
        "wrong number of parameters",
        expected=str(6 * 16 + 16 + 16 * 4 + 4),
        got=str(count),
    )


# ---------------------------------------------------------------------------------------------------------------
gap = SET.question("alignment_gap", "How aligned is the space?")


@gap.test(points=1, hint="Return a Python float (use .item()).")
def returns_a_float(fn):
    """returns a Python float"""
    out = fn(torch.randn(4, 3, generator=_gen(3)), torch.randn(4, 3, generator=_gen(4)))
    expect(isinstance(out, float), "alignment_gap must return a Python float", got=type(out).__name__)


@gap.test(points=1, hint="Matched pairs: the diagonal of the cosine matrix; mismatched: everything off it.")
def perfect_alignment_scores_one(fn):
    """identical orthonormal embeddings: matched 1, mismatched 0, gap 1"""
    emb = torch.eye(4)
    expect_number(fn(emb, emb.clone()), 1.0, atol=1e-5)


@gap.test(points=1, hint="mean(diagonal) - mean(off-diagonal), both of the cosine similarity matrix.")
def two_pairs_by_hand(fn):
    """a hand-computed example with two pairs"""
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    r = 1 / math.sqrt(2)
    # cosine matrix [[r, 0], [r, 1]]: matched mean (r + 1) / 2, mismatched mean (0 + r) / 2
    expect_number(fn(image, text), (r + 1) / 2 - r / 2, atol=1e-5)
