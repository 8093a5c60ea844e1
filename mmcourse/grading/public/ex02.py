"""Exercise set 2 (chapter 02_representation, article §2): a shared space, three alignment objectives."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.grading.expect import expect, expect_close, expect_number, expect_raises, expect_tensor
from mmcourse.grading.spec import ExerciseSet
from mmcourse.train import seeded

SET = ExerciseSet(
    "ex02",
    "A shared space: projection heads, similarity, and three ways to align",
    chapter="02_representation",
    version=3,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
cosine = SET.question(
    "cosine_similarity_matrix",
    "Cosine similarity of every pair",
    forbidden=("mmcourse.retrieval.cosine_similarity_matrix",),
    points=6,
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
    points=6,
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
gap = SET.question("alignment_gap", "How aligned is the space?", points=5)


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


# ---------------------------------------------------------------------------------------------------------------
# Chapter 2 prints the three losses (implicit_matching_loss, explicit_attribute_loss, contrastive_loss); on embeddings
# they are nearly a transcription, so the question carries at most PRINTED_MAX_SHARE of the set: 0.5 points a test.
losses_q = SET.question(
    "alignment_losses",
    "The three alignment objectives: implicit, explicit, contrastive",
    points=4,
    printed_in="02_representation: implicit_matching_loss, explicit_attribute_loss, contrastive_loss",
)

_KEYS = ("implicit", "explicit", "contrastive")


def _problem(b=4, d=3, seed=0, ids=None):
    """Random embeddings, distinct caption ids, labels for two attributes, a linear matching head, class weights."""
    g = _gen(seed)
    image, text = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    text_ids = torch.arange(b)[:, None].repeat(1, 2) if ids is None else ids
    labels = {"color": torch.randint(0, 3, (b,), generator=g), "shape": torch.randint(0, 2, (b,), generator=g)}
    weights = {"color": torch.randn(3, d, generator=g), "shape": torch.randn(2, d, generator=g)}
    with seeded(seed):
        head = nn.Linear(4 * d, 1)
    return image, text, text_ids, labels, head, weights


class _ConstantHead(nn.Module):
    """A matching head that answers `value` for every pair and records the features it was given."""

    def __init__(self, value):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(value)))
        self.seen = []

    def forward(self, features):
        self.seen.append(features.detach().clone())
        return self.value.expand(features.shape[0], 1) + 0 * features[:, :1]


@losses_q.test(
    points=0.5,
    hint="Return {'implicit': ..., 'explicit': ..., 'contrastive': ...}, each a 0-d tensor "
    "that autograd can differentiate.",
)
def returns_three_differentiable_scalars(fn):
    """returns a dict of three 0-d tensors; gradients reach both embeddings, the head and the class weights"""
    image, text, ids, labels, head, weights = _problem()
    image.requires_grad_(True)
    text.requires_grad_(True)
    for w in weights.values():
        w.requires_grad_(True)
    out = fn(image, text, ids, labels, head, weights)
    expect(
        isinstance(out, dict) and set(out) == set(_KEYS),
        "must return a dict with keys " + ", ".join(_KEYS),
        got=repr(sorted(out)) if isinstance(out, dict) else type(out).__name__,
    )
    for key in _KEYS:
        expect_tensor(out[key], shape=(), floating=True, what=f"losses[{key!r}]")
    sum(out.values()).backward()
    for name, tensor in (
        ("image_emb", image),
        ("text_emb", text),
        ("the head's weight", head.weight),
        ("class_weights['color']", weights["color"]),
    ):
        expect(tensor.grad is not None and tensor.grad.abs().sum() > 0, f"no gradient reaches {name}")


@losses_q.test(
    points=0.5,
    hint="logits = logit_scale * image @ text.T on L2-normalised embeddings; cross-entropy "
    "with targets arange(B), along rows and along columns, averaged.",
)
def contrastive_on_orthonormal_pairs(fn):
    """contrastive: orthonormal pairs give log(1 + (B - 1) exp(-logit_scale)); symmetric in image and text"""
    b = 4
    emb = torch.eye(b)
    _, _, ids, labels, _, weights = _problem(b=b, d=b)
    out = fn(2.0 * emb, emb.clone(), ids, labels, nn.Linear(4 * b, 1), weights, logit_scale=3.0)
    expect_number(out["contrastive"], math.log(1 + (b - 1) * math.exp(-3.0)), atol=1e-5, what="the contrastive loss")
    image, text, ids, labels, head, weights = _problem(b=5, d=3, seed=3)
    forward = fn(image, text, ids, labels, head, weights)["contrastive"]
    swapped = fn(text, image, ids, labels, head, weights)["contrastive"]
    expect_number(
        swapped, float(forward.detach()), atol=1e-5, what="the contrastive loss with images and texts swapped"
    )


@losses_q.test(
    points=0.5,
    hint="Both modalities, every attribute: cross-entropy of class_scale * cos(z, w_class); "
    "average the 2 x (number of attributes) losses.",
)
def explicit_with_embeddings_on_their_class_directions(fn):
    """explicit: embeddings lying on their classes' (orthogonal) directions"""
    # 2 attributes, both with 2 classes, in 4 dims: colour uses dims 0-1, shape dims 2-3
    weights = {
        "color": torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0]]),
        "shape": torch.tensor([[0, 0, 2.0, 0], [0, 0, 0, 2.0]]),
    }
    labels = {"color": torch.tensor([0, 1]), "shape": torch.tensor([1, 0])}
    image = torch.tensor([[3.0, 0, 0, 3.0], [0, 1.0, 1.0, 0]])
    text = torch.tensor([[2.0, 0, 0, 0], [0, 3.0, 0, 0]])
    out = fn(image, text, torch.tensor([[0], [1]]), labels, nn.Linear(16, 1), weights, class_scale=4.0)
    # each image has cosine 1/sqrt(2) with its colour and its shape direction, 0 with the other class; each text
    # lies on its colour direction (cosine 1) and is orthogonal to both shapes (a 50/50 guess)
    image_loss = math.log(1 + math.exp(-4.0 / math.sqrt(2)))
    want = (2 * image_loss + math.log(1 + math.exp(-4.0)) + math.log(2)) / 4
    expect_number(out["explicit"], want, atol=1e-5, what="the explicit loss (mean over 2 modalities x 2 attributes)")


