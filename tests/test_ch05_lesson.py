"""Chapter 5 shows its code (cells tagged ``lesson``): check that it agrees with the library.

* its ``draw_negatives`` / ``itm_pairs`` draw the same pairs, bit for bit, as
  :func:`mmcourse.objectives.itm.sample_hard_negatives` / :func:`~mmcourse.objectives.itm.make_itm_pairs`;
* its ``itm_step_loss`` equals the ITM loss and accuracy of :meth:`mmcourse.models.albef.ALBEF.compute_losses`;
* its ``teacher_forcing`` equals :func:`mmcourse.objectives.itg.shift_for_teacher_forcing`, its
  ``caption_loss_shown`` :meth:`mmcourse.models.captioner.Captioner.loss`;
* its ``beam_search_one`` returns the captions and scores of :func:`mmcourse.objectives.itg.beam_search`.
"""

import pytest
import torch
from lesson_code import lesson_namespace

from mmcourse.data import ShapesWorld, Tokenizer
from mmcourse.labs.ch05_pretraining import cache_image_tokens, prepare_data
from mmcourse.models.albef import ALBEF
from mmcourse.objectives.itg import beam_search, shift_for_teacher_forcing
from mmcourse.objectives.itm import make_itm_pairs, sample_hard_negatives
from mmcourse.train import seeded


@pytest.fixture(scope="module")
def ns():
    return lesson_namespace("05_pretraining.ipynb")


@pytest.fixture(scope="module")
def setup():
    world = ShapesWorld(40, image_size=16, min_objects=2, max_objects=2, seed=3)
    tok = Tokenizer.from_world(world)
    with seeded(0):
        model = ALBEF(tok.vocab_size, image_size=16, cnn_width=4, dim=16, embed_dim=16, num_heads=2, max_len=12,
                      captioner=True)
    model.eval()
    data = cache_image_tokens(model, prepare_data(world, tok, range(12), max_len=12))
    return tok, model, data


def test_itm_pairs_match_the_library(ns):
    similarity = torch.randn(10, 10, generator=torch.Generator().manual_seed(1)) * 3
    for seed in range(3):
        shown = ns["draw_negatives"](similarity, torch.Generator().manual_seed(seed))
        assert torch.equal(shown, sample_hard_negatives(similarity, generator=torch.Generator().manual_seed(seed)))
        shown = ns["itm_pairs"](similarity, torch.Generator().manual_seed(seed))
        library = make_itm_pairs(similarity, generator=torch.Generator().manual_seed(seed))
        for a, b in zip(shown, library, strict=True):
            assert torch.equal(a, b)
    image_index, text_index, labels = shown
    assert labels.tolist() == [1] * 10 + [0] * 20
    assert not (image_index[10:20] == text_index[10:20]).any() and not (image_index[20:] == text_index[20:]).any()


def test_itm_step_loss_matches_compute_losses(ns, setup):
    _, model, data = setup
    batch = {k: data[k] for k in ("images", "input_ids", "attention_mask", "image_tokens")}
    loss, acc = ns["itm_step_loss"](model, batch["image_tokens"], batch["input_ids"], batch["attention_mask"],
                                    torch.Generator().manual_seed(0))
    out = model.compute_losses(batch, ("itm",), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss, out["itm"], atol=1e-6)
    assert torch.allclose(acc, out["itm_acc"])
    loss.backward()  # the shown loss trains the fusion encoder and the ITM head
    assert model.itm_head.proj.weight.grad is not None and model.fusion.parameters().__next__().grad is not None
    model.zero_grad()


def test_teacher_forcing_and_caption_loss_match_the_library(ns, setup):
    tok, model, data = setup
    ids = data["input_ids"]
    inputs, targets = ns["teacher_forcing"](ids, tok.bos_id)
    lib_inputs, lib_targets = shift_for_teacher_forcing(ids, bos_id=tok.bos_id)
    assert torch.equal(inputs, lib_inputs) and torch.equal(targets, lib_targets)
    assert (inputs[:, 0] == tok.bos_id).all() and torch.equal(inputs[:, 1:], targets[:, :-1])
    shown = ns["caption_loss_shown"](model.captioner, data["image_tokens"], ids, tok.bos_id, tok.pad_id)
    library = model.captioner.loss(data["images"], ids, image_tokens=data["image_tokens"])
    assert torch.allclose(shown, library, atol=1e-6)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_beam_search_one_matches_the_library(ns, setup, num_beams):
    tok, model, data = setup
    memory = data["image_tokens"][:6]
    with torch.no_grad():
        tokens, scores = beam_search(lambda t, i: model.captioner.decode(t, memory[i])[:, -1], 6, tok.bos_id,
                                     tok.eos_id, 8, num_beams)
        for i in range(6):
            step = lambda t, i=i: model.captioner.decode(t, memory[i : i + 1])[0, -1].log_softmax(-1)  # noqa: E731
            shown, score = ns["beam_search_one"](step, tok.bos_id, tok.eos_id, 8, num_beams)
            library = [t for t in tokens[i].tolist() if t != tok.pad_id]
            assert shown == library
            assert score == pytest.approx(float(scores[i]), abs=1e-5)
