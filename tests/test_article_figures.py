"""The article's tables and the figures drawn from them."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mmcourse.viz import article, figures


def test_tables_are_consistent():
    assert sum(share for _, _, share in article.TRENDS) == 100
    years = [m.year for m in article.TIMELINE]
    assert years == sorted(years)
    era_names = {name for name, _, _ in article.ERAS}
    for m in article.TIMELINE:
        assert m.era in era_names
        start, end = next((s, e) for n, s, e in article.ERAS if n == m.era)
        assert start <= m.year <= end, m
    assert len(article.COMPARISON_TABLE) == 5 and len(article.REFERENCES) == 5


@pytest.mark.parametrize(
    "draw", [figures.timeline, figures.representation_architecture, figures.multimodal_transformer,
             figures.retrieval_flow, figures.trends_pie],
)
def test_each_figure_draws_without_warnings(draw, recwarn):
    fig = draw()
    fig.canvas.draw()
    assert isinstance(fig, matplotlib.figure.Figure)
    assert not [w for w in recwarn if "Glyph" in str(w.message)]
    plt.close(fig)


def test_diagram_draws_one_box_per_component():
    layers = [("in", ["a", "b"]), ("out", ["c"])]
    fig = figures.layered_diagram(layers, "t")
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"a", "b", "c", "in", "out"} <= texts
    plt.close(fig)


def test_figures_reject_empty_input():
    with pytest.raises(ValueError, match="milestones"):
        figures.timeline([])
    with pytest.raises(ValueError, match="layers"):
        figures.layered_diagram([], "t")


def test_latin_strips_cjk_only():
    assert figures.latin("fusion layer 融合层") == "fusion layer"
