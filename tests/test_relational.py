"""The left-of relational task, the patch-statistics encoder and the fusion models built on them (chapter 3)."""

import pytest
import torch

from mmcourse.data import ShapesWorld, Tokenizer, relation
from mmcourse.data.render import BACKGROUND
from mmcourse.labs.ch03_architectures import (
    FUSION_KINDS,
    PatchStatsEncoder,
    build_fusion_model,
    fusion_accuracy,
    left_of_questions,
    train_fusion,
)
from mmcourse.models.fusion import CrossAttentionFusionClassifier, EarlyFusionClassifier, LateFusionClassifier


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(120, image_size=16, min_objects=2, max_objects=2, seed=5)


@pytest.fixture(scope="module")
def tokenizer(world):
    return Tokenizer.from_world(world)


def test_questions_are_true_and_false_in_pairs(world, tokenizer):
    qa = left_of_questions(world, tokenizer)
    n = len(qa["questions"])
    assert n > 0 and n % 2 == 0
    assert qa["images"].shape == (n, 3, 16, 16)
    assert qa["input_ids"].shape == qa["attention_mask"].shape == (n, 12)
    assert qa["labels"].tolist() == [1, 0] * (n // 2)
    rows = zip(qa["questions"], qa["labels"].tolist(), qa["scene_ids"].tolist(), qa["objects"].tolist())
    for row, (q, label, scene, (first, second)) in enumerate(rows):
        objects = world.objects(scene)
        a, b = objects[first], objects[second]
        assert q == f"is the {a['color']} {a['shape']} left of the {b['color']} {b['shape']}?"
        assert a["color"] != b["color"]
        assert relation(a, b) == ("left of" if label == 1 else "right of")
        assert torch.equal(qa["images"][row], world.images[scene])


def test_questions_only_from_side_by_side_scenes(world, tokenizer):
    used = set(left_of_questions(world, tokenizer)["scene_ids"].tolist())
    for i in range(len(world)):
        objects = world.objects(i)
        qualifies = objects[0]["color"] != objects[1]["color"] and relation(*objects) in ("left of", "right of")
        assert (i in used) == qualifies


def test_questions_need_two_object_scenes(tokenizer):
    single = ShapesWorld(10, image_size=16, max_objects=1, seed=0)
    with pytest.raises(ValueError, match="two-object"):
        left_of_questions(single, tokenizer)


def test_patch_statistics_see_object_colour_coverage_and_position():
    image = torch.full((1, 3, 8, 8), BACKGROUND)
    image[0, :, 0:4, 4:8] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # top-right patch fully red
    image[0, :, 4:6, 0:4] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]  # bottom-left patch half blue
    encoder = PatchStatsEncoder(image_size=8, patch_size=4, dim=8)
    stats = encoder.patch_statistics(image)[0]  # (4 patches, 6)
    torch.testing.assert_close(stats[1, :4], torch.tensor([0.9, 0.1, 0.1, 1.0]))
    torch.testing.assert_close(stats[2, :4], torch.tensor([0.1, 0.1, 0.9, 0.5]))
    torch.testing.assert_close(stats[0, :4], torch.zeros(4))  # empty patch
    torch.testing.assert_close(stats[:, 4:], torch.tensor([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]))
    out = encoder(image)
    assert out.tokens.shape == (1, 4, 8) and out.pooled.shape == (1, 8)
    assert encoder.grid_size == 2


def test_patch_tokens_never_mix_patches():
    encoder = PatchStatsEncoder(image_size=8, patch_size=4, dim=8)
    a = torch.rand(1, 3, 8, 8)
    b = a.clone()
    b[0, :, 4:, 4:] = torch.rand(3, 4, 4)  # change the last patch only
    ta, tb = encoder(a).tokens, encoder(b).tokens
    torch.testing.assert_close(ta[:, :3], tb[:, :3])
    assert not torch.allclose(ta[:, 3], tb[:, 3])


def test_patch_encoder_validates():
    with pytest.raises(ValueError, match="divisible"):
        PatchStatsEncoder(image_size=10, patch_size=4)
    encoder = PatchStatsEncoder(image_size=8, patch_size=4)
    with pytest.raises(ValueError, match="shape"):
        encoder(torch.rand(1, 3, 16, 16))
    with pytest.raises(TypeError):
        encoder(torch.zeros(1, 3, 8, 8, dtype=torch.long))


def test_build_fusion_model_kinds():
    types = {"late": LateFusionClassifier, "early": EarlyFusionClassifier, "cross": CrossAttentionFusionClassifier}
    for kind in FUSION_KINDS:
        model = build_fusion_model(kind, vocab_size=30, image_size=16, patch_size=4, dim=16, max_len=8)
        assert isinstance(model, types[kind])
        logits = model(torch.rand(2, 3, 16, 16), torch.randint(0, 30, (2, 8)), torch.ones(2, 8, dtype=torch.long))
        assert logits.shape == (2, 2)
    with pytest.raises(ValueError, match="kind"):
        build_fusion_model("middle", vocab_size=30)


def test_train_fusion_is_deterministic_and_learns_something(world, tokenizer):
    qa = left_of_questions(world, tokenizer)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_fusion_model("early", tokenizer.vocab_size, image_size=16, patch_size=4, dim=16)
        history = train_fusion(model, qa, steps=15, batch_size=16, seed=3)
        assert not model.training
        results.append((history.losses, fusion_accuracy(model, qa)))
    assert results[0] == results[1]
    assert results[0][0][-1] < results[0][0][0] + 0.5  # finite, not diverging
    assert 0.0 <= results[0][1] <= 1.0


def test_train_fusion_needs_the_model_inputs():
    model = build_fusion_model("late", vocab_size=30, image_size=16, patch_size=4, dim=16)
    with pytest.raises(ValueError, match="labels"):
        train_fusion(model, {"images": torch.rand(2, 3, 16, 16)}, steps=1)


def test_build_fusion_model_is_seeded():
    a = build_fusion_model("cross", vocab_size=30, image_size=16, patch_size=4, dim=16, seed=2)
    torch.rand(100)  # whatever happens in between
    b = build_fusion_model("cross", vocab_size=30, image_size=16, patch_size=4, dim=16, seed=2)
    c = build_fusion_model("cross", vocab_size=30, image_size=16, patch_size=4, dim=16, seed=3)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))
