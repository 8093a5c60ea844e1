"""Tests of mmcourse.models.vqa: the cross-attention VQA model, its data, training, per-type accuracy and the prior."""

from __future__ import annotations

import pytest
import torch

from mmcourse.data import ANSWERS, COLORS, QUESTION_TYPES, SHAPES, ShapesWorld, Tokenizer
from mmcourse.labs.ch06_applications import (
    QuestionPrior,
    accuracy_per_type,
    answer_probabilities,
    predict_answers,
    train_vqa,
    vqa_tensors,
)
from mmcourse.models.vqa import VQAModel
from mmcourse.nn.encoders import SmallCNN
from mmcourse.nn.frozen import PrecomputedTokens


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld(60, image_size=16, max_objects=2, seed=1)


@pytest.fixture(scope="module")
def tokenizer(world) -> Tokenizer:
    return Tokenizer.from_world(world)


TOKENIZER = Tokenizer()


def small_model(vocab_size: int, **kwargs) -> VQAModel:
    torch.manual_seed(0)
    encoder = SmallCNN(3, width=4, dim=16, image_size=16)
    return VQAModel(vocab_size, encoder, dim=16, num_heads=2, max_len=12, **kwargs)


def hand_data(answers: list[str], types: list[str], questions: list[str] | None = None) -> dict:
    n = len(answers)
    return {
        "scene_ids": torch.zeros(n, dtype=torch.long),
        "input_ids": torch.ones(n, 4, dtype=torch.long),
        "attention_mask": torch.ones(n, 4, dtype=torch.long),
        "answer_ids": torch.tensor([ANSWERS.index(a) for a in answers]),
        "type_ids": torch.tensor([QUESTION_TYPES.index(t) for t in types]),
        "questions": questions if questions is not None else [f"q{i}" for i in range(n)],
    }


# ---------------------------------------------------------------------------------------------------- data
def test_vqa_tensors_has_one_consistent_row_per_question(world, tokenizer):
    data = vqa_tensors(world, tokenizer, indices=range(10), max_len=12)
    expected = [(i, q) for i in range(10) for q in world.questions(i)]
    n = len(expected)
    assert data["input_ids"].shape == data["attention_mask"].shape == (n, 12)
    assert [int(s) for s in data["scene_ids"]] == [i for i, _ in expected]
    assert data["questions"] == [q["question"] for _, q in expected]
    assert [ANSWERS[a] for a in data["answer_ids"].tolist()] == [q["answer"] for _, q in expected]
    assert [QUESTION_TYPES[t] for t in data["type_ids"].tolist()] == [q["type"] for _, q in expected]
    ids, _ = tokenizer.encode([expected[0][1]["question"]], max_len=12)
    assert torch.equal(data["input_ids"][0], ids[0])


def test_vqa_tensors_keeps_only_the_requested_types(world, tokenizer):
    data = vqa_tensors(world, tokenizer, types=["color", "count"])
    assert set(data["type_ids"].tolist()) == {QUESTION_TYPES.index("color"), QUESTION_TYPES.index("count")}


def test_vqa_tensors_rejects_bad_arguments(world, tokenizer):
    with pytest.raises(ValueError, match="types"):
        vqa_tensors(world, tokenizer, types=["colour"])
    with pytest.raises(ValueError, match="max_len"):
        vqa_tensors(world, tokenizer, max_len=0)


# --------------------------------------------------------------------------------------------------- model
def test_forward_shapes_and_cross_attention_weights(tokenizer):
    model = small_model(tokenizer.vocab_size, fusion_depth=2).eval()
    images = torch.rand(3, 3, 16, 16)
    ids, mask = tokenizer.encode(["what color is the circle?", "how many objects are there?", "is there a cross?"],
                                 max_len=12)  # fmt: skip
    logits = model(images, ids, mask)
    assert logits.shape == (3, len(ANSWERS))
    logits_again, weights = model(images, ids, mask, need_weights=True)
    assert torch.allclose(logits, logits_again)
    assert len(weights) == 2 and weights[0].shape == (3, 2, 12, 4)  # (B, heads, L, 2x2 grid)
    assert torch.allclose(weights[0].sum(-1), torch.ones(3, 2, 12), atol=1e-5)


def test_blind_model_ignores_scenes_and_runs_without_them(tokenizer):
    torch.manual_seed(0)
    model = VQAModel(tokenizer.vocab_size, None, dim=16, num_heads=2, max_len=12, use_image=False).eval()
    ids, mask = tokenizer.encode(["is there a red circle?"], max_len=12)
    logits, weights = model(None, ids, mask, need_weights=True)
    assert logits.shape == (1, len(ANSWERS)) and weights == []
    assert torch.equal(model(torch.rand(1, 3, 16, 16), ids, mask), logits)


