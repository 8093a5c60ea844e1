"""The article's five figures, re-drawn with matplotlib from the tables in :mod:`mmcourse.viz.article`.

Each function returns the ``matplotlib.figure.Figure`` (notebooks end the cell with ``plt.show()``).
"""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from mmcourse.viz import article

__all__ = [
    "ERA_COLORS", "latin", "timeline", "layered_diagram", "representation_architecture", "multimodal_transformer",
    "retrieval_flow", "trends_pie",
]

ERA_COLORS = ["#c7d2fe", "#bbf7d0", "#fde68a", "#fecaca", "#e9d5ff"]
_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]+")


def latin(text: str) -> str:
    """``text`` without CJK characters: matplotlib's default fonts have no CJK glyphs (and would warn)."""
    return _CJK.sub("", text).strip()


def timeline(milestones: list[article.Milestone] | None = None, eras=None, figsize=(11, 5)):
    """Fig.1 — the history of multimodal AI as a timeline, eras shaded, milestones labelled.

    A reconstruction: the article's Fig.1 survives only as its caption and one sentence of §1.2; the eras and
    milestones (:data:`mmcourse.viz.article.TIMELINE`) are the course's, chosen to fit that sentence."""
    milestones = article.TIMELINE if milestones is None else milestones
    eras = article.ERAS if eras is None else eras
    if not milestones:
        raise ValueError("milestones must not be empty")
    fig, ax = plt.subplots(figsize=figsize)
    # Time is compressed before 2012 so the recent, dense years get room: x = position on a piecewise axis.
    years = sorted({m.year for m in milestones})

    def x_of(year: float) -> float:
        return (year - 2012) * 1.0 if year >= 2012 else -4.0 + (year - 1976) * (3.0 / (2011 - 1976))

    for (name, start, end), color in zip(eras, ERA_COLORS):
        ax.axvspan(x_of(start) - 0.4, x_of(end) + 0.4, color=color, alpha=0.7, lw=0, label=name)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3, fontsize=8, frameon=False)
    ax.axhline(0, color="black", lw=1)
    level: dict[int, int] = {}
    for m in milestones:
        k = level.get(m.year, 0)
        level[m.year] = k + 1
        y = (1 + k) * (1 if (years.index(m.year) % 2 == 0) else -1)
        ax.plot([x_of(m.year)] * 2, [0, y * 0.85], color="gray", lw=0.8)
        ax.plot(x_of(m.year), 0, "o", color="black", ms=4)
        ax.annotate(f"{m.name}\n({m.year})", (x_of(m.year), y), ha="center", va="center", fontsize=7.5,
                    bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="gray", lw=0.6))
    ax.set_xticks([x_of(y) for y in years], [str(y) for y in years], fontsize=7, rotation=45)
    ax.set_yticks([])
    ax.set_ylim(-3.3, 3.3)
    ax.set_xlabel("year (compressed before 2012)")
    ax.set_title("Fig.1  Milestones of multimodal AI (§1.2)\n"
                 "reconstructed from the article's text (its image is lost): "
                 "\"from early simple fusion to deep collaborative learning\"", fontsize=11)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def layered_diagram(layers: list[tuple[str, list[str]]], title: str, figsize=(10, 5.5), arrows: bool = True,
                    edges: list[tuple[str, str]] | None = None):
    """A bottom-to-top block diagram: one row per layer, boxes per component, arrows between rows.

    Without ``edges`` each box points to its nearest box in the row above (a layout heuristic); with ``edges``, a
    list of ``(from_label, to_label)`` pairs naming boxes by their labels, exactly those arrows are drawn.
    """
    if not layers:
        raise ValueError("layers must not be empty")
    if edges is not None:
        known = [label for _, boxes in layers for label in boxes]
        unknown = sorted({label for edge in edges for label in edge} - set(known))
        if unknown or len(set(known)) != len(known):
            raise ValueError(f"edges must name boxes by unique labels; unknown or ambiguous: {unknown or known}")
    fig, ax = plt.subplots(figsize=figsize)
    n = len(layers)
    centers: list[list[tuple[float, float]]] = []
    for row, ((layer_name, boxes), color) in enumerate(zip(layers, ERA_COLORS * 3)):
        y = row * 1.4
        ax.text(-0.2, y, latin(layer_name), ha="right", va="center", fontsize=9, style="italic")
        width = 8.0 / max(len(boxes), 1)
        row_centers = []
        for j, label in enumerate(boxes):
            x = j * width + width / 2
            box = FancyBboxPatch((x - width * 0.44, y - 0.4), width * 0.88, 0.8,
                                 boxstyle="round,pad=0.02,rounding_size=0.12", fc=color, ec="#334155", lw=1)
            ax.add_patch(box)
            ax.text(x, y, latin(label), ha="center", va="center", fontsize=8.5, wrap=True)
            row_centers.append((x, y))
        centers.append(row_centers)
    if arrows and edges is not None:
        where = {label: center for (_, boxes), row in zip(layers, centers) for label, center in zip(boxes, row)}
        for source, target in edges:
            (xs, ys), (xt, yt) = where[source], where[target]
            start, end = (xs, ys + 0.42), (xt, yt - 0.42)
            if ys == yt:  # same row: side to side
                step = 0.5 if xt > xs else -0.5
                start, end = (xs + step, ys), (xt - step, yt)
            ax.annotate("", end, start, arrowprops=dict(arrowstyle="->", color="#64748b", lw=0.9))
    elif arrows:
        for below, above in zip(centers, centers[1:]):
            # each box points to its nearest box in the row above, and each box above is fed by its nearest below
            pairs = {(b, min(above, key=lambda a: abs(a[0] - b[0]))) for b in below}
            pairs |= {(min(below, key=lambda b: abs(b[0] - a[0])), a) for a in above}
            for (xb, yb), (xa, ya) in sorted(pairs):
                ax.annotate("", (xa, ya - 0.42), (xb, yb + 0.42),
                            arrowprops=dict(arrowstyle="->", color="#64748b", lw=0.9))
    ax.set_xlim(-3.2, 8.2)
    ax.set_ylim(-0.8, (n - 1) * 1.4 + 0.8)
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def representation_architecture():
    """Fig.2 — cross-modal representation learning (§2.1), its arrows from ``article.REPRESENTATION_EDGES``.

    A reconstruction: the article's text keeps the figure's boxes and layers, not its image (see the table)."""
    return layered_diagram(article.REPRESENTATION_LAYERS,
                           "Fig.2  Cross-modal representation learning (§2.1), reconstructed from the article's text",
                           figsize=(10, 6.5), edges=article.REPRESENTATION_EDGES)


