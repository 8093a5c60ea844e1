"""Implicit, explicit and contrastive alignment (chapter 2) and binding a new modality."""

import pytest
import torch

from mmcourse.data import ShapesWorld, Tokenizer
from mmcourse.labs.ch02_representation import (
    STRATEGIES,
    AlignmentHistory,
    AttributeHead,
    BoundEncoder,
    MatchingHead,
    alignment_metrics,
    bind_modality,
    binding_pairs,
    build_aligner,
    build_bound_encoder,
    embed_captions,
    explicit_attribute_loss,
    implicit_matching_loss,
    labelled_scene_text_pairs,
    train_alignment,
)
from mmcourse.labs.common import scene_text_pairs
from mmcourse.models.clip import build_tiny_clip
from mmcourse.nn.encoders import SmallCNN
from mmcourse.train import History

SMALL = dict(cnn_width=4, vision_dim=16, text_dim=16, text_depth=1, embed_dim=8, num_heads=2)


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(64, image_size=16, max_objects=1, seed=2, audio=True)


@pytest.fixture(scope="module")
def tokenizer(world):
    return Tokenizer.from_world(world)


def test_matching_head_scores_pairs_and_all_pairs():
    torch.manual_seed(0)
    head = MatchingHead(8, hidden_dim=16)
    images, texts = torch.randn(3, 8), torch.randn(5, 8)
    assert head(images, texts[:3]).shape == (3,)
    matrix = head.pairwise(images, texts)
    assert matrix.shape == (3, 5)
    torch.testing.assert_close(matrix[1, 4], head(images[1:2], texts[4:5])[0])
    with pytest.raises(ValueError, match="same shape"):
        head(images, texts)
    with pytest.raises(ValueError, match="last dim 8"):
        head(torch.randn(3, 4), torch.randn(3, 4))


def test_attribute_head_is_a_cosine_classifier_shared_by_both_modalities():
    head = AttributeHead(8, {"color": 6, "shape": 4}, scale=10.0)
    z = torch.randn(5, 8)
    logits = head(z)
    assert logits["color"].shape == (5, 6) and logits["shape"].shape == (5, 4)
    assert logits["color"].abs().max() <= 10.0 + 1e-5
    torch.testing.assert_close(head(3 * z)["shape"], logits["shape"])  # only the direction counts
    with pytest.raises(ValueError):
        AttributeHead(8, {})
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        head(torch.randn(5, 7))


def test_implicit_loss_treats_identical_rolled_texts_as_matches(tokenizer):
    torch.manual_seed(0)
    model = build_tiny_clip(tokenizer.vocab_size, image_size=16, **SMALL)
    head = MatchingHead(8)
    images = torch.rand(4, 3, 16, 16)
    ids, mask = tokenizer.encode(["a red circle"] * 4, max_len=16)  # every rolled text is the true one
    same = implicit_matching_loss(model, head, images, ids, mask)
    with torch.no_grad():
        zi, zt = model.encode_image(images), model.encode_text(ids, mask)
        logits = torch.cat([head(zi, zt), head(zi, zt.roll(1, 0))])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones(8))
    torch.testing.assert_close(same, expected)
    ids2, mask2 = tokenizer.encode(["a red circle", "a blue square", "a green cross", "a red circle"], max_len=16)
    loss = implicit_matching_loss(model, head, images, ids2, mask2)
    loss.backward()
    assert head.net[0].weight.grad is not None
    with pytest.raises(ValueError, match="at least 2"):
        implicit_matching_loss(model, head, images[:1], ids[:1], mask[:1])


def test_explicit_loss_needs_every_label(tokenizer):
    torch.manual_seed(0)
    model = build_tiny_clip(tokenizer.vocab_size, image_size=16, **SMALL)
    head = AttributeHead(8, {"color": 6, "shape": 4})
    images = torch.rand(2, 3, 16, 16)
    ids, mask = tokenizer.encode(["a red circle", "a blue square"], max_len=16)
    loss = explicit_attribute_loss(model, head, images, ids, mask, {"color": torch.tensor([0, 2]),
                                                                   "shape": torch.tensor([0, 1])})
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="missing"):
        explicit_attribute_loss(model, head, images, ids, mask, {"color": torch.tensor([0, 2])})


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_train_alignment_same_init_snapshots_and_determinism(world, tokenizer, strategy):
    probe = world.images[:6]
    texts = tokenizer.encode(["a red circle", "a blue square"], max_len=16)
    data = labelled_scene_text_pairs(world, tokenizer, range(48))
    runs = []
    for _ in range(2):
        aligner = build_aligner(strategy, tokenizer.vocab_size, image_size=16, seed=1, **SMALL)
        history = train_alignment(aligner, data, steps=6, batch_size=16, seed=1, probe_images=probe, probe_texts=texts,
                                  snapshot_every=4)
        runs.append((aligner, history))
    (aligner, history), (_, again) = runs
    assert isinstance(history, AlignmentHistory) and isinstance(history, History)
    assert aligner.strategy == strategy
    assert [s.step for s in history.snapshots] == [0, 4, 6]
    assert history.snapshots[0].image_embeddings.shape == (6, 8)
    assert history.snapshots[0].text_embeddings.shape == (2, 8)
    assert history.losses == again.losses and history.num_steps == 6
    assert torch.equal(history.snapshots[-1].image_embeddings, again.snapshots[-1].image_embeddings)
    assert not aligner.model.training
    assert (aligner.head is None) == (strategy == "contrastive")


