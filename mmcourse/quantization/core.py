"""INT8 from scratch: symmetric quantization and the modules that store int8 weights (article §8.2, chapter 8).

Symmetric quantization maps a float tensor ``x`` to integers ``q`` in ``[-qmax, qmax]`` with one scale::

    qmax  = 2**(bits - 1) - 1            # 127 for 8 bits, 31 for 6, 7 for 4
    scale = max|x| / qmax                 # per tensor: one number; per channel: one per output row
    q     = clamp(round(x / scale), -qmax, qmax)
    x̂     = q * scale                     # dequantized; the error |x - x̂| is at most scale / 2

Per-channel scales follow each output row's own range, so one large row no longer crushes the resolution of all
the others — the reason per-channel INT8 loses less than per-tensor INT8 on real weights.

Modules (each built with ``from_float``; weights live in int8 buffers, scales in float32):

* :class:`Int8Linear` — ``y = (x_q @ W_q^T) * (s_x s_w) + b``: activations are quantized per row on the fly
  (``activation="dynamic"``, W8A8 like torch's dynamic quantization) or the weight is dequantized and used in
  float (``activation="weight_only"``). The integer products are summed exactly: ``torch._int_mm`` (int32) on
  CUDA, a float32 matmul of the integer values elsewhere — exact while the sum stays below 2**24 and within
  1e-7 relative beyond, far below the quantization error. Plain PyTorch has no fast int8 matmul on CPU, so this
  module shows the arithmetic, not the speed: for speed see
  :func:`mmcourse.quantization.convert.quantize_dynamic_with_embeddings`.
* :class:`Int8Embedding` — one scale per row (token); rows are dequantized after the lookup.
* :class:`Int8Conv2d` — weight-only: the int8 kernel is dequantized and used by ``F.conv2d``.

Bit widths 2..8 are supported; every width is stored in an int8 buffer (a real 4-bit format would pack two values
per byte — :func:`packed_size_bytes` reports that ideal size).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_choice, check_tensor

__all__ = [
    "SUPPORTED_BITS",
    "GRANULARITIES",
    "qmax_for_bits",
    "symmetric_scale",
    "quantize_symmetric",
    "dequantize_symmetric",
    "fake_quantize",
    "quantization_error",
    "packed_size_bytes",
    "int8_matmul",
    "Int8Linear",
    "Int8Embedding",
    "Int8Conv2d",
]

SUPPORTED_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
"""Bit widths of symmetric signed quantization this module implements (stored in int8)."""

GRANULARITIES: tuple[str, ...] = ("per_tensor", "per_channel")
ACTIVATION_MODES: tuple[str, ...] = ("dynamic", "weight_only")


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int in {list(SUPPORTED_BITS)}, got {bits!r} ({type(bits).__name__})")
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {list(SUPPORTED_BITS)} (stored in int8), got {bits}")
    return bits


def qmax_for_bits(bits: int) -> int:
    """Largest integer of symmetric signed ``bits``-bit quantization: ``2**(bits-1) - 1`` (127 for 8 bits)."""
    return 2 ** (_check_bits(bits) - 1) - 1


def _check_axis(x: torch.Tensor, axis, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{name} must be an int, got {axis!r} ({type(axis).__name__})")
    if x.dim() == 0 or not -x.dim() <= axis < x.dim():
        raise ValueError(f"{name} must index a dimension of a {x.dim()}-D tensor, got {axis}")
    return axis % x.dim()


def _broadcast_scale(scale: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """``(C,)`` → shape with ``C`` at ``axis`` and 1 elsewhere, for broadcasting against an ``ndim``-D tensor."""
    if scale.dim() == 0:
        return scale
    shape = [1] * ndim
    shape[axis] = scale.numel()
    return scale.view(shape)


def symmetric_scale(
    x: torch.Tensor, bits: int = 8, granularity: str = "per_channel", axis: int = 0
) -> torch.Tensor:
    """Scale(s) of symmetric quantization: ``max|x| / qmax`` over the whole tensor or per slice along ``axis``.

    Args:
        x: float tensor, any shape (a weight ``(out, in)``: ``axis=0`` gives one scale per output row).
        bits: 2..8.
        granularity: ``"per_tensor"`` → scale of shape ``()``; ``"per_channel"`` → ``(x.shape[axis],)``.
        axis: the channel dimension for ``"per_channel"``.
    Returns:
        float32 scale(s), strictly positive (an all-zero slice gets scale 1, so it quantizes to zeros).
    """
    check_tensor(x, "x", floating=True, finite=True)
    qmax = qmax_for_bits(bits)
    check_choice(granularity, "granularity", GRANULARITIES)
    if granularity == "per_tensor" or x.dim() == 0:
        absmax = x.detach().abs().max().float()
    else:
        axis = _check_axis(x, axis)
        absmax = x.detach().abs().float().transpose(0, axis).reshape(x.shape[axis], -1).amax(dim=1)
    scale = absmax / qmax
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def quantize_symmetric(
    x: torch.Tensor, bits: int = 8, granularity: str = "per_channel", axis: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` to signed integers in ``[-qmax, qmax]``.

    Args:
        x: float tensor, any shape.
        bits, granularity, axis: as in :func:`symmetric_scale`.
    Returns:
        ``(q, scale)``: ``q`` int8 with the shape of ``x``; ``scale`` float32 ``()`` or ``(x.shape[axis],)``.
    """
    scale = symmetric_scale(x, bits, granularity, axis)
    qmax = qmax_for_bits(bits)
    axis = axis % x.dim() if x.dim() > 0 else 0
    q = torch.round(x.float() / _broadcast_scale(scale, x.dim(), axis)).clamp_(-qmax, qmax)
    return q.to(torch.int8), scale


