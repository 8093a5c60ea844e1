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
    version=4,
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
# Chapter 2 prints the three losses (implicit_matching_loss, explicit_attribute_loss, contrastive_loss). Its
# contrastive loss takes only the diagonal as positive, although its batches hold word-for-word identical captions:
# here those are positives too (a multi-positive InfoNCE), and the implicit loss takes any number of mismatches. The
# points reward that part, so a copy of the chapter's code earns about a third of them.
losses_q = SET.question(
    "alignment_losses",
    "The three alignment objectives, with identical captions as positives",
    forbidden=(
        "mmcourse.objectives.contrastive.clip_loss",
        "mmcourse.objectives.contrastive.contrastive_loss",
        "mmcourse.labs.ch02_representation.implicit_matching_loss",
        "mmcourse.labs.ch02_representation.explicit_attribute_loss",
        "mmcourse.grading.public.ex02._loop_contrastive",  # the public tests' own reference
    ),
    points=12,
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


#: Six captions (rows of token ids) in three groups of identical ones: {0, 1, 3}, {2, 5} and {4}. Caption 4 shares
#: its first token with group {0, 1, 3} and caption 2 its second with caption 4: equal in *every* position or not.
GROUPED_IDS = torch.tensor([[3, 1, 4], [3, 1, 4], [5, 0, 2], [3, 1, 4], [3, 0, 9], [5, 0, 2]])
GROUP_SIZES = (3, 3, 2, 3, 1, 2)


def _contrastive(fn, image, text, ids, logit_scale):
    """The contrastive term of fn's answer (the other arguments: a matching head and one attribute)."""
    d = image.shape[1]
    labels, weights = {"color": torch.zeros(image.shape[0], dtype=torch.long)}, {"color": torch.eye(2, d)}
    return fn(image, text, ids, labels, nn.Linear(4 * d, 1), weights, logit_scale=logit_scale)["contrastive"]


def _loop_contrastive(image, text, ids, logit_scale):
    """One image (row) and one text (column) at a time, in float64: -log of the probability on its positives."""
    i = image.double() / image.double().norm(dim=1, keepdim=True)
    t = text.double() / text.double().norm(dim=1, keepdim=True)
    b = i.shape[0]
    per_image, per_text = [], []
    for r in range(b):
        scores = torch.stack([logit_scale * (i[r] @ t[c]) for c in range(b)])
        mine = torch.stack([scores[c] for c in range(b) if torch.equal(ids[c], ids[r])])
        per_image.append(torch.logsumexp(scores, 0) - torch.logsumexp(mine, 0))
    for c in range(b):
        scores = torch.stack([logit_scale * (i[r] @ t[c]) for r in range(b)])
        mine = torch.stack([scores[r] for r in range(b) if torch.equal(ids[r], ids[c])])
        per_text.append(torch.logsumexp(scores, 0) - torch.logsumexp(mine, 0))
    return (torch.stack(per_image).mean() + torch.stack(per_text).mean()) / 2


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
    points=1,
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
    points=1,
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
    points=1,
    hint="For k = 0 ... num_negatives the head reads torch.cat([i, t_k, i * t_k, (i - t_k).abs()], dim=-1) with "
    "t_k = t.roll(k, dims=0); target 1 for k = 0 and for a shifted pair whose text_ids rows are equal, else 0; one "
    "binary cross-entropy with logits over all (num_negatives + 1) * B pairs.",
)
def implicit_pairs_targets_and_negatives(fn):
    """implicit: the head reads [i; t; i*t; |i-t|] of the true and num_negatives shifted pairs; same caption: match"""
    image, text, ids, labels, _, weights = _problem(b=5, d=3, seed=2)
    i, t = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    c = 4.0
    for k in (1, 2):
        head = _ConstantHead(c)
        out = fn(image, text, ids, labels, head, weights, num_negatives=k)
        seen = torch.cat(head.seen)
        expect_tensor(seen, shape=(5 * (k + 1), 12), what=f"all the features the head was given (num_negatives={k})")
        expect_close(seen[:5], torch.cat([i, t, i * t, (i - t).abs()], dim=-1), what="the features of the true pairs")
        # a head that always says "match" is right on the B true pairs and wrong on the k * B mismatched ones
        want = (F.softplus(torch.tensor(-c)) + k * F.softplus(torch.tensor(c))) / (k + 1)
        expect_number(out["implicit"], float(want), atol=1e-5, what=f"the implicit loss, num_negatives={k}")
    same = ids.clone()
    same[1] = same[0]  # captions 0 and 1 are word for word the same: (image 1, text 0) is a true pair
    out = fn(image, text, same, labels, _ConstantHead(c), weights, num_negatives=1)
    want = (6 * F.softplus(torch.tensor(-c)) + 4 * F.softplus(torch.tensor(c))) / 10
    expect_number(out["implicit"], float(want), atol=1e-5, what="the implicit loss with two identical captions")


