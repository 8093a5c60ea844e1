import copy

import pytest
import torch

from mmcourse.data import ShapesWorld, Tokenizer
from mmcourse.labs.ch07_sparsity import (
    SMALL_MODEL,
    augment_images,
    build_small_clip,
    corrupt_pairing,
    data_size_curve,
    noise_curve,
    noisy_scene_text_pairs,
    score_pairs,
    train_on_pairs,
    transfer_model,
    world_class_labels,
    zero_shot_scores,
)
from mmcourse.labs.common import class_prompt_names
from mmcourse.models.clip import build_tiny_clip

SHAPES3 = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(500, image_size=16, max_objects=1, seed=0, shapes=SHAPES3)


@pytest.fixture(scope="module")
def tokenizer(world):
    return Tokenizer.from_world(world)


def _states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------ pairing


def test_corrupt_pairing_mismatches_exactly_the_requested_fraction():
    pairing = corrupt_pairing(100, 0.3, torch.Generator().manual_seed(0))
    assert sorted(pairing.tolist()) == list(range(100))  # every caption used once
    assert int((pairing != torch.arange(100)).sum()) == 30
    again = corrupt_pairing(100, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(pairing, again)
    assert torch.equal(corrupt_pairing(50, 0.0), torch.arange(50))
    assert torch.equal(corrupt_pairing(100, 0.01), torch.arange(100))  # one chosen image cannot be mismatched
    assert int((corrupt_pairing(40, 1.0) != torch.arange(40)).sum()) == 40


def test_corrupt_pairing_validation():
    with pytest.raises(ValueError, match="noise_rate"):
        corrupt_pairing(10, 1.5)
    with pytest.raises(ValueError, match="num_pairs"):
        corrupt_pairing(0, 0.5)


# ------------------------------------------------------------------------------------------------ augmentation


def test_flip_mirrors_some_images_and_keeps_the_rest(world):
    images = world.images[:64]
    before = images.clone()
    out = augment_images(images, ["flip"], torch.Generator().manual_seed(0))
    assert torch.equal(images, before)  # input untouched
    flipped = [torch.equal(o, i.flip(-1)) and not torch.equal(o, i) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_shift_is_a_translation_with_background_fill(world):
    from mmcourse.data.render import BACKGROUND

    images = world.images[:16]
    out = augment_images(images, ["shift"], torch.Generator().manual_seed(1), max_shift=2)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), value=BACKGROUND)
    moved = 0
    for k in range(16):
        candidates = [padded[k, :, dy : dy + 16, dx : dx + 16] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[k], c) for c in candidates)
        moved += not torch.equal(out[k], images[k])
    assert moved > 8


def test_channel_swap_permutes_colours_and_safe_augmentations_keep_them(world):
    images = world.images[:32]
    g = torch.Generator().manual_seed(2)
    swapped = augment_images(images, ["channel_swap"], g)
    assert torch.equal(swapped.sort(dim=1).values, images.sort(dim=1).values)  # same values per pixel
    assert not torch.equal(swapped, images)
    safe = augment_images(images, ["flip", "shift"], torch.Generator().manual_seed(2))
    # a one-object scene keeps its mean colour under flips and shifts (borders are background)
    assert torch.allclose(safe.mean(dim=(2, 3)), images.mean(dim=(2, 3)), atol=0.02)
    noisy = augment_images(images, ["noise"], torch.Generator().manual_seed(3), noise_std=0.1)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not torch.equal(noisy, images)
    assert torch.equal(augment_images(images, ["noise"], torch.Generator().manual_seed(3), noise_std=0.1), noisy)


def test_augment_validation(world):
    with pytest.raises(ValueError, match="kinds"):
        augment_images(world.images[:2], ["rotate"])
    with pytest.raises(TypeError, match="kinds"):
        augment_images(world.images[:2], "flip")
    with pytest.raises(ValueError, match="images"):
        augment_images(torch.rand(2, 1, 16, 16), ["flip"])
    with pytest.raises(ValueError, match="max_shift"):
        augment_images(world.images[:2], ["shift"], max_shift=0)


# ------------------------------------------------------------------------------------------------ measuring


def test_world_class_labels_match_the_prompts(world):
    names = class_prompt_names(world.colors, world.shapes)
    labels = world_class_labels(world, range(50))
    assert [names[int(c)] for c in labels] == [world.captions[i] for i in range(50)]
    assert int(labels.max()) < len(world.colors) * len(world.shapes)
    with pytest.raises(ValueError, match="indices"):
        world_class_labels(world, [])


def _trained(world, tokenizer, indices, *, seed=0, noise_rate=0.0, use_paraphrases=False, **train_kwargs):
    """A small TinyCLIP built and trained from scratch on the pairs of ``indices``, all seeded by ``seed``."""
    model = build_small_clip(tokenizer.vocab_size, image_size=16, seed=seed)
    data = noisy_scene_text_pairs(world, tokenizer, indices, noise_rate=noise_rate, use_paraphrases=use_paraphrases,
                                  seed=seed)
    return model, train_on_pairs(model, data, seed=seed, **train_kwargs)


def test_training_learns_and_mismatched_pairs_hurt(world, tokenizer):
    train, test = list(range(300)), list(range(300, 500))
    untrained = build_tiny_clip(tokenizer.vocab_size, image_size=16, max_len=12, **SMALL_MODEL).eval()
    before = zero_shot_scores(untrained, world, tokenizer, test)
    clean, history = _trained(world, tokenizer, train, steps=60)
    after = zero_shot_scores(clean, world, tokenizer, test)
    assert history.num_steps == 60 and not clean.training
    assert after["color"] > 0.5 and after["color"] > before["color"] + 0.2
    assert 0 <= after["accuracy"] <= min(after["color"], after["shape"])
    shuffled, _ = _trained(world, tokenizer, train, steps=60, noise_rate=1.0)
    assert zero_shot_scores(shuffled, world, tokenizer, test)["color"] < after["color"] - 0.2


