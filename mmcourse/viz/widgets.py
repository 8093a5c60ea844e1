"""Interactive explorers for the chapters: controls that redraw a matplotlib figure.

An explorer draws into an ``ipywidgets.Image`` (PNG bytes), never through ``print`` or ``display`` inside a
callback, so what a notebook stores is exactly what nbval sees when it re-runs the cell, and its ``text/plain``
form is one short, stable line. Each explorer cell in a chapter is followed by a static figure of the same
``draw`` function, so a reader without a kernel (GitHub, a PDF) still sees the point.

The picture looks like the static figures around it: it is drawn at the figure's own dpi (what Jupyter's inline
backend uses) and shown at its natural size, never stretched to the width of the page. The controls' labels share
one width, wide enough for the longest, so that no label is cut short and the controls line up.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt

__all__ = ["figure_png", "label_width", "Explorer", "explorer"]


def figure_png(fig, dpi: float | None = None) -> bytes:
    """Render ``fig`` to PNG bytes and close it (so it is not displayed a second time).

    ``dpi`` defaults to the figure's own, as for the static figures Jupyter draws from ``plt.show()``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi if dpi is None else dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def label_width(controls) -> str | None:
    """One CSS width that fits the longest description of ``controls`` (``None`` when none has one).

    A ``ch`` is the width of the digit 0, a little wider than the average letter in the sans-serif fonts Jupyter
    uses; one more ``ch`` covers wide letters."""
    descriptions = [getattr(control, "description", "") or "" for control in controls]
    longest = max((len(text) for text in descriptions), default=0)
    return f"{longest + 1}ch" if longest else None


class Explorer(widgets.VBox):
    """Controls above an image that ``draw(**values)`` redraws whenever a control changes.

    Controls whose labels keep ipywidgets' default width (80 px, which cuts longer labels) get one common width
    (:func:`label_width`); a width set on a control's ``style`` is kept."""

    def __init__(self, draw: Callable[..., object], controls: dict[str, widgets.ValueWidget], title: str,
                 dpi: float | None = None):
        if not callable(draw):
            raise TypeError(f"draw must be a function returning a matplotlib Figure, got {type(draw).__name__}")
        if not controls:
            raise ValueError("an explorer needs at least one control")
        for name, control in controls.items():
            if not isinstance(control, widgets.ValueWidget):
                raise TypeError(f"control {name!r} must be an ipywidgets value widget, got {type(control).__name__}")
        self.draw, self.controls, self.title, self.dpi = draw, controls, title, dpi
        width = label_width(controls.values())
        for control in controls.values():
            style = getattr(control, "style", None)
            if width and style is not None and style.has_trait("description_width") and not style.description_width:
                style.description_width = width
        # in the box's column the image would be stretched to the full width: keep its natural size (at most the
        # width of the page: ipywidgets' max-width 100%)
        self.image = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start"))
        super().__init__(children=[widgets.HTML(f"<b>{title}</b>"), *controls.values(), self.image])
        for control in controls.values():
            control.observe(self._redraw, names="value")
        self._redraw()

    @property
    def values(self) -> dict[str, object]:
        return {name: control.value for name, control in self.controls.items()}

    def _redraw(self, _change=None) -> None:
        fig = self.draw(**self.values)
        if fig is None or not hasattr(fig, "savefig"):
            raise TypeError(f"draw must return a matplotlib Figure, got {type(fig).__name__}")
        self.image.value = figure_png(fig, self.dpi)

    def __repr__(self) -> str:
        return f"[interactive] {self.title} — run the notebook to use the controls"


def explorer(draw: Callable[..., object], title: str, **controls: widgets.ValueWidget) -> Explorer:
    """An :class:`Explorer` for ``draw``, one control per keyword (e.g. ``t=FloatLogSlider(...)``)."""
    return Explorer(draw, controls, title)