def dequantize_symmetric(q: torch.Tensor, scale: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """``q * scale`` as float32; ``scale`` is ``()`` or ``(q.shape[axis],)`` (as returned by the quantizer)."""
    check_tensor(q, "q", floating=False)
    check_tensor(scale, "scale", ndim=(0, 1), floating=True)
    if scale.dim() == 1:
        axis = _check_axis(q, axis)
        if scale.numel() != q.shape[axis]:
            raise ValueError(
                f"scale must have {q.shape[axis]} entries (q.shape[{axis}]), got shape {tuple(scale.shape)}"
            )
    return q.float() * _broadcast_scale(scale.float(), q.dim(), axis)


def fake_quantize(x: torch.Tensor, bits: int = 8, granularity: str = "per_channel", axis: int = 0) -> torch.Tensor:
    """``dequantize(quantize(x))``: the float values an INT-``bits`` model really computes with (shape of ``x``)."""
    q, scale = quantize_symmetric(x, bits, granularity, axis)
    return dequantize_symmetric(q, scale, axis).to(x.dtype)


def quantization_error(
    x: torch.Tensor, bits: int = 8, granularity: str = "per_channel", axis: int = 0
) -> dict[str, float]:
    """How much quantizing ``x`` costs.

    Returns:
        ``{"mse", "max_abs", "relative", "sqnr_db"}``: mean squared error, largest absolute error,
        ``‖x − x̂‖ / ‖x‖`` and the signal-to-quantization-noise ratio ``10 log10(‖x‖² / ‖x − x̂‖²)`` in dB
        (``inf`` when the error is zero). Each extra bit adds about 6 dB.
    """
    x_hat = fake_quantize(x, bits, granularity, axis).float()
    x = x.detach().float()
    err = x - x_hat
    signal, noise = float(x.pow(2).sum()), float(err.pow(2).sum())
    return {
        "mse": float(err.pow(2).mean()),
        "max_abs": float(err.abs().max()),
        "relative": math.sqrt(noise / signal) if signal > 0 else 0.0,
        "sqnr_db": 10 * math.log10(signal / noise) if noise > 0 else math.inf,
    }


def packed_size_bytes(num_values: int, bits: int, num_scales: int = 1) -> int:
    """Bytes of ``num_values`` integers packed at ``bits`` bits each, plus ``num_scales`` float32 scales."""
    if isinstance(num_values, bool) or not isinstance(num_values, int) or num_values < 0:
        raise ValueError(f"num_values must be a non-negative int, got {num_values!r}")
    if isinstance(num_scales, bool) or not isinstance(num_scales, int) or num_scales < 0:
        raise ValueError(f"num_scales must be a non-negative int, got {num_scales!r}")
    return math.ceil(num_values * _check_bits(bits) / 8) + 4 * num_scales


def int8_matmul(a_q: torch.Tensor, b_q: torch.Tensor) -> torch.Tensor:
    """Exact integer matrix product ``a_q @ b_q^T`` of int8 matrices, returned as float32.

    Args:
        a_q: int8 ``(M, K)``; b_q: int8 ``(N, K)``.
    Returns:
        ``(M, N)`` float32 holding the integer sums (int32 ``torch._int_mm`` on CUDA where its shape rules allow,
        a float32 matmul of the integer values elsewhere).
    """
    check_tensor(a_q, "a_q", ndim=2, floating=False)
    check_tensor(b_q, "b_q", ndim=2, floating=False)
    if a_q.dtype != torch.int8 or b_q.dtype != torch.int8:
        raise TypeError(f"a_q and b_q must be int8, got {a_q.dtype} and {b_q.dtype}")
    if a_q.shape[1] != b_q.shape[1]:
        raise ValueError(f"a_q (M, K) and b_q (N, K) must share K, got {tuple(a_q.shape)} and {tuple(b_q.shape)}")
    m, k = a_q.shape
    n = b_q.shape[0]
    if a_q.is_cuda and m > 16 and k % 8 == 0 and n % 8 == 0:
        try:
            return torch._int_mm(a_q, b_q.t().contiguous().t()).float()
        except RuntimeError:  # an older GPU or torch without an int8 kernel for this shape
            pass
    return a_q.float() @ b_q.float().t()


def _check_float_weight(module: nn.Module, kind: type, name: str = "module") -> None:
    if not isinstance(module, kind):
        raise TypeError(f"{name} must be a torch.nn.{kind.__name__}, got {type(module).__name__}")
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        got = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise TypeError(f"{name}.weight must be a floating-point tensor (an unquantized layer), got {got}")
    if weight.is_meta:
        raise ValueError(f"{name}.weight is on the meta device (no values to quantize)")


class _Int8WeightModule(nn.Module):
    """Shared by the int8 layers: a weight kept as ``weight_int8`` + ``weight_scale`` (quantized along dim 0)."""

    def _store_weight(self, weight: torch.Tensor) -> None:
        """Quantize the float ``weight`` (bits/granularity of this layer) into the existing buffers."""
        q, scale = quantize_symmetric(weight.detach(), self.bits, self.granularity, axis=0)
        self.weight_int8.copy_(q)
        self.weight_scale.copy_(scale)

    def dequantized_weight(self) -> torch.Tensor:
        """``W_q * s_w``: the float32 weight this layer effectively uses (same shape as ``weight_int8``)."""
        return dequantize_symmetric(self.weight_int8, self.weight_scale, axis=0)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight, computed on each access (for code that inspects ``layer.weight``)."""
        return self.dequantized_weight()


class Int8Linear(_Int8WeightModule):
    """A Linear layer whose weight is stored as int8 + float32 scale(s) and used as integers.

    Shapes: input ``(..., in_features)`` → output ``(..., out_features)``.

    Buffers (what ``state_dict`` stores): ``weight_int8`` int8 ``(out, in)``, ``weight_scale`` float32
    ``(out,)`` (per channel) or ``()`` (per tensor), ``bias`` float ``(out,)`` or absent.

    ``activation="dynamic"``: each input row is quantized to int8 with its own scale ``s_x``, the integer
    product ``x_q @ W_q^T`` is formed exactly (:func:`int8_matmul`) and rescaled by ``s_x * s_w``.
    ``activation="weight_only"``: ``F.linear(x, W_q * s_w, b)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        bits: int = 8,
        granularity: str = "per_channel",
        activation: str = "dynamic",
    ):
        super().__init__()
        for value, name in ((in_features, "in_features"), (out_features, "out_features")):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        _check_bits(bits)
        check_choice(granularity, "granularity", GRANULARITIES)
        check_choice(activation, "activation", ACTIVATION_MODES)
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.granularity, self.activation = bits, granularity, activation
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        scale_shape = (out_features,) if granularity == "per_channel" else ()
        self.register_buffer("weight_scale", torch.ones(scale_shape))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        bits: int = 8,
        granularity: str = "per_channel",
        activation: str = "dynamic",
    ) -> Int8Linear:
        """Quantize a float ``nn.Linear`` (left unchanged) into a new :class:`Int8Linear`."""
        _check_float_weight(linear, nn.Linear, "linear")
        module = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            bits=bits,
            granularity=granularity,
            activation=activation,
        )
        module._store_weight(linear.weight)
        if linear.bias is not None:
            module.bias = linear.bias.detach().float().clone()
        return module.to(linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", floating=True)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {tuple(x.shape)}")
        if self.activation == "weight_only":
            return F.linear(x, self.dequantized_weight().to(x.dtype), _cast(self.bias, x.dtype))
        x_q, x_scale = _quantize_rows(x.reshape(-1, self.in_features))  # one scale per row (token)
        acc = int8_matmul(x_q, self.weight_int8)  # (N, out) exact integer sums
        y = acc * x_scale[:, None] * _broadcast_scale(self.weight_scale, 2, 1)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"bits={self.bits}, granularity={self.granularity}, activation={self.activation}"
        )