def test_noisy_pairs_mismatch_the_chosen_fraction(world, tokenizer):
    clean = noisy_scene_text_pairs(world, tokenizer, list(range(20)))
    noisy = noisy_scene_text_pairs(world, tokenizer, list(range(20)), noise_rate=0.5, seed=3)
    assert torch.equal(clean["images"], noisy["images"]) and clean["counts"].tolist() == [1] * 20
    moved = (clean["input_ids"] != noisy["input_ids"]).flatten(1).any(1)
    expected = corrupt_pairing(20, 0.5, torch.Generator().manual_seed(3)) != torch.arange(20)
    assert 0 < int(moved.sum()) <= int(expected.sum()) == 10


def test_train_on_pairs_is_deterministic(world, tokenizer):
    options = dict(steps=3, augment=["flip", "shift"], use_paraphrases=True)
    a, _ = _trained(world, tokenizer, list(range(40)), seed=0, **options)
    b, _ = _trained(world, tokenizer, list(range(40)), seed=0, **options)
    c, _ = _trained(world, tokenizer, list(range(40)), seed=1, **options)
    assert _states_equal(a, b)
    assert not _states_equal(a, c)


@pytest.mark.parametrize("augment", [[], ["flip"]])
def test_freezing_keeps_encoders_and_init_untouched(world, tokenizer, augment):
    init, _ = _trained(world, tokenizer, list(range(64)), steps=3)
    snapshot = copy.deepcopy(init)
    model = transfer_model(init, seed=0)
    train_on_pairs(model, noisy_scene_text_pairs(world, tokenizer, list(range(64, 100))), steps=5, seed=0,
                   augment=augment)
    assert _states_equal(init, snapshot)  # the pretrained model is not modified
    for name in ("image_encoder", "text_encoder"):  # weights and BatchNorm statistics frozen
        assert _states_equal(getattr(model, name), getattr(init, name))
    assert not torch.equal(model.image_projection.net.weight, init.image_projection.net.weight)
    assert not any(p.requires_grad for p in model.image_encoder.parameters())


def test_transfer_beats_scratch_with_few_pairs(world, tokenizer):
    pretrained, _ = _trained(world, tokenizer, list(range(100, 400)), steps=60)
    few, test = list(range(12)), list(range(400, 500))
    scratch = score_pairs(world, tokenizer, few, test, steps=40)
    transfer = score_pairs(world, tokenizer, few, test, steps=40, init=pretrained, freeze_encoders=True)
    assert transfer["accuracy"] > scratch["accuracy"] + 0.1


def test_train_on_pairs_validation(world, tokenizer):
    model = build_small_clip(tokenizer.vocab_size, image_size=16)
    data = noisy_scene_text_pairs(world, tokenizer, [0, 1, 2])
    with pytest.raises(ValueError, match="indices"):
        noisy_scene_text_pairs(world, tokenizer, [3])
    with pytest.raises(TypeError, match="indices"):
        noisy_scene_text_pairs(world, tokenizer, torch.arange(5))
    with pytest.raises(ValueError, match="noise_rate"):
        noisy_scene_text_pairs(world, tokenizer, [0, 1, 2], noise_rate=-0.1)
    with pytest.raises(TypeError, match="augment"):
        train_on_pairs(model, data, steps=1, augment="flip")
    with pytest.raises(ValueError, match="augment"):
        train_on_pairs(model, data, steps=1, augment=["blur"])
    with pytest.raises(TypeError, match="TinyCLIP"):
        train_on_pairs(torch.nn.Linear(2, 2), data, steps=1)
    with pytest.raises(TypeError, match="pretrained"):
        transfer_model("model")
    with pytest.raises(ValueError, match="freeze_encoders"):
        score_pairs(world, tokenizer, [0, 1, 2], [3, 4], steps=1, freeze_encoders=True)
    with pytest.raises(TypeError, match="init"):
        score_pairs(world, tokenizer, [0, 1, 2], [3, 4], steps=1, init="model")
    with pytest.raises(ValueError, match="model_kwargs"):
        score_pairs(world, tokenizer, [0, 1, 2], [3, 4], steps=1, init=model, model_kwargs={"cnn_width": 4})


def test_curves_return_one_entry_per_setting_and_validate(world, tokenizer):
    pool, test = list(range(100)), list(range(400, 450))
    curve = data_size_curve(world, tokenizer, pool, test, [8, 16], steps=2)
    assert list(curve) == [8, 16] and set(curve[8]) == {"accuracy", "color", "shape"}
    noise = noise_curve(world, tokenizer, pool[:20], test, [0.0, 0.5], steps=2)
    assert list(noise) == [0.0, 0.5]
    twice = score_pairs(world, tokenizer, pool[:20], test, steps=2, seeds=[0, 1])
    once = [score_pairs(world, tokenizer, pool[:20], test, steps=2, seeds=[s]) for s in (0, 1)]
    assert twice["accuracy"] == pytest.approx((once[0]["accuracy"] + once[1]["accuracy"]) / 2)
    with pytest.raises(ValueError, match="sizes"):
        data_size_curve(world, tokenizer, pool, test, [500])
    with pytest.raises(ValueError, match="noise_rates"):
        noise_curve(world, tokenizer, pool, test, [0.0, 2.0])
    with pytest.raises(ValueError, match="seeds"):
        score_pairs(world, tokenizer, pool, test, seeds=[])