def test_precomputed_tokens_stand_in_for_the_encoder(tokenizer):
    encoder = SmallCNN(3, width=4, dim=16, image_size=16).eval()
    images = torch.rand(2, 3, 16, 16)
    torch.manual_seed(0)
    on_images = VQAModel(tokenizer.vocab_size, encoder, dim=16, num_heads=2, max_len=12).eval()
    torch.manual_seed(0)
    on_tokens = VQAModel(tokenizer.vocab_size, PrecomputedTokens(16, grid_size=2), dim=16, num_heads=2, max_len=12)
    on_tokens.load_state_dict({k: v for k, v in on_images.state_dict().items() if not k.startswith("image_encoder")})
    ids, mask = tokenizer.encode(["what shape is the red object?"] * 2, max_len=12)
    with torch.no_grad():
        expected = on_images(images, ids, mask)
        got = on_tokens.eval()(encoder(images).tokens, ids, mask)
    assert torch.allclose(expected, got, atol=1e-6)


def test_model_validation_errors(tokenizer):
    v = tokenizer.vocab_size
    with pytest.raises(TypeError, match="image_encoder"):
        VQAModel(v, None)
    with pytest.raises(ValueError, match="grid_size"):
        VQAModel(v, PrecomputedTokens(16))  # no grid: positions unknown
    with pytest.raises(ValueError, match="use_image=False"):
        VQAModel(v, PrecomputedTokens(16, 2), use_image=False)
    with pytest.raises(ValueError, match="vocab_size"):
        VQAModel(0, PrecomputedTokens(16, 2))
    model = small_model(v)
    ids, mask = tokenizer.encode(["is there a cross?"] * 2, max_len=12)
    with pytest.raises(ValueError, match="scenes"):
        model(None, ids, mask)
    with pytest.raises(ValueError, match="batch size"):
        model(torch.rand(3, 3, 16, 16), ids, mask)
    wrong_grid = VQAModel(v, PrecomputedTokens(16, 2), dim=16, num_heads=2, max_len=12)
    with pytest.raises(ValueError, match="tokens"):
        wrong_grid(torch.rand(2, 9, 16), ids, mask)


# ------------------------------------------------------------------------------------------------ training
def test_training_is_deterministic(world, tokenizer):
    data = vqa_tensors(world, tokenizer, indices=range(20), max_len=12)
    outputs = []
    for _ in range(2):
        model = small_model(tokenizer.vocab_size)
        history = train_vqa(model, data, scenes=world.images, steps=5, batch_size=16, seed=3)
        outputs.append((history.losses, answer_probabilities(model, world.images, data)))
    assert outputs[0][0] == outputs[1][0]
    assert torch.equal(outputs[0][1], outputs[1][1])
    assert not model.training  # left in eval mode