@losses_q.test(
    points=1,
    hint="logits = logit_scale * i @ t.T on L2-normalised embeddings. When every caption differs, each image's only "
    "positive is its own text: cross-entropy with targets arange(B) along the rows and along the columns, averaged.",
)
def contrastive_with_distinct_captions_is_clips_loss(fn):
    """contrastive, all captions different: CLIP's loss, log(1 + (B - 1) exp(-s)) for orthonormal pairs; symmetric"""
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
    points=1,
    hint="Two rows of text_ids are the same caption when they agree in every position: compare all pairs of rows by "
    "broadcasting ((B, 1, L) against (1, B, L)) and require all tokens equal, which gives a (B, B) mask of positives. "
    "Those texts are positives, not negatives, and not to be dropped either: image r's loss is -log of the probability "
    "its softmax puts on all its positive texts together, logsumexp(all its scores) - logsumexp(its positives' "
    "scores). At logit_scale 0 every text gets 1/B, so that is log(B / number of positives).",
)
def contrastive_identical_captions_at_logit_scale_zero(fn):
    """contrastive, logit_scale 0, captions in groups of 3, 2 and 1: the mean of log(B / size of the group)"""
    image, text = torch.randn(6, 4, generator=_gen(5)), torch.randn(6, 4, generator=_gen(6))
    want = sum(math.log(6 / size) for size in GROUP_SIZES) / 6
    expect_number(
        _contrastive(fn, image, text, GROUPED_IDS, logit_scale=0.0),
        want,
        atol=1e-5,
        what="the contrastive loss at logit_scale 0 (captions {0, 1, 3}, {2, 5}, {4} identical)",
    )


@losses_q.test(
    points=1,
    hint="If the loss stays near log(size of the group) here, identical texts still compete: the softmax splits its "
    "mass among them, and only their sum can approach 1. Sum the probabilities of the positives, then take the log "
    "(averaging their log-probabilities, i.e. soft targets, has the same floor).",
)
def contrastive_separated_groups_cost_almost_nothing(fn):
    """contrastive, groups of identical captions on their own axes: log(1 + (B - n) / n exp(-s)) per pair, n its group's
    size: it tends to 0"""
    direction = torch.eye(3, 5)[[0, 0, 1, 0, 2, 1]]  # the groups of GROUPED_IDS, one axis each
    for scale in (2.0, 8.0):
        want = sum(math.log(1 + (6 - n) / n * math.exp(-scale)) for n in GROUP_SIZES) / 6
        expect_number(
            _contrastive(fn, 3.0 * direction, direction.clone(), GROUPED_IDS, logit_scale=scale),
            want,
            atol=1e-5,
            what=f"the contrastive loss of separated groups at logit_scale {scale:g}",
        )


@losses_q.test(
    points=1,
    hint="Row r: image r against every text (reduce along dim 1); column c: text c against every image (along dim "
    "0), with the same mask of positives (it is symmetric). Take the mean over the B images and the mean over the B "
    "texts, then average the two.",
)
def contrastive_agrees_with_a_loop_over_images_and_texts(fn):
    """contrastive, random embeddings of any length, identical captions: agrees with a loop over images and texts"""
    for seed, scale in ((7, 1.0), (8, 6.0)):
        image = torch.randn(6, 4, generator=_gen(seed)) * torch.tensor([[0.5], [2], [1], [3], [0.7], [1.5]])
        text = torch.randn(6, 4, generator=_gen(seed + 10))
        want = _loop_contrastive(image, text, GROUPED_IDS, scale)
        expect_number(
            _contrastive(fn, image, text, GROUPED_IDS, logit_scale=scale),
            float(want),
            atol=1e-5,
            what=f"the contrastive loss at logit_scale {scale:g}",
        )


# ---------------------------------------------------------------------------------------------------------------
SET.written_question("alignment_experiment", "What each objective aligns", points=3)
