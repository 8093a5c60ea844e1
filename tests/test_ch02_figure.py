"""Fig.2 (chapter 2) is drawn from an explicit edge list, not from a layout heuristic."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mmcourse.viz import article, figures  # noqa: E402


def _arrows(fig):
    return [t for t in fig.axes[0].texts if getattr(t, "arrow_patch", None) is not None]


def test_fig2_edges_name_existing_boxes_and_bind_every_modality():
    boxes = {label for _, row in article.REPRESENTATION_LAYERS for label in row}
    assert {a for edge in article.REPRESENTATION_EDGES for a in edge} <= boxes
    edges = set(article.REPRESENTATION_EDGES)
    for data, encoder, features in (("text data", "text encoder", "text features"),
                                    ("image data", "vision encoder", "visual features"),
                                    ("audio data", "audio encoder", "audio features")):
        assert {(data, encoder), (encoder, features), (features, "shared representation space")} <= edges


def test_fig2_draws_exactly_its_edges():
    fig = figures.representation_architecture()
    assert len(_arrows(fig)) == len(article.REPRESENTATION_EDGES)
    assert "reconstructed" in fig.axes[0].get_title()
    plt.close(fig)


def test_layered_diagram_edges_are_optional_and_checked():
    layers = [("in", ["a", "b"]), ("out", ["c"])]
    default = figures.layered_diagram(layers, "t")
    assert len(_arrows(default)) == 2  # the heuristic, unchanged: a -> c, b -> c
    explicit = figures.layered_diagram(layers, "t", edges=[("a", "c"), ("a", "b")])
    assert len(_arrows(explicit)) == 2
    plt.close("all")
    with pytest.raises(ValueError, match="unknown"):
        figures.layered_diagram(layers, "t", edges=[("a", "z")])
