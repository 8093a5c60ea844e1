"""Explorers redraw on every control change and show a short, stable text form."""

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mmcourse.viz.widgets import explorer, figure_png


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