def _quantize_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 of activations ``(N, K)`` → ``(int8 (N, K), float32 scales (N,))`` (no checks)."""
    scale = rows.detach().abs().amax(dim=1).float() / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(rows.float() / scale[:, None]).clamp_(-127, 127).to(torch.int8), scale


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


class Int8Embedding(_Int8WeightModule):
    """An embedding table stored as int8 with one float32 scale per row.

    Shapes: ``ids`` ``(...)`` LongTensor → ``(..., embedding_dim)`` float32.
    Buffers: ``weight_int8`` int8 ``(num_embeddings, embedding_dim)``, ``weight_scale`` float32
    ``(num_embeddings,)`` (per row) or ``()`` (per tensor).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        *,
        bits: int = 8,
        granularity: str = "per_channel",
    ):
        super().__init__()
        for value, name in ((num_embeddings, "num_embeddings"), (embedding_dim, "embedding_dim")):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        _check_bits(bits)
        check_choice(granularity, "granularity", GRANULARITIES)
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.bits, self.granularity = bits, granularity
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones((num_embeddings,) if granularity == "per_channel" else ()))

    @classmethod
    def from_float(cls, embedding: nn.Embedding, bits: int = 8, granularity: str = "per_channel") -> Int8Embedding:
        """Quantize a float ``nn.Embedding`` (left unchanged) row by row into a new :class:`Int8Embedding`."""
        _check_float_weight(embedding, nn.Embedding, "embedding")
        if embedding.max_norm is not None:
            raise ValueError("embedding.max_norm must be None (a max_norm embedding rewrites its rows when used)")
        module = cls(
            embedding.num_embeddings,
            embedding.embedding_dim,
            embedding.padding_idx,
            bits=bits,
            granularity=granularity,
        )
        module._store_weight(embedding.weight)
        return module.to(embedding.weight.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        check_tensor(ids, "ids", floating=False)
        rows = F.embedding(ids, self.weight_int8).float()  # (..., D) integer values
        if self.weight_scale.dim() == 0:
            return rows * self.weight_scale
        return rows * self.weight_scale[ids].unsqueeze(-1)

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx}, bits={self.bits}, "
            f"granularity={self.granularity}"
        )