def test_every_strategy_starts_from_the_same_towers(world, tokenizer):
    data = labelled_scene_text_pairs(world, tokenizer, range(32))
    probe_texts = tokenizer.encode(["a red circle"], max_len=16)
    starts = []
    for strategy in STRATEGIES:
        aligner = build_aligner(strategy, tokenizer.vocab_size, image_size=16, seed=4, **SMALL)
        history = train_alignment(aligner, data, steps=1, batch_size=8, seed=4, probe_images=world.images[:3],
                                  probe_texts=probe_texts, snapshot_every=1)
        starts.append(history.snapshots[0])
    for other in starts[1:]:
        assert torch.equal(starts[0].image_embeddings, other.image_embeddings)
        assert torch.equal(starts[0].text_embeddings, other.text_embeddings)


def test_labelled_pairs_label_one_object_scenes_only(world, tokenizer):
    data = labelled_scene_text_pairs(world, tokenizer, [3, 5])
    assert data["color"].tolist() == world.attribute("color")[[3, 5]].tolist()
    assert data["shape"].tolist() == world.attribute("shape")[[3, 5]].tolist()
    two = ShapesWorld(6, image_size=16, min_objects=2, max_objects=2, seed=0)
    assert (labelled_scene_text_pairs(two, Tokenizer.from_world(two))["color"] == -1).all()


def test_train_alignment_validates(world, tokenizer):
    data = labelled_scene_text_pairs(world, tokenizer, range(8))
    with pytest.raises(ValueError, match="strategy"):
        build_aligner("telepathy", tokenizer.vocab_size, image_size=16)
    aligner = build_aligner("contrastive", tokenizer.vocab_size, image_size=16, **SMALL)
    with pytest.raises(ValueError, match="probe"):
        train_alignment(aligner, data, steps=1, snapshot_every=1)
    with pytest.raises(TypeError, match="Aligner"):
        train_alignment(aligner.model, data, steps=1)
    with pytest.raises(ValueError, match="labels"):
        train_alignment(aligner, scene_text_pairs(world, tokenizer, range(8)), steps=1)
    two = ShapesWorld(20, image_size=16, min_objects=2, max_objects=2, seed=0)
    two_tokenizer = Tokenizer.from_world(two)
    explicit = build_aligner("explicit", two_tokenizer.vocab_size, image_size=16, **SMALL)
    with pytest.raises(ValueError, match="one-object"):
        train_alignment(explicit, labelled_scene_text_pairs(two, two_tokenizer), steps=1)


def test_alignment_metrics_on_an_untrained_and_a_trained_model(world, tokenizer):
    torch.manual_seed(0)
    model = build_tiny_clip(tokenizer.vocab_size, image_size=16, **SMALL).eval()
    metrics = alignment_metrics(model, world, tokenizer, range(48, 64))
    assert set(metrics) == {"i2t_R@1", "t2i_R@1", "zero_shot", "zero_shot_color", "zero_shot_shape", "cosine_gap"}
    assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if k != "cosine_gap")
    assert metrics["zero_shot"] <= min(metrics["zero_shot_color"], metrics["zero_shot_shape"])
    image_embeddings, caption_embeddings, caption_index, distinct = embed_captions(model, world, tokenizer,
                                                                                   range(48, 64))
    assert image_embeddings.shape == (16, 8) and caption_embeddings.shape == (len(distinct), 8)
    assert [distinct[j] for j in caption_index.tolist()] == [world.captions[i] for i in range(48, 64)]


def test_bind_modality_pulls_a_new_encoder_onto_the_anchors(world):
    spectrograms = world.spectrograms.unsqueeze(1)[:32]
    anchors = torch.nn.functional.normalize(torch.randn(32, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    bound = build_bound_encoder(SmallCNN(in_channels=1, width=4, dim=16), 8, seed=0)
    history = bind_modality(bound, binding_pairs(spectrograms, anchors), steps=30, batch_size=32, lr=1e-2, seed=0)
    assert isinstance(bound, BoundEncoder) and not bound.training
    assert history.losses[-1] < history.losses[0]
    emb = bound.encode_all(spectrograms)
    assert emb.shape == (32, 8)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(32), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="pair row by row"):
        binding_pairs(spectrograms, anchors[:10])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        bind_modality(bound, binding_pairs(spectrograms[:1], anchors[:1]), steps=1)
    with pytest.raises(TypeError, match=".dim"):
        BoundEncoder(torch.nn.Linear(3, 3), 8)
    first, second = (build_bound_encoder(SmallCNN(1, 4, 16), 8, seed=3) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.projection.parameters(), second.projection.parameters()))


def test_implicit_negative_census_sorts_every_mismatched_pair(world, tokenizer):
    from mmcourse.labs.ch02_representation import implicit_negative_census

    data = labelled_scene_text_pairs(world, tokenizer, range(48))
    census = implicit_negative_census(data, steps=5, batch_size=16, seed=0)
    assert set(census) == {"other_color", "same_color_other_shape", "same_class_other_words", "same_text"}
    assert sum(census.values()) == pytest.approx(1.0)
    one = {k: v[:2].clone() for k, v in labelled_scene_text_pairs(world, tokenizer, [0, 0]).items()}
    one["counts"][:] = 1  # the same scene twice, its caption only: every rolled text is the true one
    assert implicit_negative_census(one, steps=2, batch_size=2)["same_text"] == 1.0


def test_cosine_spread():
    from mmcourse.labs.ch02_representation import cosine_spread

    same = torch.ones(4, 3)
    spread = cosine_spread(same, torch.eye(3))
    assert spread["image_image"] == pytest.approx(1.0) and spread["text_text"] == pytest.approx(0.0)
    assert spread["image_text"] == pytest.approx(3 ** -0.5)
