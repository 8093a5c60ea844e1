"""A tiny text→image generator: a caption embedding is decoded into the pixels of the object it names — article §5.2,
chapter 6.

"Multimodal content generation includes generating images from text (such as DALL-E)" (§5.2). A caption says
*what* to draw ("a red circle") but not *where* or *how big*: those choices are left open, and a decoder trained
to reproduce whole scenes from the caption alone can only paint the average of all scenes that fit it — a smear.
Real generators draw the open choices from noise (VAEs, GANs, diffusion) or write the image token by token
(DALL-E). This module takes the smallest honest route, in the spirit of DALL-E 2's "decode a CLIP embedding"::

    caption ──► frozen CLIP text encoder ──► embedding (B, E) ─┐
    size (small / big, drawn at random) ───────────────────────┴─► MLP ──► sprite (B, 3, P, P)
    position (drawn at random) ──► paste the sprite onto an empty canvas ──► image (B, 3, S, S)

* :class:`SpriteDecoder` — the MLP that draws a ``P × P`` window centred on the object (its *sprite*); trained by
  pixel regression on windows cut around the objects of one-object scenes (:mod:`mmcourse.labs.ch06_applications`).
* :meth:`SpriteDecoder.paint` — sprites pasted (:meth:`SpriteDecoder.paste`) at given pixel centres onto a
  background canvas: whole images.

Training data, the training helper and the judge (the chapter's CLIP) are in :mod:`mmcourse.labs.ch06_applications`.
"""

from __future__ import annotations

import torch
from torch import nn

from mmcourse._checks import check_positive, check_tensor

__all__ = ["SpriteDecoder"]


class SpriteDecoder(nn.Module):
    """Caption embedding + object size → the ``P × P`` pixels around the object, in ``[0, 1]``.

    Args:
        text_dim: width ``E`` of the caption embedding (a TinyCLIP's ``embed_dim``).
        hidden: width of the MLP's two hidden layers.
        patch: side ``P`` of the sprite, in pixels (even).

    ``forward(text (B, E), sizes (B,)) → sprites (B, 3, P, P)``; ``sizes`` are ShapesWorld size ids (0 small,
    1 big), passed as a number.
    """

    def __init__(self, text_dim: int = 64, hidden: int = 256, patch: int = 16):
        super().__init__()
        check_positive(text_dim, "text_dim", integer=True)
        check_positive(hidden, "hidden", integer=True)
        check_positive(patch, "patch", integer=True)
        if patch % 2:
            raise ValueError(f"patch must be even (the sprite is centred on a pixel corner), got {patch}")
        self.text_dim, self.patch = text_dim, patch
        self.net = nn.Sequential(
            nn.Linear(text_dim + 1, hidden), nn.GELU(),
            nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, 3 * patch * patch),
        )  # fmt: skip

    def forward(self, text: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        check_tensor(text, "text", ndim=2, floating=True)
        check_tensor(sizes, "sizes", ndim=1)
        if text.size(1) != self.text_dim or sizes.size(0) != text.size(0):
            raise ValueError(
                f"text must be (B, {self.text_dim}) and sizes (B,), got {tuple(text.shape)} and {tuple(sizes.shape)}"
            )
        x = torch.cat([text, sizes.to(text.dtype)[:, None]], dim=1)  # (B, E + 1)
        return torch.sigmoid(self.net(x)).view(-1, 3, self.patch, self.patch)

    @torch.no_grad()
    def paint(
        self,
        text: torch.Tensor,
        sizes: torch.Tensor,
        centres: torch.Tensor,
        image_size: int,
        background: torch.Tensor,
    ) -> torch.Tensor:
        """Whole images: the sprites of ``text``/``sizes`` pasted at ``centres (B, 2)`` (pixel column, row) onto
        canvases of ``background (3,)`` colour → ``(B, 3, image_size, image_size)``."""
        return self.paste(self(text, sizes), centres, image_size, background)

    @staticmethod
    def paste(sprites: torch.Tensor, centres: torch.Tensor, image_size: int, background: torch.Tensor) -> torch.Tensor:
        """Paste ``sprites (B, 3, P, P)`` centred at integer pixel ``centres (B, 2)`` (column ``x``, row ``y``: the
        sprite covers columns ``x - P/2 … x + P/2 - 1``) onto canvases of colour ``background (3,)``; what falls
        outside the image is cut off. Returns ``(B, 3, image_size, image_size)``."""
        check_tensor(sprites, "sprites", ndim=4, floating=True)
        check_tensor(centres, "centres", ndim=2, floating=False)
        check_positive(image_size, "image_size", integer=True)
        if centres.shape != (sprites.size(0), 2):
            raise ValueError(f"centres must be ({sprites.size(0)}, 2), got {tuple(centres.shape)}")
        if background.shape != (sprites.size(1),):
            raise ValueError(f"background must hold one value per channel, got shape {tuple(background.shape)}")
        p, s = sprites.size(-1), image_size
        if len(centres) and (int(centres.min()) < 0 or int(centres.max()) >= s):
            raise ValueError(f"centres must be pixel positions in [0, {s}), got values in "
                             f"[{int(centres.min())}, {int(centres.max())}]")  # fmt: skip
        canvas = background.to(sprites)[None, :, None, None].repeat(len(sprites), 1, s + 2 * p, s + 2 * p)
        for n, (x, y) in enumerate(centres.tolist()):  # a margin of p on every side: no sprite falls off the canvas
            canvas[n, :, y + p // 2 : y + p + p // 2, x + p // 2 : x + p + p // 2] = sprites[n]
        return canvas[:, :, p : p + s, p : p + s]
