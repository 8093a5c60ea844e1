"""TinyCLIP: embeddings, logits, temperature, deterministic training, and the ShapesWorld evaluation helpers."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmcourse.data import COLORS, SHAPES, ShapesWorld, Tokenizer
from mmcourse.data.twins import counterfactual_twins
from mmcourse.labs.ch04_contrastive import (
    RELATIONAL_NEGATIVE_KINDS,
    negative_caption_test,
    relational_retrieval,
    zero_shot_template_accuracies,
)
from mmcourse.labs.common import (
    SHAPES_TEMPLATES,
    caption_retrieval,
    class_prompt_names,
    fact_key,
    mentioned_objects,
    same_words,
    scene_text_pairs,
    train_tiny_clip,
    zero_shot_color_shape_accuracy,
)
from mmcourse.models.clip import build_tiny_clip
from mmcourse.objectives.contrastive import contrastive_loss
from mmcourse.train import seeded


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(48, image_size=16, max_objects=1, seed=3)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_world(None)


def _small_model(tokenizer, image_encoder="cnn"):
    torch.manual_seed(0)
    return build_tiny_clip(
        tokenizer.vocab_size, image_size=16, image_encoder=image_encoder, cnn_width=4, vision_dim=16,
        vision_depth=1, text_dim=16, text_depth=1, num_heads=2, embed_dim=8,
    )  # fmt: skip


@pytest.mark.parametrize("image_encoder", ["cnn", "vit"])
def test_embeddings_are_normalised_and_logits_are_scaled_cosines(world, tokenizer, image_encoder):
    model = _small_model(tokenizer, image_encoder).eval()
    images = world.images[:5]
    ids, mask = tokenizer.encode(world.captions[:5])
    img, txt = model.encode_image(images), model.encode_text(ids, mask)
    assert img.shape == (5, 8) and txt.shape == (5, 8)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(5))
    logits_per_image, logits_per_text = model(images, ids, mask)
    torch.testing.assert_close(logits_per_image, (1 / 0.07) * img @ txt.t())
    torch.testing.assert_close(logits_per_text, logits_per_image.t())
    # the model's loss is the article's loss at the model's temperature
    temperature = 1 / float(model.logit_scale().detach())
    torch.testing.assert_close(
        model.loss(images, ids, mask), contrastive_loss(img, txt, temperature), atol=1e-5, rtol=1e-5
    )


def test_logit_scale_starts_at_one_over_0_07_and_is_clamped(tokenizer):
    model = _small_model(tokenizer)
    assert float(model.logit_scale.log_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.log_scale.fill_(8.0)
    assert float(model.logit_scale().detach()) == 100.0


def test_training_is_deterministic_and_lowers_the_loss(world, tokenizer):
    runs = []
    data = scene_text_pairs(world, tokenizer)
    for _ in range(2):
        with seeded(5):
            model = build_tiny_clip(tokenizer.vocab_size, image_size=16, **_SMALL)
        history = train_tiny_clip(model, data, steps=25, batch_size=16, lr=1e-2, warmup_steps=2, seed=5)
        runs.append((history.losses, model.encode_image(world.images[:3])))
    assert runs[0][0] == runs[1][0]
    torch.testing.assert_close(runs[0][1], runs[1][1])
    losses = runs[0][0]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert not model.training


_SMALL = dict(cnn_width=4, vision_dim=16, text_dim=16, text_depth=1, num_heads=2, embed_dim=8)


class _OracleCLIP(torch.nn.Module):
    """Perfect embeddings: one-hot of the (colour, shape) class, read from the world and from the words."""

    def __init__(self, world, tokenizer):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.world, self.tokenizer = world, tokenizer
        self.dim = len(COLORS) * len(SHAPES)

    def encode_image(self, images):
        same = (images[:, None] == self.world.images[None]).flatten(2).all(-1)  # (B, N)
        return F.one_hot(self.world.labels[same.float().argmax(1)], self.dim).float()

    def encode_text(self, ids, mask):
        rows = []
        for text in self.tokenizer.decode(ids):
            words = text.split()
            color = next(COLORS.index(w) for w in words if w in COLORS)
            shape = next(SHAPES.index(w) for w in words if w in SHAPES)
            rows.append(color * len(SHAPES) + shape)
        return F.one_hot(torch.tensor(rows), self.dim).float()


def test_zero_shot_accuracy_pipeline_with_an_oracle(world, tokenizer):
    oracle = _OracleCLIP(world, tokenizer)
    assert zero_shot_color_shape_accuracy(oracle, world, tokenizer) == 1.0
    assert class_prompt_names(["orange", "red"], ["circle"]) == ["an orange circle", "a red circle"]
    assert all("{}" in t for t in SHAPES_TEMPLATES)

    # a model that always answers "red circle" is right exactly on the red circles
    class RedCircle(_OracleCLIP):
        def encode_image(self, images):
            return F.one_hot(torch.zeros(len(images), dtype=torch.long), self.dim).float()

    expected = float((world.labels == 0).float().mean())
    assert zero_shot_color_shape_accuracy(RedCircle(world, tokenizer), world, tokenizer) == pytest.approx(expected)


def test_caption_retrieval_groups_identical_captions(world, tokenizer):
    oracle = _OracleCLIP(world, tokenizer)
    metrics = caption_retrieval(oracle, world.images, world.captions, tokenizer, ks=(1,))
    assert metrics == {"i2t_R@1": 1.0, "t2i_R@1": 1.0}


def test_bad_inputs(world, tokenizer):
    model = _small_model(tokenizer)
    with pytest.raises(ValueError, match="same number of pairs"):
        model.loss(world.images[:4], *tokenizer.encode(world.captions[:3]))
    with pytest.raises(ValueError, match="images must be 16x16"):
        model.encode_image(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="captions must hold one caption per image"):
        caption_retrieval(model, world.images[:4], world.captions[:3], tokenizer)
    with pytest.raises(ValueError, match="image_encoder must be one of"):
        build_tiny_clip(10, image_encoder="resnet")
    with pytest.raises(ValueError, match="steps must be > 0"):
        train_tiny_clip(model, scene_text_pairs(world, tokenizer), steps=0)
    with pytest.raises(TypeError, match="TinyCLIP"):
        train_tiny_clip(torch.nn.Linear(2, 2), scene_text_pairs(world, tokenizer))
    with pytest.raises(ValueError, match="missing \\['counts'\\]"):
        train_tiny_clip(model, {k: v for k, v in scene_text_pairs(world, tokenizer).items() if k != "counts"})
    with pytest.raises(ValueError, match="at least one scene"):
        scene_text_pairs(world, tokenizer, indices=[])


def test_scene_text_pairs_hold_each_scene_and_its_texts(world, tokenizer):
    data = scene_text_pairs(world, tokenizer, indices=[4, 1], max_len=12)
    assert torch.equal(data["images"], world.images[[4, 1]])
    assert data["input_ids"].shape[:2] == data["attention_mask"].shape[:2] == (2, int(data["counts"].max()))
    assert data["input_ids"].shape[2] == 12
    assert tokenizer.decode(data["input_ids"][:, 0]) == [world.captions[4], world.captions[1]]
    alone = scene_text_pairs(world, tokenizer, indices=[4, 1], use_paraphrases=False)
    assert alone["input_ids"].shape[1] == 1 and alone["counts"].tolist() == [1, 1]


def test_template_accuracies_match_the_single_template_and_ensemble_evaluations(world, tokenizer):
    model = _small_model(tokenizer).eval()
    templates = ("{}", "a photo of {}", "there is {}")
    result = zero_shot_template_accuracies(model, world, tokenizer, templates=templates)
    assert list(result) == [*templates, "ensemble"]
    for template in templates:
        assert result[template] == zero_shot_color_shape_accuracy(model, world, tokenizer, templates=(template,))
    assert result["ensemble"] == zero_shot_color_shape_accuracy(model, world, tokenizer, templates=templates)
    oracle = _OracleCLIP(world, tokenizer)
    assert set(zero_shot_template_accuracies(oracle, world, tokenizer, templates=templates).values()) == {1.0}
    with pytest.raises(ValueError, match="templates must be a non-empty list"):
        zero_shot_template_accuracies(model, world, tokenizer, templates=[])


def test_same_words_ignores_order_and_articles():
    assert same_words("a red circle left of an orange square", "an orange square left of a red circle")
    assert same_words("a red circle left of an orange square", "an orange circle left of a red square")
    assert not same_words("a red circle left of a blue square", "a red circle right of a blue square")
    assert not same_words("a red circle", "a red circle and a red circle")
    with pytest.raises(TypeError, match="text_a and text_b must be str"):
        same_words("a red circle", None)


@pytest.fixture(scope="module")
def two_object_world():
    return ShapesWorld(40, image_size=16, min_objects=2, max_objects=2, seed=1)


class _LookupCLIP(torch.nn.Module):
    """Embeds a text with ``embed(text)`` and an image with ``embed`` of the text registered for its pixels."""

    def __init__(self, tokenizer, images, texts, embed):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.embed = tokenizer, embed
        self.registry = {image.numpy().tobytes(): text for image, text in zip(images, texts, strict=True)}

    def encode_image(self, images):
        return torch.stack([self.embed(self.registry[image.numpy().tobytes()]) for image in images])

    def encode_text(self, ids, mask):
        return torch.stack([self.embed(text) for text in self.tokenizer.decode(ids)])


def _bag_of_words(tokenizer):
    def embed(text):
        counts = torch.zeros(tokenizer.vocab_size)
        for word in text.split():
            counts[tokenizer.vocab.index("a" if word == "an" else word)] += 1
        return F.normalize(counts, dim=0)

    return embed


def _one_hot_of(key_fn, dim=4096):
    ids = {}

    def embed(text):
        return F.one_hot(torch.tensor(ids.setdefault(key_fn(text), len(ids))), dim).float()

    return embed


def test_a_bag_of_words_model_fails_exactly_the_same_word_negatives(two_object_world, tokenizer):
    world = two_object_world
    model = _LookupCLIP(tokenizer, world.images, world.captions, _bag_of_words(tokenizer))
    report = negative_caption_test(model, world, tokenizer, kinds=RELATIONAL_NEGATIVE_KINDS)
    for kind in ("swap_objects", "swap_colors"):  # same words: equal scores, and a tie is a failure
        assert report[kind]["accuracy"] == 0.0
        assert report[kind]["same_words"] == 1.0
        assert report[kind]["text_similarity"] == pytest.approx(1.0)
        assert report[kind]["caption_similarity"] == pytest.approx(report[kind]["negative_similarity"])
    for kind in ("replace_color", "replace_shape", "replace_relation", "swap_relation"):  # a word differs
        assert report[kind]["accuracy"] == 1.0
        assert report[kind]["same_words"] == 0.0
        assert report[kind]["caption_similarity"] == pytest.approx(1.0)
    possible = sum(world.negative(i, "swap_colors") is not None for i in range(len(world)))
    assert report["swap_colors"]["count"] == possible
    assert report["swap_objects"]["count"] == len(world)


def test_negative_caption_test_checks_its_inputs(two_object_world, tokenizer):
    model = _small_model(tokenizer)
    with pytest.raises(ValueError, match="kinds must be one of"):
        negative_caption_test(model, two_object_world, tokenizer, kinds=["swap_words"])
    with pytest.raises(ValueError, match="indices must select at least one scene"):
        negative_caption_test(model, two_object_world, tokenizer, indices=[])


def _world_and_mirrors(world):
    twins = counterfactual_twins(world, range(len(world)), ("swap_relation",))
    images = torch.cat([world.images, twins["images"]])
    return images, list(world.captions) + list(twins["captions"])


def test_relational_retrieval_separates_seeing_relations_from_seeing_objects(two_object_world, tokenizer):
    world = two_object_world
    images, texts = _world_and_mirrors(world)
    pairs = {tuple(sorted(mentioned_objects(c))) for c in world.captions}
    expected_queries = 2 * sum(len(set(p)) == 2 for p in pairs)

    relations = _LookupCLIP(tokenizer, images, texts, _one_hot_of(fact_key))  # knows every fact
    perfect = relational_retrieval(relations, world, tokenizer, ks=(1, 2))
    assert perfect["queries"] == expected_queries
    assert perfect["t2i_R@1"] == 1.0 and perfect["t2i_objects_R@1"] == 1.0
    assert perfect["relation_chance_R@1"] == 0.5

    objects = _LookupCLIP(tokenizer, images, texts, _one_hot_of(lambda c: tuple(sorted(mentioned_objects(c)))))
    blind = relational_retrieval(objects, world, tokenizer, ks=(1, 2))
    assert blind["t2i_objects_R@1"] == 1.0
    assert blind["t2i_R@1"] == 0.0  # the scene and its mirror image tie; ties are counted against the model
    assert blind["t2i_R@2"] == 1.0
    with pytest.raises(ValueError, match="two-object scene"):
        relational_retrieval(objects, ShapesWorld(4, image_size=16, max_objects=1, seed=0), tokenizer)
