import pytest
import torch

from mmcourse.data import ShapesWorld, Tokenizer
from mmcourse.labs.ch07_heterogeneity import (
    CURES,
    CrossAttentionMatcher,
    ImageToTextProjection,
    bag_of_words,
    build_cure,
    caption_scores,
    cure_pairs,
    cure_recall,
    describe_tensor,
    distinct_captions,
    train_cure,
    zero_pad,
)
from mmcourse.models.clip import TinyCLIP


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(400, image_size=16, max_objects=1, seed=0, shapes=["circle", "square", "triangle"])


@pytest.fixture(scope="module")
def tokenizer(world):
    return Tokenizer.from_world(world)


def test_describe_tensor_tells_continuous_from_discrete(world, tokenizer):
    image = describe_tensor(world.images[0])
    assert image["kind"] == "continuous" and image["shape"] == (3, 16, 16) and image["dtype"] == "float32"
    assert image["distinct"] == world.images[0].unique().numel()
    ids, _ = tokenizer.encode(["a red circle"], max_len=6)
    text = describe_tensor(ids[0])
    assert text["kind"] == "discrete" and text["min"] == 0 and text["max"] == max(ids[0].tolist())
    with pytest.raises(ValueError, match="empty"):
        describe_tensor(torch.empty(0))
    with pytest.raises(TypeError, match="x"):
        describe_tensor([1, 2])


def test_zero_pad_and_cut():
    x = torch.randn(3, 4)
    padded = zero_pad(x, 6)
    assert padded.shape == (3, 6) and torch.equal(padded[:, :4], x) and not padded[:, 4:].any()
    assert torch.equal(zero_pad(x, 2), x[:, :2])
    with pytest.raises(ValueError, match="width"):
        zero_pad(x, 0)
    with pytest.raises(ValueError, match="x"):
        zero_pad(torch.randn(4), 3)


def test_bag_of_words_counts_words_only(tokenizer):
    ids, mask = tokenizer.encode(["a red circle", "a red red square"], max_len=8)
    bow = bag_of_words(ids, mask, tokenizer.vocab_size)
    assert bow.shape == (2, tokenizer.vocab_size)
    red = tokenizer.token_ids("red")[0]
    assert bow[0, red] == 1 and bow[1, red] == 2
    assert bow[0].sum() == 3 and bow[1].sum() == 4  # [CLS], [EOS] and padding are not counted
    with pytest.raises(ValueError, match="input_ids"):
        bag_of_words(ids, mask, 5)
    with pytest.raises(ValueError, match="attention_mask"):
        bag_of_words(ids, mask[:, :3], tokenizer.vocab_size)


def test_distinct_captions(world):
    captions, index = distinct_captions(world, range(30))
    assert len(set(captions)) == len(captions)
    assert [captions[int(j)] for j in index] == [world.captions[i] for i in range(30)]
    with pytest.raises(ValueError, match="indices"):
        distinct_captions(world, [])


def test_matcher_pairwise_equals_one_forward_per_pair(world, tokenizer):
    torch.manual_seed(0)
    matcher = CrossAttentionMatcher(tokenizer.vocab_size, 16).eval()
    captions = ["a red circle", "a blue square", "a green triangle"]
    ids, mask = tokenizer.encode(captions, max_len=12)
    images = world.images[:4]
    scores = matcher.pairwise(images, ids, mask, chunk=5)
    assert scores.shape == (4, 3)
    with torch.no_grad():
        for i in range(4):
            direct = matcher(images[i : i + 1].expand(3, -1, -1, -1), ids, mask)
            assert torch.allclose(scores[i], direct, atol=1e-5)


@pytest.mark.parametrize("cure", CURES)
def test_each_cure_trains_deterministically_and_is_scored(world, tokenizer, cure):
    data = cure_pairs(world, tokenizer, range(64))
    a, b = (build_cure(cure, tokenizer.vocab_size, image_size=16, seed=0) for _ in range(2))
    history = train_cure(a, data, steps=3, seed=0)
    train_cure(b, data, steps=3, seed=0)
    assert history.num_steps == 3 and not a.training
    assert isinstance(a, {"projection": ImageToTextProjection, "cross_attention": CrossAttentionMatcher,
                          "contrastive": TinyCLIP}[cure])
    scores_a, index, captions = caption_scores(a, world, tokenizer, range(300, 340))
    scores_b, _, _ = caption_scores(b, world, tokenizer, range(300, 340))
    assert scores_a.shape == (40, len(captions)) and index.shape == (40,)
    assert torch.equal(scores_a, scores_b)
    recall = cure_recall(a, world, tokenizer, range(300, 340))
    expected_pairs = 40 * len(captions) if cure == "cross_attention" else 0
    assert recall["scored_pairs"] == expected_pairs
    assert 0 <= recall["i2t_R@1"] <= 1


def test_projection_cure_learns_to_retrieve(world, tokenizer):
    model = build_cure("projection", tokenizer.vocab_size, image_size=16)
    train_cure(model, cure_pairs(world, tokenizer, range(300), negatives=False), steps=60, seed=0)
    recall = cure_recall(model, world, tokenizer, range(300, 400))
    _, index, captions = caption_scores(model, world, tokenizer, range(300, 400))
    assert recall["i2t_R@1"] > 3 / len(captions)


def test_validation(world, tokenizer):
    projection = build_cure("projection", tokenizer.vocab_size, image_size=16)
    with pytest.raises(ValueError, match="cure"):
        build_cure("telepathy", tokenizer.vocab_size, image_size=16)
    with pytest.raises(ValueError, match="indices"):
        cure_pairs(world, tokenizer, [1])
    with pytest.raises(ValueError, match="steps"):
        train_cure(projection, cure_pairs(world, tokenizer, range(10)), steps=0)
    with pytest.raises(TypeError, match="build_cure"):
        train_cure(torch.nn.Linear(2, 2), cure_pairs(world, tokenizer, range(10)), steps=1)
    matcher = build_cure("cross_attention", tokenizer.vocab_size, image_size=16)
    with pytest.raises(ValueError, match="color_ids"):
        train_cure(matcher, cure_pairs(world, tokenizer, range(10), negatives=False), steps=1)
    with pytest.raises(TypeError, match="model"):
        caption_scores(torch.nn.Linear(2, 2), world, tokenizer, range(10))
