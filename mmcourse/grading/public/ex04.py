"""Exercise set 4 (chapter 04_contrastive, article §4.1): CLIP's loss and zero-shot classification."""

import math

import torch

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number, expect_tensor
from mmcourse.grading.spec import ExerciseSet

SET = ExerciseSet("ex04", "Contrastive learning: CLIP loss and zero-shot", chapter="04_contrastive", version=1)

#: The library's own contrastive losses: calling them earns nothing.
LIBRARY_LOSSES = (
    "mmcourse.objectives.contrastive.contrastive_loss",
    "mmcourse.objectives.contrastive.clip_loss",
    "mmcourse.objectives.contrastive.siglip_loss",
    "mmcourse.models.clip.TinyCLIP.loss",
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
loss_q = SET.question("clip_loss", "CLIP's symmetric contrastive loss", forbidden=LIBRARY_LOSSES)


@loss_q.test(points=1, hint="Average the two cross-entropies: the result is a 0-d tensor.")
def returns_a_scalar_tensor(fn):
    """returns a 0-d (scalar) tensor"""
    out = fn(torch.randn(4, 8, generator=_gen(0)), torch.randn(4, 8, generator=_gen(1)))
    expect_tensor(out, shape=(), floating=True)


@loss_q.test(points=1, hint="With identical embeddings every logit is equal: each cross-entropy is log(N).")
def identical_embeddings_give_log_n(fn):
    """all embeddings identical: the loss is log(N)"""
    features = torch.ones(5, 3)
    expect_number(fn(features, features.clone()), math.log(5), atol=1e-4)


@loss_q.test(points=2, hint="L2-normalise both feature sets, logits = image @ text.T / temperature.")
def orthonormal_pairs_closed_form(fn):
    """orthonormal matched pairs: log(1 + (N - 1) exp(-1 / temperature))"""
    n, t = 4, 0.5
    features = torch.eye(n) * 3.0  # normalisation must remove the factor 3
    expect_number(fn(features, features.clone(), temperature=t), math.log(1 + (n - 1) * math.exp(-1 / t)), atol=1e-4)


@loss_q.test(points=1, hint="Average image->text and text->image cross-entropies.")
def symmetric_in_images_and_texts(fn):
    """swapping images and texts gives the same loss"""
    image, text = torch.randn(6, 5, generator=_gen(2)), torch.randn(6, 5, generator=_gen(3))
    expect_number(fn(text, image), float(fn(image, text)), atol=1e-5, what="clip_loss(text, image)")


# ---------------------------------------------------------------------------------------------------------------
classifier_q = SET.question(
    "zero_shot_classifier",
    "Class embeddings from prompt templates",
    forbidden=("mmcourse.retrieval.zero_shot_classifier",),
)


@classifier_q.test(points=1, hint="Average over the templates (dim 1).")
def one_row_per_class(fn):
    """(C, T, D) prompt embeddings give (C, D) class embeddings"""
    expect_tensor(fn(torch.randn(3, 4, 6, generator=_gen(4))), shape=(3, 6), floating=True)


@classifier_q.test(points=1, hint="Normalise the mean again at the end.")
def class_embeddings_have_unit_length(fn):
    """every class embedding has L2 norm 1"""
    out = fn(torch.randn(5, 2, 7, generator=_gen(5)) * 4)
    expect_close(out.norm(dim=-1), torch.ones(5), what="the row norms")


@classifier_q.test(points=1, hint="One template: the class embedding is that prompt's normalised embedding.")
def single_template_is_just_normalised(fn):
    """with one template per class the result is the normalised prompt embedding"""
    prompts = torch.tensor([[[3.0, 4.0]], [[0.0, -2.0]]])
    expect_close(fn(prompts), torch.tensor([[0.6, 0.8], [0.0, -1.0]]))


# ---------------------------------------------------------------------------------------------------------------
predict_q = SET.question(
    "zero_shot_predict",
    "Zero-shot prediction",
    forbidden=("mmcourse.retrieval.zero_shot_predict", "mmcourse.retrieval.zero_shot_accuracy"),
)


@predict_q.test(points=1, hint="Return (probs (B, C) float, preds (B,) long).")
def probabilities_and_predictions(fn):
    """returns probs (B, C) whose rows sum to 1 and preds (B,) of dtype long"""
    out = fn(torch.randn(4, 6, generator=_gen(6)), torch.randn(3, 6, generator=_gen(7)))
    expect(isinstance(out, tuple) and len(out) == 2, "must return a tuple (probs, preds)", got=type(out).__name__)
    probs, preds = out
    expect_tensor(probs, shape=(4, 3), floating=True, what="probs")
    expect_tensor(preds, shape=(4,), dtype=torch.long, what="preds")
    expect_close(probs.sum(-1), torch.ones(4), what="the row sums of probs")


@predict_q.test(points=1, hint="preds = probs.argmax(dim=-1)")
def an_image_equal_to_a_class_is_classified_as_it(fn):
    """an image embedding pointing at a class embedding is predicted as that class"""
    classifier = torch.nn.functional.normalize(torch.randn(5, 8, generator=_gen(8)), dim=-1)
    images = classifier[[3, 0, 4]] * 7.0
    _, preds = fn(images, classifier)
    expect_equal(preds, torch.tensor([3, 0, 4]), what="preds")


@predict_q.test(points=1, hint="probs = softmax(cosine / temperature); normalise the image features first.")
def probabilities_in_closed_form(fn):
    """two classes at cosines 1 and 0, temperature 0.5: probs [e^2, 1] / (e^2 + 1)"""
    image = torch.tensor([[2.0, 0.0]])
    classifier = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    probs, _ = fn(image, classifier, temperature=0.5)
    e2 = math.exp(2)
    expect_close(probs, torch.tensor([[e2 / (e2 + 1), 1 / (e2 + 1)]]), atol=1e-5, what="probs")
