"""Chapter 4 shows its code (cells tagged ``lesson``): check that it agrees with the library and the lab.

* the notebook's ``train_clip`` loop (with ``clip_step``, ``shuffled_batches``, ``learning_rate_factor``) gives the
  same losses, logit scales and parameters, bit for bit, as :func:`mmcourse.labs.common.train_tiny_clip`;
* its ``LogitScale`` gives the values and gradients of :class:`mmcourse.objectives.contrastive.LogitScale`;
* its ``clip_step`` equals ``TinyCLIP.loss``;
* its ``temperature_sweep`` equals the lab's; its zero-shot code equals the lab's and the library's.
"""

import math

import pytest
import torch
from lesson_code import lesson_namespace

from mmcourse.data import COLORS, SHAPES, ShapesWorld, Tokenizer
from mmcourse.labs import ch04_contrastive
from mmcourse.labs.common import SHAPES_TEMPLATES, class_prompt_names, scene_text_pairs, train_tiny_clip
from mmcourse.models.clip import build_tiny_clip
from mmcourse.objectives.contrastive import LogitScale
from mmcourse.retrieval import zero_shot_classifier
from mmcourse.train import seeded


@pytest.fixture(scope="module")
def ns():
    return lesson_namespace("04_contrastive.ipynb")


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(200, image_size=16, min_objects=1, max_objects=2, seed=1)


@pytest.fixture(scope="module")
def tokenizer(world):
    return Tokenizer.from_world(world)


def _model(tokenizer, seed=0, text_pool="mean"):
    with seeded(seed):
        return build_tiny_clip(
            tokenizer.vocab_size, image_size=16, cnn_width=4, vision_dim=16, text_dim=16, text_depth=1,
            num_heads=2, embed_dim=8, text_pool=text_pool,
        )  # fmt: skip


def test_the_lesson_cells_define_the_shown_code(ns):
    for name in ("LogitScale", "clip_step", "shuffled_batches", "learning_rate_factor", "train_clip",
                 "zero_shot_classifier", "template_accuracies", "temperature_sweep"):  # fmt: skip
        assert callable(ns[name]), name


@pytest.mark.parametrize("text_pool", ["mean", "eos"])
def test_the_notebook_loop_is_train_tiny_clip_bit_for_bit(ns, world, tokenizer, text_pool):
    data = scene_text_pairs(world, tokenizer)  # 200 scenes, batches of 48: a new epoch after 4 steps
    shown, library = _model(tokenizer, text_pool=text_pool), _model(tokenizer, text_pool=text_pool)
    evaluate = lambda model: {"scale": float(model.logit_scale().detach()), "training": float(model.training)}
    log = ns["train_clip"](shown, data, steps=9, batch_size=48, warmup=3, seed=7, eval_fn=evaluate, eval_every=4)
    history = train_tiny_clip(library, data, steps=9, batch_size=48, warmup_steps=3, seed=7, eval_fn=evaluate,
                              eval_every=4)  # fmt: skip
    assert log["loss"] == history.losses
    assert log["logit_scale"] == history.metrics["logit_scale"]
    assert list(log["eval"]) == history.eval_steps[:2] == [4, 8]  # fit also evaluates after the last step
    assert [e["scale"] for e in log["eval"].values()] == history.eval_metrics["scale"][:2]
    assert all(e["training"] == 0.0 for e in log["eval"].values())  # evaluated in eval() mode
    assert not shown.training and not library.training
    for (name, a), (_, b) in zip(shown.state_dict().items(), library.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_the_learning_rate_factor_is_fits_warmup_and_cosine(ns):
    from mmcourse.train import _cosine_factor

    for step in range(30):
        assert ns["learning_rate_factor"](step, 30, 5) == _cosine_factor(step, 30, 5)


def test_shuffled_batches_are_fits_minibatches(ns):
    from mmcourse.train import iterate_minibatches

    shown = ns["shuffled_batches"](50, 16, torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    data = torch.arange(50)
    expected = [b for _ in range(3) for b in iterate_minibatches(data, 16, generator)]
    for batch in expected:
        assert torch.equal(next(shown), batch)


def test_clip_step_is_the_models_loss(ns, world, tokenizer):
    model = _model(tokenizer).train()
    ids, mask = tokenizer.encode(world.captions[:12], max_len=16)
    images = world.images[:12]
    torch.testing.assert_close(ns["clip_step"](model, images, ids, mask), model.loss(images, ids, mask),
                               rtol=0, atol=0)  # fmt: skip


@pytest.mark.parametrize("log_scale", [math.log(1 / 0.07), math.log(50.0), math.log(100.0) + 0.3])
def test_the_shown_logit_scale_is_the_librarys(ns, log_scale):
    shown, library = ns["LogitScale"](), LogitScale()
    assert shown.log_scale.item() == library.log_scale.item() == pytest.approx(math.log(1 / 0.07))
    similarity = torch.randn(6, 6, generator=torch.Generator().manual_seed(0)).tanh()
    gradients = []
    for module in (shown, library):
        with torch.no_grad():
            module.log_scale.fill_(log_scale)
        loss = torch.nn.functional.cross_entropy(module() * similarity, torch.arange(6))
        loss.backward()
        gradients.append((module().item(), module.log_scale.grad.item()))
    assert gradients[0] == gradients[1]
    if log_scale > math.log(100):
        assert gradients[0] == (100.0, 0.0)  # capped in the forward pass: no gradient beyond the clamp


def test_the_shown_temperature_sweep_is_the_labs(ns):
    similarity = torch.nn.functional.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    similarity = similarity @ similarity.roll(1, 0).t() * 0.5 + 0.5 * torch.eye(16)
    temperatures = [1.0, 0.1, 0.07, 0.01]
    shown, lab = ns["temperature_sweep"](similarity, temperatures), ch04_contrastive.temperature_sweep(
        similarity, temperatures
    )
    assert shown.keys() == lab.keys()
    for key in lab:
        assert shown[key] == pytest.approx(lab[key], rel=1e-9, abs=1e-12), key


def test_the_shown_zero_shot_code_is_the_labs_and_the_librarys(ns, world, tokenizer):
    model = _model(tokenizer).eval()
    data = scene_text_pairs(world, tokenizer)
    train_tiny_clip(model, data, steps=6, batch_size=64, warmup_steps=2, seed=0)
    classnames = class_prompt_names(COLORS, SHAPES)
    torch.testing.assert_close(
        ns["zero_shot_classifier"](model, tokenizer, classnames, SHAPES_TEMPLATES),
        zero_shot_classifier(model, tokenizer, classnames, SHAPES_TEMPLATES),
    )
    one = [i for i in range(len(world)) if int(world.num_objects[i]) == 1]
    shown = ns["template_accuracies"](model, tokenizer, world.images[one], world.labels[one], classnames,
                                      SHAPES_TEMPLATES)  # fmt: skip
    assert shown == ch04_contrastive.zero_shot_template_accuracies(model, world, tokenizer, one, SHAPES_TEMPLATES)
