"""Explorers redraw on every control change and show a short, stable text form."""

import io

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mmcourse.viz.widgets import explorer, figure_png, label_width


def _draw(n=1):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot(range(n))
    ax.set_title(f"n={n}")
    return fig


def test_explorer_draws_at_creation_and_on_change():
    calls = []

    def draw(n):
        calls.append(n)
        return _draw(n)

    ex = explorer(draw, "lines", n=widgets.IntSlider(value=2, min=1, max=5))
    assert calls == [2] and bytes(ex.image.value).startswith(b"\x89PNG")
    first = bytes(ex.image.value)
    ex.controls["n"].value = 4
    assert calls == [2, 4] and bytes(ex.image.value) != first
    assert ex.values == {"n": 4}
    bundle = ex._repr_mimebundle_()
    assert bundle["text/plain"] == "[interactive] lines — run the notebook to use the controls"


def test_explorer_rejects_bad_arguments():
    with pytest.raises(TypeError, match="draw must"):
        explorer("not callable", "x", n=widgets.IntSlider())
    with pytest.raises(ValueError, match="at least one control"):
        explorer(_draw, "x")
    with pytest.raises(TypeError, match="control 'n'"):
        explorer(_draw, "x", n=3)
    with pytest.raises(TypeError, match="must return a matplotlib Figure"):
        explorer(lambda n: None, "x", n=widgets.IntSlider())


def test_figure_png_closes_the_figure():
    fig = _draw(3)
    assert figure_png(fig).startswith(b"\x89PNG")
    assert not plt.fignum_exists(fig.number)


def _png_size(png: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(png)).size


@pytest.mark.parametrize("dpi", [None, 120])  # matplotlib's default (100), and a figure's own
def test_explorer_draws_like_the_static_figures(dpi):
    """The pixels of Jupyter's inline backend for ``plt.show()`` (the figure's dpi), shown at their natural size."""
    from IPython.core.pylabtools import print_figure

    def draw(n):
        fig = _draw(n)
        if dpi is not None:
            fig.set_dpi(dpi)
        return fig

    static = print_figure(draw(3), "png", bbox_inches="tight")
    ex = explorer(draw, "lines", n=widgets.IntSlider(value=3, min=1, max=5))
    assert _png_size(bytes(ex.image.value)) == _png_size(static)
    assert ex.image.layout.align_self == "flex-start"  # not stretched to the width of the explorer's column


def test_explorer_labels_share_a_width_that_fits_the_longest():
    ex = explorer(lambda tau, image: _draw(), "temperature",
                  tau=widgets.FloatLogSlider(value=0.07, min=-2, max=0, description="temperature"),
                  image=widgets.Dropdown(options=[("a", 0), ("b", 1)], description="image"))
    assert {c.style.description_width for c in ex.controls.values()} == {"12ch"}
    assert label_width([widgets.IntSlider(description="camera σ (m)")]) == "13ch"
    assert label_width([widgets.IntSlider()]) is None
    kept = widgets.IntSlider(value=1, min=1, max=2, description="n", style={"description_width": "initial"})
    ex = explorer(lambda n, m: _draw(), "x", n=kept, m=widgets.IntSlider(value=1, min=1, max=2, description="m"))
    assert kept.style.description_width == "initial" and ex.controls["m"].style.description_width == "2ch"
