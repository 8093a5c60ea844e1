"""Interactive explorers for the chapters: controls that redraw a matplotlib figure.

An explorer draws into an ``ipywidgets.Image`` (PNG bytes), never through ``print`` or ``display`` inside a
callback, so what a notebook stores is exactly what nbval sees when it re-runs the cell, and its ``text/plain``
form is one short, stable line. Each explorer cell in a chapter is followed by a static figure of the same
``draw`` function, so a reader without a kernel (GitHub, a PDF) still sees the point.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt

__all__ = ["figure_png", "Explorer", "explorer"]


def figure_png(fig, dpi: int = 80) -> bytes:
    """Render ``fig`` to PNG bytes and close it (so it is not displayed a second time)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


class Explorer(widgets.VBox):
    """Controls above an image that ``draw(**values)`` redraws whenever a control changes."""

    def __init__(self, draw: Callable[..., object], controls: dict[str, widgets.ValueWidget], title: str,
                 dpi: int = 80):
        if not callable(draw):
            raise TypeError(f"draw must be a function returning a matplotlib Figure, got {type(draw).__name__}")
        if not controls:
            raise ValueError("an explorer needs at least one control")
        for name, control in controls.items():
            if not isinstance(control, widgets.ValueWidget):
                raise TypeError(f"control {name!r} must be an ipywidgets value widget, got {type(control).__name__}")
        self.draw, self.controls, self.title, self.dpi = draw, controls, title, dpi
        self.image = widgets.Image(format="png")
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
