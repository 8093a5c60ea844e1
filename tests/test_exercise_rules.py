"""The rule for questions whose answer a chapter prints: at most PRINTED_MAX_SHARE (20 %) of their set's points.

A chapter shows its code in the cells tagged ``lesson`` (see ``lesson_code.py``). When an exercise question asks for
what such a cell already does, copying the chapter must not be worth much: the question declares the chapter code in
``printed_in`` and may carry at most 20 % of its set's auto-graded points.

What is checked mechanically:

* every question that declares ``printed_in`` stays within the 20 %;
* a question whose chapter defines a function or class of the same name declares ``printed_in``;
* a *transcription* — the chapter's own function behind an adapter that only renames the question's arguments (no
  computation of its own) — is graded with the question's public and hidden tests; a question on which it earns at
  least half of the points declares ``printed_in``. The adapters below are the transcriptions; each says which
  chapter function it calls.

Declaring ``printed_in`` is also allowed where a transcription earns less (the judgement is conservative: e.g.
``beam_search``, whose chapter version calls the decoder once per beam). A set's central question may build on
printed chapter code (ex03's ``multi_head_cross_attention`` on ``multi_head_attention``, ex08's ``Int8Linear`` on
``int8_linear``) and stay large without ``printed_in``, as long as its points reward what the chapter leaves out:
the transcription then earns less than half of them.
"""

from __future__ import annotations

import copy
import re
import types

import pytest
import torch
import torch.nn.functional as F
from grading_fixtures import hidden_tests
from lesson_code import lesson_cells, lesson_namespace
from torch import nn

from mmcourse.grading.runner import run_question
from mmcourse.grading.spec import PRINTED_MAX_SHARE, available_sets, load_set

SETS = available_sets()


def _share(set_id: str, name: str) -> float:
    exercise_set, hidden = load_set(set_id), hidden_tests(set_id)
    return exercise_set[name].max_points(hidden) / exercise_set.max_points(hidden)


@pytest.mark.parametrize("set_id", SETS)
def test_questions_printed_in_a_chapter_carry_at_most_a_fifth_of_their_set(set_id):
    for question in load_set(set_id):
        if not question.printed_in:
            continue
        share = _share(set_id, question.name)
        assert share <= PRINTED_MAX_SHARE, (
            f"{question.key} ({question.printed_in}) is {share:.0%} of {set_id}'s auto-graded points; a question "
            f"whose answer a chapter prints may be at most {PRINTED_MAX_SHARE:.0%}"
        )


@pytest.mark.parametrize("set_id", SETS)
def test_a_question_named_like_chapter_code_declares_it(set_id):
    exercise_set = load_set(set_id)
    defined = set()
    for source in lesson_cells(f"{exercise_set.chapter}.ipynb"):
        defined |= set(re.findall(r"^(?:def|class)\s+(\w+)", source, flags=re.MULTILINE))
    for question in exercise_set:
        if question.name in defined:
            assert question.printed_in, f"chapter {exercise_set.chapter} defines {question.name}: declare printed_in"


# ----------------------------------------------------------------------------------------------------------------
# Transcriptions: the chapter's function, arguments renamed
# ----------------------------------------------------------------------------------------------------------------
def _ch01_modality_dropout(ch):
    def modality_dropout(image_features, text_features, p, generator=None):
        no_image, no_text = ch["modality_dropout"](image_features.shape[0], p, generator)
        zero = torch.zeros(())
        return torch.where(no_image[:, None], zero, image_features), torch.where(no_text[:, None], zero, text_features)

    return modality_dropout


def _ch02_alignment_losses(ch):
    def alignment_losses(image_emb, text_emb, text_ids, labels, match_head, class_weights, *, num_negatives=1,
                         logit_scale=1 / 0.07, class_scale=10.0):
        model = types.SimpleNamespace(encode_image=lambda images: F.normalize(image_emb, dim=-1),
                                      encode_text=lambda ids, mask: F.normalize(text_emb, dim=-1),
                                      logit_scale=lambda: logit_scale)
        head = types.SimpleNamespace(net=match_head, weights=class_weights, scale=class_scale)
        mask = torch.ones_like(text_ids)
        return {"implicit": ch["implicit_matching_loss"](model, head, None, text_ids, mask),
                "explicit": ch["explicit_attribute_loss"](model, head, None, text_ids, mask, labels),
                "contrastive": ch["contrastive_loss"](model, None, text_ids, mask)}

    return alignment_losses


def _projections(w_q, w_k, w_v, w_o, num_heads):
    return types.SimpleNamespace(q_proj=lambda x: x @ w_q, k_proj=lambda x: x @ w_k, v_proj=lambda x: x @ w_v,
                                 out_proj=lambda x: x if w_o is None else x @ w_o, num_heads=num_heads)


def _ch03_attention_weights(ch):
    def attention_weights(query, key, mask=None):
        eye = torch.eye(query.shape[-1], dtype=query.dtype)
        return ch["multi_head_attention"](_projections(eye, eye, eye, None, 1), query, key, key, mask=mask)[1][:, 0]

    return attention_weights


def _ch03_cross_modal_attention(ch):
    def cross_modal_attention(text, image, w_q, w_k, w_v, image_mask=None):
        out, weights = ch["multi_head_attention"](_projections(w_q, w_k, w_v, None, 1), text, image, image,
                                                  mask=image_mask)
        return out, weights[:, 0]

    return cross_modal_attention


def _ch03_multi_head_cross_attention(ch):
    def multi_head_cross_attention(text, image, w_q, w_k, w_v, w_o, num_heads, image_mask=None):
        return ch["multi_head_attention"](_projections(w_q, w_k, w_v, w_o, num_heads), text, image, image,
                                          mask=image_mask)

    return multi_head_cross_attention