class Int8Conv2d(_Int8WeightModule):
    """A Conv2d whose kernel is stored as int8 with one float32 scale per output channel (weight-only).

    Shapes: ``(B, C_in, H, W)`` → ``(B, C_out, H', W')`` exactly as the original convolution.
    Buffers: ``weight_int8`` int8 ``(C_out, C_in / groups, kH, kW)``, ``weight_scale`` float32 ``(C_out,)`` or
    ``()``, ``bias`` ``(C_out,)`` or absent.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        bits: int = 8,
        granularity: str = "per_channel",
    ):
        super().__init__()
        for value, name in ((in_channels, "in_channels"), (out_channels, "out_channels"), (groups, "groups")):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels and out_channels must be divisible by groups={groups}, got "
                             f"{in_channels} and {out_channels}")
        _check_bits(bits)
        check_choice(granularity, "granularity", GRANULARITIES)
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding = padding if isinstance(padding, str) else pair(padding)  # "same" / "valid" as in nn.Conv2d
        self.dilation, self.groups = pair(dilation), groups
        self.bits, self.granularity = bits, granularity
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.register_buffer("weight_int8", torch.zeros(shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones((out_channels,) if granularity == "per_channel" else ()))
        self.register_buffer("bias", torch.zeros(out_channels) if bias else None)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, bits: int = 8, granularity: str = "per_channel") -> Int8Conv2d:
        """Quantize a float ``nn.Conv2d`` (left unchanged) into a new :class:`Int8Conv2d`."""
        _check_float_weight(conv, nn.Conv2d, "conv")
        if conv.padding_mode != "zeros":
            raise ValueError(f"conv.padding_mode must be 'zeros', got {conv.padding_mode!r}")
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     conv.groups, conv.bias is not None, bits=bits, granularity=granularity)
        module._store_weight(conv.weight)
        if conv.bias is not None:
            module.bias = conv.bias.detach().float().clone()
        return module.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ndim=(3, 4), floating=True)
        weight = self.dequantized_weight().to(x.dtype)
        return F.conv2d(x, weight, _cast(self.bias, x.dtype), self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"bits={self.bits}, granularity={self.granularity}"
        )