def multimodal_transformer():
    """Fig.3 — a multimodal transformer with cross-modal attention (§3.1).

    The article's own image of Fig.3 is lost; this is a reconstruction from its text, and the title says so.
    """
    return layered_diagram(article.TRANSFORMER_LAYERS,
                           "Fig.3  A multimodal transformer (§3.1) - reconstructed from the text (original image lost)")


def retrieval_flow():
    """Fig.4 — the image-text retrieval system (§5.1), one path through its boxes as the article lists them: user
    query → query type? → text or image encoder → query feature vector → similarity with the database vectors →
    rank → return the matches. A reconstruction: the article's text keeps the boxes and layers, not the image."""
    [(_, (query, kind)), (_, (text_encoder, image_encoder)), (_, (vector, similarity)),
     (_, (rank, matches))] = article.RETRIEVAL_FLOW  # fmt: skip
    upward = [(kind, text_encoder), (kind, image_encoder), (text_encoder, vector), (image_encoder, vector),
              (similarity, rank)]  # fmt: skip
    fig = layered_diagram(article.RETRIEVAL_FLOW,
                          "Fig.4  Image-text retrieval flow (§5.1), reconstructed from the article's text",
                          figsize=(10, 4.5), edges=upward)
    ax = fig.axes[0]
    for row in (0, 2, 3):  # the steps inside one layer: from the left box's edge to the right box's (boxes 2 x 4 wide)
        ax.annotate("", (6.0 - 1.76, row * 1.4), (2.0 + 1.76, row * 1.4),
                    arrowprops=dict(arrowstyle="->", color="#64748b", lw=0.9))
    for x, label in ((4.1, "text"), (6.15, "image")):  # the two branches of "query type?" (文本 / 图像)
        ax.text(x, 0.7, label, ha="left", va="center", fontsize=8, style="italic", color="#475569")
    return fig


def trends_pie(trends=None, figsize=(7.5, 4.5)):
    """Fig.5 — the article's predicted distribution of future trends (§7.1)."""
    trends = article.TRENDS if trends is None else trends
    if sum(t[2] for t in trends) <= 0:
        raise ValueError("trend shares must sum to a positive number")
    fig, ax = plt.subplots(figsize=figsize)
    labels = [en for en, _zh, _ in trends]
    ax.pie([t[2] for t in trends], labels=labels, autopct="%d%%", startangle=90, counterclock=False,
           colors=ERA_COLORS, wedgeprops=dict(edgecolor="white"), textprops=dict(fontsize=8))
    ax.set_title("Fig.5  Future trends of multimodal AI (§7.1)")
    fig.tight_layout()
    return fig