@losses_q.test(
    points=0.5,
    hint="The head reads torch.cat([i, t, i * t, (i - t).abs()], dim=-1) of normalised embeddings: (B, 4D).",
)
def implicit_feeds_the_head_pair_features(fn):
    """implicit: the head sees [i; t; i*t; |i-t|] of the true pairs and of rolled (mismatched) pairs"""
    image, text, ids, labels, _, weights = _problem(b=3, d=2, seed=1)
    head = _ConstantHead(0.0)
    out = fn(image, text, ids, labels, head, weights)
    i, t = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    seen = torch.cat(head.seen)
    expect_tensor(seen, shape=(6, 8), what="all the features the head was given (true pairs, then mismatched)")
    expect_close(seen[:3], torch.cat([i, t, i * t, (i - t).abs()], dim=-1), what="the features of the true pairs")
    expect_number(out["implicit"], math.log(2), atol=1e-5, what="the implicit loss when the head always says 0")


@losses_q.test(
    points=0.5,
    hint="Targets: 1 for the B true pairs, 0 for the rolled ones unless their caption ids are identical; binary "
    "cross-entropy with logits, mean over all pairs.",
)
def implicit_targets_and_negatives(fn):
    """implicit: a head that always says 'match' is wrong exactly on the mismatched pairs (identical captions match)"""
    image, text, ids, labels, _, weights = _problem(b=5, d=3, seed=2)
    c = 4.0
    for k in (1, 2):
        out = fn(image, text, ids, labels, _ConstantHead(c), weights, num_negatives=k)
        want = (F.softplus(torch.tensor(-c)) + k * F.softplus(torch.tensor(c))) / (k + 1)
        expect_number(out["implicit"], float(want), atol=1e-5, what=f"the implicit loss, num_negatives={k}")
    same = ids.clone()
    same[1] = same[0]  # captions 0 and 1 are word for word the same: (image 1, text 0) is a true pair
    out = fn(image, text, same, labels, _ConstantHead(c), weights, num_negatives=1)
    want = (6 * F.softplus(torch.tensor(-c)) + 4 * F.softplus(torch.tensor(c))) / 10
    expect_number(out["implicit"], float(want), atol=1e-5, what="the implicit loss with two identical captions")


# ---------------------------------------------------------------------------------------------------------------
SET.written_question("alignment_experiment", "What each objective aligns", points=3)