def attribute_scenes(n: int, seed: int):
    """Cached-token "scenes" (n, 4, 16) that carry one object's colour (one-hot, dims 0-5) and shape (dims 6-9)
    in every token, plus noise; and one colour and one shape question per scene."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.randint(0, len(COLORS), (n,), generator=g)
    shapes = torch.randint(0, len(SHAPES), (n,), generator=g)
    tokens = 0.3 * torch.randn(n, 4, 16, generator=g)
    tokens[torch.arange(n), :, colours] += 2.0
    tokens[torch.arange(n), :, 6 + shapes] += 2.0
    questions = ["what color is the object?", "what shape is the object?"]
    ids, mask = TOKENIZER.encode(questions, max_len=12)
    rows = torch.arange(2 * n) % 2  # colour question, shape question, colour, ...
    answers = [COLORS[int(colours[i // 2])] if i % 2 == 0 else SHAPES[int(shapes[i // 2])] for i in range(2 * n)]
    data = {
        "scene_ids": torch.arange(2 * n) // 2,
        "input_ids": ids[rows],
        "attention_mask": mask[rows],
        "answer_ids": torch.tensor([ANSWERS.index(a) for a in answers]),
        "type_ids": torch.tensor([QUESTION_TYPES.index("color" if i % 2 == 0 else "shape") for i in range(2 * n)]),
        "questions": [questions[int(r)] for r in rows],
    }
    return tokens, data


def test_learns_to_answer_what_the_question_asks_about_the_image():
    # the same image answers "colour" or "shape" depending on the question: neither the image nor the question
    # alone suffices, and the question prior stays near chance
    train_tokens, train = attribute_scenes(512, seed=0)
    test_tokens, test = attribute_scenes(128, seed=1)
    torch.manual_seed(0)
    model = VQAModel(TOKENIZER.vocab_size, PrecomputedTokens(16, grid_size=2), dim=32, num_heads=2, max_len=12)
    history = train_vqa(model, train, scenes=train_tokens, steps=120, batch_size=64, lr=3e-3, seed=0)
    learnt = accuracy_per_type(predict_answers(model, test_tokens, test), test)
    prior = accuracy_per_type(QuestionPrior().fit(train).predict(test), test)
    assert prior["all"] < 0.35
    assert learnt["color"] > 0.95 and learnt["shape"] > 0.95
    assert history.losses[-1] < history.losses[0] / 5


def test_training_and_prediction_validate_their_inputs(world, tokenizer):
    data = vqa_tensors(world, tokenizer, indices=range(5), max_len=12)
    model = small_model(tokenizer.vocab_size)
    with pytest.raises(TypeError, match="VQAModel"):
        train_vqa(torch.nn.Linear(2, 2), data, scenes=world.images)
    with pytest.raises(ValueError, match="missing"):
        train_vqa(model, {k: v for k, v in data.items() if k != "answer_ids"}, scenes=world.images)
    with pytest.raises(ValueError, match="scene_ids"):
        train_vqa(model, data, scenes=world.images[:2], steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_vqa(model, data, scenes=world.images, steps=0)
    with pytest.raises(TypeError, match="data"):
        predict_answers(model, world.images, [1, 2])
    short = dict(data, type_ids=data["type_ids"][:-1])
    with pytest.raises(ValueError, match="type_ids"):
        predict_answers(model, world.images, short)


def test_answer_probabilities_are_distributions_and_predictions_their_argmax(world, tokenizer):
    data = vqa_tensors(world, tokenizer, indices=range(6), max_len=12)
    model = small_model(tokenizer.vocab_size).train()
    probabilities = answer_probabilities(model, world.images, data, batch_size=7)
    assert probabilities.shape == (len(data["questions"]), len(ANSWERS))
    assert torch.allclose(probabilities.sum(-1), torch.ones(len(probabilities)), atol=1e-5)
    assert torch.equal(predict_answers(model, world.images, data), probabilities.argmax(-1))
    assert model.training  # mode restored


# -------------------------------------------------------------------------------------------------- scores
def test_accuracy_per_type_counts_each_type_separately():
    data = hand_data(["red", "blue", "two", "one", "yes"], ["color", "color", "count", "count", "existence"])
    predictions = data["answer_ids"].clone()
    predictions[1] = ANSWERS.index("red")  # one colour wrong
    predictions[2] = predictions[3] = ANSWERS.index("three")  # both counts wrong
    result = accuracy_per_type(predictions, data)
    assert list(result) == ["color", "count", "existence", "all"]
    assert result == pytest.approx({"color": 0.5, "count": 0.0, "existence": 1.0, "all": 2 / 5})


def test_accuracy_per_type_rejects_wrong_lengths_and_dtypes():
    data = hand_data(["red", "blue"], ["color", "color"])
    with pytest.raises(ValueError, match="one answer id per question"):
        accuracy_per_type(torch.zeros(3, dtype=torch.long), data)
    with pytest.raises(TypeError, match="predictions"):
        accuracy_per_type(torch.zeros(2), data)


def test_question_prior_uses_question_then_type_then_ties_by_answer_order():
    train = hand_data(
        ["yes", "yes", "no", "two", "one", "one", "red", "blue"],
        ["existence", "existence", "existence", "count", "count", "count", "color", "color"],
        ["is there a cross?"] * 3 + ["how many objects?", "how many circles?", "how many circles?"]
        + ["what color is the circle?", "what color is the square?"],
    )  # fmt: skip
    prior = QuestionPrior().fit(train)
    test = hand_data(
        ["no", "one", "one", "green"],
        ["existence", "count", "count", "color"],
        ["is there a cross?", "how many objects?", "how many squares?", "what color is the cross?"],
    )
    predicted = [ANSWERS[a] for a in prior.predict(test).tolist()]
    # seen question -> its majority; unseen count question -> majority of counts ("one");
    # unseen colour question -> tie between red and blue, broken by ANSWERS order
    first_colour = min(("red", "blue"), key=ANSWERS.index)
    assert predicted == ["yes", "two", "one", first_colour]


def test_question_prior_validation():
    with pytest.raises(ValueError, match="fit"):
        QuestionPrior().predict(hand_data(["yes"], ["existence"]))
    data = hand_data(["yes"], ["existence"])
    del data["questions"]
    with pytest.raises(ValueError, match="questions"):
        QuestionPrior().fit(data)
