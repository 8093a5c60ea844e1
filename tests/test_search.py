"""Tests of mmcourse.labs.ch06_applications: the Fig. 4 search engine, the ground truth of free-text queries, result
figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from mmcourse.data import COLORS, Tokenizer  # noqa: E402
from mmcourse.labs.ch06_applications import (
    SearchEngine,
    query_mentions,
    relevance_matrix,
    scene_matches,
    show_image_results,
    show_text_results,
)
from mmcourse.models.clip import build_tiny_clip

TOKENIZER = Tokenizer()
RGB = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class ColourDualEncoder(nn.Module):
    """A dual encoder that understands colour only: an image becomes its mean RGB, a text the RGB of the colour
    words it contains (grey if none)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.colour_of_id = {TOKENIZER.token_ids(name)[0]: rgb for name, rgb in RGB.items()}

    def encode_image(self, images):
        return F.normalize(images.mean(dim=(2, 3)) + 0.01, dim=-1)

    def encode_text(self, input_ids, attention_mask):
        rows = []
        for ids in input_ids.tolist():
            found = [self.colour_of_id[i] for i in ids if i in self.colour_of_id]
            rows.append(torch.tensor(found).mean(0) if found else torch.full((3,), 0.5))
        return F.normalize(torch.stack(rows) + 0.01, dim=-1)


def plain_images(names):
    return torch.stack([torch.tensor(RGB[n])[:, None, None].expand(3, 8, 8) for n in names])


def obj(color, shape, x=0.5, y=0.5, size="small"):
    return {"color": color, "shape": shape, "size": size, "x": x, "y": y}


# ------------------------------------------------------------------------------------------------- engine
def test_text_and_image_queries_find_the_matching_modality():
    gallery = ["green", "red", "blue", "red"]
    engine = SearchEngine(ColourDualEncoder(), TOKENIZER, plain_images(gallery),
                          texts=["a blue circle", "a red square", "a red square", "a green cross"])  # fmt: skip
    assert engine.texts == ["a blue circle", "a red square", "a green cross"]  # duplicates kept once
    results = engine.search("a red circle", k=2)
    assert results.query_kind == "text"
    assert sorted(results.indices[0].tolist()) == [1, 3]
    image_results = engine.search(plain_images(["blue"])[0], k=1)
    assert image_results.query_kind == "image"
    assert engine.texts[int(image_results.indices[0, 0])] == "a blue circle"
    several = engine.search(["green", "blue"], k=1)
    assert several.indices[:, 0].tolist() == [0, 2]


def test_search_equals_ranking_every_cosine_similarity():
    torch.manual_seed(0)
    model = build_tiny_clip(TOKENIZER.vocab_size, image_size=16, cnn_width=4, text_depth=1, embed_dim=16).eval()
    images = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    engine = SearchEngine(model, TOKENIZER, images, batch_size=5)
    queries = ["a red circle", "a blue square left of a green cross"]
    scores, indices = engine.search(queries, k=4)[1:]
    ids, mask = TOKENIZER.encode(queries, max_len=16)
    with torch.no_grad():
        similarity = model.encode_text(ids, mask) @ model.encode_image(images).t()
    expected = similarity.topk(4, dim=1)
    assert torch.allclose(scores, expected.values, atol=1e-5)
    assert torch.equal(indices, expected.indices)
    assert engine.image_embeddings.shape == (12, 16)
    assert torch.allclose(engine.image_embeddings.norm(dim=1), torch.ones(12), atol=1e-5)
    assert not model.training


def test_engine_validation():
    model = ColourDualEncoder()
    with pytest.raises(TypeError, match="encode_image"):
        SearchEngine(nn.Linear(2, 2), TOKENIZER, plain_images(["red"]))
    with pytest.raises(ValueError, match="images"):
        SearchEngine(model, TOKENIZER, torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="texts"):
        SearchEngine(model, TOKENIZER, plain_images(["red"]), texts=[])
    engine = SearchEngine(model, TOKENIZER, plain_images(["red", "blue"]))
    with pytest.raises(ValueError, match="texts=..."):
        engine.search(plain_images(["red"])[0], k=1)
    with pytest.raises(TypeError, match="query"):
        engine.search(3, k=1)
    with pytest.raises(ValueError, match="k must be"):
        engine.search("red", k=3)


# ------------------------------------------------------------------------------------------- ground truth
def test_query_mentions_parses_objects_relations_synonyms_and_partial_mentions():
    assert query_mentions("A red circle left of a blue square") == ([("red", "circle"), ("blue", "square")], "left of")
    assert query_mentions("the green box is under a disk") == ([("green", "square"), (None, "circle")], "below")
    assert query_mentions("red and yellow") == ([("red", None), ("yellow", None)], None)
    assert query_mentions("two crosses") == ([(None, "cross")], None)
    assert query_mentions("a photo") == ([], None)
    with pytest.raises(TypeError, match="query"):
        query_mentions(None)


def test_scene_matches_checks_objects_distinctness_and_relations():
    left, right = obj("red", "circle", x=0.2), obj("blue", "square", x=0.8)
    scene = [left, right]
    assert scene_matches("a red circle", scene)
    assert scene_matches("blue", scene)
    assert scene_matches("a red circle left of a blue square", scene)
    assert scene_matches("a blue box right of a red disk", scene)
    assert not scene_matches("a red circle right of a blue square", scene)
    assert not scene_matches("a red circle above a blue square", scene)
    assert not scene_matches("a green circle", scene)
    assert not scene_matches("a circle and a circle", scene)  # two mentions need two different objects
    assert scene_matches("a circle and a circle", [obj("red", "circle", x=0.2), obj("blue", "circle", x=0.8)])
    assert not scene_matches("a photo", scene)
    assert not scene_matches("a red circle left of a blue square", [left])
    with pytest.raises(TypeError, match="objects"):
        scene_matches("red", obj("red", "circle"))


def test_relevance_matrix_agrees_with_scene_matches():
    scenes = [[obj("red", "circle")], [obj("blue", "square")], [obj(c, "cross") for c in COLORS[:2]]]
    queries = ["red", "a square", "cross"]
    matrix = relevance_matrix(queries, scenes)
    assert matrix.dtype == torch.bool and matrix.shape == (3, 3)
    for q, query in enumerate(queries):
        for g, scene in enumerate(scenes):
            assert bool(matrix[q, g]) == scene_matches(query, scene)
    with pytest.raises(ValueError, match="queries"):
        relevance_matrix("red", scenes)


# ---------------------------------------------------------------------------------------------------- figures
def test_result_figures_have_one_panel_per_result_and_check_their_inputs():
    images = plain_images(["red", "green", "blue"])
    scores, indices = torch.tensor([0.9, 0.5]), torch.tensor([0, 2])
    fig = show_text_results("a red circle", images, scores, indices, [True, False], title="t")
    assert len(fig.axes) == 3  # the query box and two images
    plt.close(fig)
    fig = show_image_results(images[0], ["a red circle", "a blue square", "x"], scores, indices)
    assert len(fig.axes) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="relevant"):
        show_text_results("q", images, scores, indices, [True])
    with pytest.raises(ValueError, match="same shape"):
        show_text_results("q", images, scores, torch.tensor([0]))
    with pytest.raises(ValueError, match="indices must index texts"):
        show_image_results(images[0], ["only one"], scores, indices)
    with pytest.raises(TypeError, match="query"):
        show_text_results(3, images, scores, indices)
