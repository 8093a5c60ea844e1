"""Exercise set 4 (chapter 04_contrastive, article §4.1): CLIP's loss, a training step, zero-shot classification."""

import math

import torch

from mmcourse.grading.expect import expect, expect_close, expect_equal, expect_number, expect_tensor
from mmcourse.grading.spec import ExerciseSet

SET = ExerciseSet("ex04", "Contrastive learning: CLIP loss and zero-shot", chapter="04_contrastive", version=2)

#: The library's own contrastive losses: calling them earns nothing.
LIBRARY_LOSSES = (
    "mmcourse.objectives.contrastive.contrastive_loss",
    "mmcourse.objectives.contrastive.clip_loss",
    "mmcourse.objectives.contrastive.siglip_loss",
    "mmcourse.models.clip.TinyCLIP.loss",
    "mmcourse.objectives.contrastive.LogitScale.forward",
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
loss_q = SET.question(
    "clip_loss",
    "CLIP's symmetric contrastive loss",
    forbidden=LIBRARY_LOSSES,
    points=3,
    printed_in="04_contrastive: clip_step",
)


@loss_q.test(points=1, hint="Average the two cross-entropies: the result is a 0-d tensor.")
def returns_a_scalar_tensor(fn):
    """returns a 0-d (scalar) tensor"""
    out = fn(torch.randn(4, 8, generator=_gen(0)), torch.randn(4, 8, generator=_gen(1)))
    expect_tensor(out, shape=(), floating=True)


@loss_q.test(points=1, hint="L2-normalise both feature sets, logits = image @ text.T / temperature.")
def orthonormal_pairs_closed_form(fn):
    """orthonormal matched pairs: log(1 + (N - 1) exp(-1 / temperature))"""
    n, t = 4, 0.5
    features = torch.eye(n) * 3.0  # normalisation must remove the factor 3
    expect_number(fn(features, features.clone(), temperature=t), math.log(1 + (n - 1) * math.exp(-1 / t)), atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
classifier_q = SET.question(
    "zero_shot_classifier",
    "Class embeddings from prompt templates",
    forbidden=("mmcourse.retrieval.zero_shot_classifier",),
    points=3,
    printed_in="04_contrastive: zero_shot_classifier",
)


@classifier_q.test(points=1, hint="Average over the templates (dim 1).")
def one_row_per_class(fn):
    """(C, T, D) prompt embeddings give (C, D) class embeddings"""
    expect_tensor(fn(torch.randn(3, 4, 6, generator=_gen(4))), shape=(3, 6), floating=True)


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
    points=6,
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


# ---------------------------------------------------------------------------------------------------------------
step_q = SET.question(
    "clip_train_step",
    "A CLIP training step with a learnable, clamped temperature",
    forbidden=LIBRARY_LOSSES,
    points=11,
)


CLIP_LOG_SCALE = math.log(1 / 0.07)  #: CLIP's initial t: logit scale 1 / 0.07


def _toy_setup(seed: int, n=6, d_image=5, d_text=4, dim=3, log_scale=CLIP_LOG_SCALE, lr=0.1):
    """Two linear towers, a learnable t = log(logit scale), plain SGD over all of them, and a batch."""
    torch.manual_seed(seed)
    image_encoder, text_encoder = torch.nn.Linear(d_image, dim), torch.nn.Linear(d_text, dim)
    t = torch.nn.Parameter(torch.tensor(float(log_scale)))
    optimizer = torch.optim.SGD([*image_encoder.parameters(), *text_encoder.parameters(), t], lr=lr)
    g = _gen(seed + 100)
    images, texts = torch.randn(n, d_image, generator=g), torch.randn(n, d_text, generator=g)
    return image_encoder, text_encoder, t, optimizer, images, texts


def _symmetric_loss(image_encoder, text_encoder, t, images, texts):
    """The loss the step must report: normalised towers, logits exp(t) * cos, symmetric cross-entropy."""
    with torch.no_grad():
        image = image_encoder(images).double()
        text = text_encoder(texts).double()
        logits = t.double().exp() * (image / image.norm(dim=-1, keepdim=True)) @ (
            text / text.norm(dim=-1, keepdim=True)).T
        log_rows, log_cols = logits.log_softmax(dim=1).diagonal(), logits.log_softmax(dim=0).diagonal()
        return float(-(log_rows.mean() + log_cols.mean()) / 2)


@step_q.test(points=1, hint="Return loss.item(): a Python float, after optimizer.step().")
def returns_a_float_and_trains(fn):
    """returns the loss as a Python float and changes the towers' weights and t"""
    image_encoder, text_encoder, t, optimizer, images, texts = _toy_setup(0)
    before = image_encoder.weight.detach().clone(), text_encoder.weight.detach().clone(), t.item()
    loss = fn(image_encoder, text_encoder, t, optimizer, images, texts)
    expect(isinstance(loss, float), "the step must return a Python float (loss.item())", got=type(loss).__name__)
    expect(not torch.equal(image_encoder.weight, before[0]), "the image tower's weights did not change")
    expect(not torch.equal(text_encoder.weight, before[1]), "the text tower's weights did not change")
    expect(t.item() != before[2], "t (the log of the logit scale) did not change: is it part of the loss?")


@step_q.test(points=2, hint="logits = t.exp() * normalised image @ normalised text.T; the mean of both directions.")
def reports_the_loss_before_the_update(fn):
    """the returned loss is the symmetric loss at logit scale exp(t), before the update"""
    for seed, log_scale in ((1, CLIP_LOG_SCALE), (2, 0.0), (3, math.log(60.0))):
        image_encoder, text_encoder, t, optimizer, images, texts = _toy_setup(seed, log_scale=log_scale)
        want = _symmetric_loss(image_encoder, text_encoder, t, images, texts)
        expect_number(fn(image_encoder, text_encoder, t, optimizer, images, texts), want, atol=1e-4,
                      what=f"the loss (logit scale {math.exp(log_scale):.1f})")


@step_q.test(
    points=2,
    hint="Clamp the parameter t itself to [0, ln max_scale] after optimizer.step() (OpenCLIP), not exp(t) in "
    "the forward pass: a clamp in the forward pass lets t run past the cap.",
)
def t_never_leaves_zero_to_log_max_scale(fn):
    """t ends in [0, ln max_scale], also when the batch pushes it past the cap"""
    for sign, log_scale, seed in ((1.0, math.log(95.0), 4), (-1.0, 0.05, 5)):
        image_encoder, text_encoder, t, optimizer, images, texts = _tied_setup(seed, sign, log_scale)
        fn(image_encoder, text_encoder, t, optimizer, images, texts)
        if sign > 0:  # text i embeds exactly like image i: the loss wants an ever larger scale
            expect_number(t.item(), high=math.log(100.0) + 1e-6, what="t after a step that pushes it up")
        else:  # text i embeds opposite to image i: the loss wants an ever smaller scale
            expect_number(t.item(), low=0.0, what="t after a step that pushes it down")


def _tied_setup(seed: int, sign: float, log_scale: float, lr=50.0):
    """Text tower = sign * image tower and texts = images: cos(image i, text i) = sign for every pair."""
    image_encoder, text_encoder, t, optimizer, images, _ = _toy_setup(seed, d_text=5, log_scale=log_scale, lr=lr)
    with torch.no_grad():
        text_encoder.weight.copy_(sign * image_encoder.weight)
        text_encoder.bias.copy_(sign * image_encoder.bias)
    return image_encoder, text_encoder, t, optimizer, images, images.clone()


# ---------------------------------------------------------------------------------------------------------------
SET.written_question("learnt_temperature", "Experiment: what does the temperature learn?", points=3)