def _ch04_clip_loss(ch):
    def clip_loss(image_features, text_features, temperature=0.07):
        model = types.SimpleNamespace(encode_image=lambda images: F.normalize(image_features, dim=-1),
                                      encode_text=lambda ids, mask: F.normalize(text_features, dim=-1),
                                      logit_scale=lambda: 1 / temperature)
        return ch["clip_step"](model, image_features, None, None)

    return clip_loss


def _ch04_clip_train_step(ch):
    def clip_train_step(image_encoder, text_encoder, log_scale, optimizer, images, texts, max_scale=100.0):
        # chapter 4's step: clip_step with its LogitScale (exp(t), capped in the forward pass), then train_clip's
        # zero_grad / backward / step
        model = types.SimpleNamespace(encode_image=lambda x: F.normalize(image_encoder(x), dim=-1),
                                      encode_text=lambda ids, mask: F.normalize(text_encoder(ids), dim=-1),
                                      logit_scale=lambda: log_scale.exp().clamp(max=max_scale))
        loss = ch["clip_step"](model, images, texts, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return clip_train_step


def _ch05_sample_hard_negatives(ch):
    def sample_hard_negatives(similarity, generator=None):
        return ch["draw_negatives"](similarity, generator)

    return sample_hard_negatives


def _ch05_itm_loss(ch):
    def itm_loss(similarity, match_logits, positives=None, generator=None):
        image_index, text_index, labels = ch["itm_pairs"](similarity, generator)
        logits = match_logits(image_index, text_index)
        loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return loss, ((logits > 0).long() == labels).float().mean().item()

    return itm_loss


def _ch05_beam_search(ch):
    def beam_search(step_fn, bos_id, eos_id, max_len, beam_width, length_penalty=1.0):
        return ch["beam_search_one"](lambda tokens: step_fn(tokens)[0], bos_id, eos_id, max_len, beam_width)

    return beam_search


def _ch07_corrupt_pairs(ch):
    def corrupt_pairs(num_pairs, noise_rate, generator=None):
        return ch["mismatch"](num_pairs, noise_rate, generator)

    return corrupt_pairs


def _ch08_quantize_per_channel(ch):
    return ch["quantize_per_channel"]


def _ch08_int8_linear(ch):
    class Int8Linear(nn.Module):  # the shell the question prescribes; every computation is the chapter's
        def __init__(self, linear):
            super().__init__()
            weight_q, weight_scale = ch["quantize_per_channel"](linear.weight.detach())
            self.register_buffer("weight_q", weight_q)
            self.register_buffer("weight_scale", weight_scale.float())
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

        @staticmethod
        def quantize_input(x):
            x_q, x_scale = ch["quantize_per_tensor"](x)
            return x_q, x_scale.float().expand(*x.shape[:-1], 1)

        def accumulate(self, x_q):
            return x_q.to(torch.int32) @ self.weight_q.to(torch.int32).T

        def forward(self, x):
            bias = torch.zeros(()) if self.bias is None else self.bias
            return ch["int8_linear"](x, self.weight_q, self.weight_scale, bias)

    return Int8Linear


TRANSCRIPTIONS = [
    ("ex01", "modality_dropout", _ch01_modality_dropout),
    ("ex02", "alignment_losses", _ch02_alignment_losses),
    ("ex03", "attention_weights", _ch03_attention_weights),
    ("ex03", "cross_modal_attention", _ch03_cross_modal_attention),
    ("ex03", "multi_head_cross_attention", _ch03_multi_head_cross_attention),
    ("ex04", "clip_loss", _ch04_clip_loss),
    ("ex04", "clip_train_step", _ch04_clip_train_step),
    ("ex05", "sample_hard_negatives", _ch05_sample_hard_negatives),
    ("ex05", "itm_loss", _ch05_itm_loss),
    ("ex05", "beam_search", _ch05_beam_search),
    ("ex07", "corrupt_pairs", _ch07_corrupt_pairs),
    ("ex08", "quantize_per_channel", _ch08_quantize_per_channel),
    ("ex08", "Int8Linear", _ch08_int8_linear),
]


def transcription_share(set_id: str, name: str, make) -> float:
    """The share of the question's points (public + hidden tests) that the chapter's code earns through ``make``."""
    exercise_set = load_set(set_id)
    question = copy.copy(exercise_set[name])
    question.tests = question.all_tests(hidden_tests(set_id))
    answer = make(lesson_namespace(f"{exercise_set.chapter}.ipynb"))
    result = run_question(question, {name: answer}, answer=answer, time_limit=30, capture_output=True)
    assert result.violation is None, result.report()
    return result.points / result.max_points


@pytest.mark.parametrize("set_id, name, make", TRANSCRIPTIONS, ids=[f"{s}.{n}" for s, n, _ in TRANSCRIPTIONS])
def test_a_question_that_a_transcription_mostly_answers_declares_it(set_id, name, make):
    share = transcription_share(set_id, name, make)
    question = load_set(set_id)[name]
    if share >= 0.5:
        assert question.printed_in, (
            f"the chapter's code, arguments renamed, earns {share:.0%} of {question.key}: declare printed_in"
        )


def test_the_transcriptions_can_fail():
    """The measurement is not a formality: a transcription of chapter code misses what the question adds."""
    assert transcription_share("ex05", "itm_loss", _ch05_itm_loss) < 0.5  # duplicates as positives: not printed
    assert transcription_share("ex03", "cross_modal_attention", _ch03_cross_modal_attention) == 1.0
