"""Model-level quantization: every ``quantize_*`` takes a float model and returns a quantized COPY (article §8.2).

All paths leave their input untouched, return the copy in eval mode, keep its class and forward interface (a
Hugging Face ``CLIPModel`` stays a ``CLIPModel``; only leaf layers are swapped) and raise a clear error on a model
without ``nn.Linear`` layers (an already-quantized model included).

| function | quantizes | activations | runs on |
|---|---|---|---|
| :func:`quantize_dynamic` (the article's code) | Linear (torch kernels) | INT8 per call | CPU |
| :func:`quantize_dynamic_with_embeddings` | + token tables, patch convs | INT8 per call | CPU |
| :func:`quantize_from_scratch` (how it works) | Linear, Embedding, Conv2d | INT8 or float | any device |
| :func:`quantize_torchao` (torch's successor API) | Linear (torchao) | INT8 or float | CUDA |

CPU kernels: fbgemm / x86 on Intel and AMD, qnnpack on ARM. :func:`quantize_dynamic_with_embeddings` is the
smallest and fastest on CPU; :func:`quantize_from_scratch` is readable but not faster. torchao's INT8 paths need
INT8 kernels that a CPU without AVX-512 VNNI lacks (measured in benchmarks/RESULTS.md) — on CPU use
:func:`quantize_dynamic_with_embeddings`; on a GPU start with float16, then torchao.

**The article's snippet on today's torch.** ``torch.quantization.quantize_dynamic(model, {torch.nn.Linear},
dtype=torch.qint8)`` still runs unchanged on today's torch: ``torch.quantization`` is a legacy alias of
``torch.ao.quantization``, whose whole eager-mode API is deprecated in favour of torchao's ``quantize_``. What
today's torch needs is therefore not a change to the call but a deliberate handling of the warnings that come
with it, none of them a bug in the student's code:

* ``DeprecationWarning: torch.ao.quantization is deprecated and will be removed …`` — when
  ``quantize_dynamic`` is called;
* ``UserWarning: torch.quantize_per_tensor, torch.quantize_per_channel and other quantized tensor creation
  functions … are deprecated`` — when each weight becomes a quantized ``qint8`` tensor (once per process);
* ``UserWarning: TypedStorage is deprecated`` — when ``torch.save`` writes those quantized tensors.

:func:`silence_quantization_warnings` filters exactly these messages and nothing else, so notebook stderr stays
clean. :func:`quantize_dynamic` calls ``torch.ao.quantization.quantize_dynamic`` (the stable spelling) on a
float32 CPU copy in eval mode (these kernels exist on CPU only: on Colab keep the model on the CPU for this path),
after checking that a quantized engine is selected (:func:`ensure_quantized_engine`: ``x86`` here, ``qnnpack`` on
ARM), with those warnings silenced.

**nn.TransformerEncoder.** Its inference fast path reads ``linear1.weight`` as a tensor; a dynamically quantized
Linear has a ``weight()`` *method*, so eval-mode forward crashes (``'function' object has no attribute
'device'``). ``torch.backends.mha.set_fastpath_enabled(False)`` avoids it, but globally (float models lose the
fast path too). Each quantized copy instead gets hooks that switch the fast path off only while its own
Transformer layers run, and restore the previous setting afterwards. ``nn.MultiheadAttention`` keeps its input and
output projections in float32 in every path: it reads those weights directly instead of calling the layers.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from mmcourse._checks import check_choice
from mmcourse.quantization.core import (
    GRANULARITIES,
    Int8Conv2d,
    Int8Embedding,
    Int8Linear,
    _check_bits,
)

__all__ = [
    "model_size_bytes",
    "silence_quantization_warnings",
    "ensure_quantized_engine",
    "quantizable_layers",
    "replace_layers",
    "DynamicInt8PatchConv2d",
    "quantize_dynamic",
    "quantize_dynamic_with_embeddings",
    "quantize_from_scratch",
    "quantize_torchao",
]

_QUANTIZATION_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (DeprecationWarning, r"torch\.ao\.quantization is deprecated"),
    (UserWarning, r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor"),
    (UserWarning, r"TypedStorage is deprecated"),
)


@contextmanager
def silence_quantization_warnings() -> Iterator[None]:
    """Hide exactly the deprecation warnings of torch's eager INT8 API (see the module docstring); nothing else.

    Use it around the article's code::

        with silence_quantization_warnings():
            quantized_model = torch.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            torch.save(quantized_model.state_dict(), "quantized_clip_model.pth")
    """
    with warnings.catch_warnings():
        for category, pattern in _QUANTIZATION_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=category)
        yield


_ENGINE_PREFERENCE = ("x86", "fbgemm", "qnnpack", "onednn")


def ensure_quantized_engine() -> str:
    """Make sure torch has a quantized CPU engine selected and return its name.

    The default is right on most builds (``x86`` on Intel/AMD, ``qnnpack`` on ARM); a build whose engine is
    ``"none"`` gets the first supported one of ``x86, fbgemm, qnnpack, onednn``.
    """
    supported = list(torch.backends.quantized.supported_engines)
    current = torch.backends.quantized.engine
    if current != "none" and current in supported:
        return current
    for engine in _ENGINE_PREFERENCE:
        if engine in supported:
            torch.backends.quantized.engine = engine
            return engine
    raise RuntimeError(f"this torch build has no quantized CPU engine (supported engines: {supported})")


# --------------------------------------------------------------------------------------------- layer surgery


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_meta:
            raise ValueError(f"model has tensors on the meta device (e.g. {name!r}): nothing to quantize")


def _check_skip(skip) -> tuple[str, ...]:
    if isinstance(skip, str) or not isinstance(skip, (list, tuple, set, frozenset)):
        raise TypeError(f"skip must be a list of module names, got {type(skip).__name__}")
    for name in skip:
        if not isinstance(name, str):
            raise TypeError(f"skip must contain module names (str), got {name!r}")
    return tuple(skip)


def _skipped(name: str, skip: Sequence[str]) -> bool:
    return any(name == s or name.startswith(s + ".") for s in skip)


def quantizable_layers(
    model: nn.Module, types: tuple[type[nn.Module], ...] = (nn.Linear,), skip: Sequence[str] = ()
) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every layer of exactly one of ``types`` (subclasses included) that can be swapped.

    Skipped: names in ``skip`` (and their children), and the ``out_proj`` of ``nn.MultiheadAttention``, whose
    weight the attention reads directly instead of calling the layer.
    """
    _check_model(model)
    skip = _check_skip(skip)
    inside_mha = {
        f"{parent}.{child}" if parent else child
        for parent, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention)
        for child, _ in module.named_children()
    }
    return [
        (name, module)
        for name, module in model.named_modules()
        if name and isinstance(module, types) and name not in inside_mha and not _skipped(name, skip)
    ]


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def replace_layers(
    model: nn.Module,
    convert: Callable[[str, nn.Module], nn.Module | None],
    types: tuple[type[nn.Module], ...] = (nn.Linear,),
    skip: Sequence[str] = (),
) -> list[str]:
    """Swap, IN PLACE, each layer of ``types`` for ``convert(name, layer)`` (``None`` keeps the layer).

    Returns the names of the swapped layers. Use it on a copy (every ``quantize_*`` does).
    """
    if not callable(convert):
        raise TypeError(f"convert must be callable(name, module), got {type(convert).__name__}")
    swapped = []
    for name, layer in quantizable_layers(model, types, skip):
        new = convert(name, layer)
        if new is not None:
            _set_submodule(model, name, new)
            swapped.append(name)
    return swapped


def _require_linears(model: nn.Module, skip: Sequence[str], what: str) -> list[tuple[str, nn.Module]]:
    linears = quantizable_layers(model, (nn.Linear,), skip)
    if not linears:
        raise ValueError(
            f"{what}: model ({type(model).__name__}) has no torch.nn.Linear layer to quantize "
            "(is it already quantized, or are all its Linear layers in skip?)"
        )
    for name, layer in linears:
        if not layer.weight.is_floating_point():
            raise TypeError(f"{what}: layer {name!r} has a non-float weight ({layer.weight.dtype})")
    return linears


def _float_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode (the input keeps its mode, weights and hooks)."""
    return copy.deepcopy(model).eval()


# ------------------------------------------------------------------------- nn.TransformerEncoder fast path

_FASTPATH_MODULES = (nn.TransformerEncoder, nn.TransformerEncoderLayer)


def _disable_fastpath_pre_hook(module: nn.Module, args) -> None:
    module._fastpath_was_enabled = getattr(module, "_fastpath_was_enabled", []) + [
        torch.backends.mha.get_fastpath_enabled()
    ]
    torch.backends.mha.set_fastpath_enabled(False)


def _restore_fastpath_hook(module: nn.Module, args, output) -> None:
    stack = getattr(module, "_fastpath_was_enabled", [])
    if stack:
        torch.backends.mha.set_fastpath_enabled(stack.pop())


def _guard_transformer_fastpath(model: nn.Module) -> None:
    """Run the quantized copy's ``nn.TransformerEncoder(Layer)`` modules without torch's fused fast path."""
    for module in model.modules():
        if isinstance(module, _FASTPATH_MODULES):
            module.register_forward_pre_hook(_disable_fastpath_pre_hook)
            module.register_forward_hook(_restore_fastpath_hook, always_call=True)


# ---------------------------------------------------------------------------------- torch dynamic INT8


def _require_cpu_float32(linears: list[tuple[str, nn.Module]], what: str) -> None:
    for name, layer in linears:
        if layer.weight.device.type != "cpu":
            raise ValueError(
                f"{what}: torch's dynamic INT8 kernels run on CPU only, but layer {name!r} is on "
                f"{layer.weight.device}; call model.cpu() first (on CUDA use quantize_torchao)"
            )
        if layer.weight.dtype != torch.float32:
            raise TypeError(
                f"{what}: layer {name!r} has a {layer.weight.dtype} weight; dynamic INT8 needs float32 "
                "(call model.float() first)"
            )


def _dynamic_qconfig(per_channel: bool):
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    return per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig


def _torch_dynamic_inplace(model: nn.Module, names: Sequence[str], per_channel: bool) -> None:
    ensure_quantized_engine()
    qconfig = _dynamic_qconfig(per_channel)
    with silence_quantization_warnings():
        torch.ao.quantization.quantize_dynamic(
            model, {name: qconfig for name in names}, dtype=torch.qint8, inplace=True
        )


def quantize_dynamic(model: nn.Module, *, per_channel: bool = False, skip: Sequence[str] = ()) -> nn.Module:
    """The article's dynamic INT8 (``torch.ao.quantization.quantize_dynamic``), with today's fixes applied.

    Every ``nn.Linear`` becomes a ``DynamicQuantizedLinear``: int8 weights (one scale per tensor, or per output
    channel with ``per_channel=True``), activations quantized on the fly per call, int32 accumulation in
    fbgemm/x86/qnnpack kernels. Embeddings and convolutions stay float32.

    Args:
        model: a float32 CPU model (HF ``CLIPModel``, TinyCLIP, anything with ``nn.Linear`` layers).
        per_channel: one weight scale per output row instead of one per layer.
        skip: names of submodules to leave in float.
    Returns:
        a quantized copy in eval mode, same class and forward interface; ``model`` is unchanged.
    """
    _check_model(model)
    skip = _check_skip(skip)
    _require_cpu_float32(_require_linears(model, skip, "quantize_dynamic"), "quantize_dynamic")
    quantized = _float_copy(model)
    names = [name for name, _ in quantizable_layers(quantized, (nn.Linear,), skip)]
    _torch_dynamic_inplace(quantized, names, per_channel)
    _guard_transformer_fastpath(quantized)
    return quantized


def _is_patchify(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.stride == conv.kernel_size
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


class DynamicInt8PatchConv2d(nn.Module):
    """A patch-embedding convolution (``stride == kernel_size``, no padding) run as a dynamic INT8 Linear.

    Such a convolution is a Linear layer applied to each non-overlapping ``kH × kW`` patch, so it can use the
    same fast INT8 kernel: ``(B, C, H, W)`` → patches ``(B·H'·W', C·kH·kW)`` → Linear → ``(B, C_out, H', W')``
    with ``H' = H // kH``, ``W' = W // kW`` (exactly what the convolution returns).
    """

    def __init__(self, conv: nn.Conv2d, per_channel: bool = True):
        super().__init__()
        if not isinstance(conv, nn.Conv2d) or not _is_patchify(conv):
            raise ValueError(
                "conv must be an nn.Conv2d with stride == kernel_size, no padding, dilation 1 and groups 1, "
                f"got {conv!r}"
            )
        if conv.weight.dtype != torch.float32 or conv.weight.device.type != "cpu":
            raise TypeError(f"conv.weight must be float32 on CPU, got {conv.weight.dtype} on {conv.weight.device}")
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size
        linear = nn.Linear(conv.weight[0].numel(), conv.out_channels, bias=conv.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.reshape(conv.out_channels, -1))
            if conv.bias is not None:
                linear.bias.copy_(conv.bias)
        holder = nn.Sequential(linear)
        _torch_dynamic_inplace(holder, ["0"], per_channel)
        self.linear = holder[0]
        self._weight_shape = tuple(conv.weight.shape)

    @property
    def weight(self) -> torch.Tensor:
        """A zero-filled float32 stand-in with the kernel's shape, for code that reads ``conv.weight.dtype`` or
        ``.shape`` before calling the layer (HF CLIP, SigLIP and ViLT do, on every call). It is a zero-stride
        view of one number, so it costs nothing; the real int8 kernel is ``self.linear.weight()``."""
        return torch.zeros(()).expand(self._weight_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {got}")
        b, c, h, w = x.shape
        kh, kw = self.kernel_size
        gh, gw = h // kh, w // kw
        x = x[:, :, : gh * kh, : gw * kw].reshape(b, c, gh, kh, gw, kw)
        patches = x.permute(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c * kh * kw)
        return self.linear(patches).reshape(b, gh, gw, self.out_channels).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.kernel_size}"


def quantize_dynamic_with_embeddings(
    model: nn.Module,
    *,
    per_channel: bool = True,
    embeddings: bool = True,
    patch_convs: bool = True,
    skip: Sequence[str] = (),
) -> nn.Module:
    """Dynamic INT8 everywhere it pays: Linear layers, embedding tables and patch-embedding convolutions.

    Beyond :func:`quantize_dynamic`: each ``nn.Embedding`` becomes an :class:`Int8Embedding` (one scale per row —
    in ViT-B/32 CLIP the 25 M-parameter token table is a sixth of the model) and each patchify ``nn.Conv2d`` a
    :class:`DynamicInt8PatchConv2d` (the ViT patch embedding, run by the INT8 Linear kernel instead of a float
    convolution). Other convolutions stay float. CPU only, float32 weights.

    Args:
        model: a float32 CPU model.
        per_channel: per-output-channel weight scales for the Linear layers (default; more accurate).
        embeddings: quantize ``nn.Embedding`` tables too.
        patch_convs: quantize patchify ``nn.Conv2d`` layers too.
        skip: names of submodules to leave in float.
    Returns:
        a quantized copy in eval mode, same class and forward interface; ``model`` is unchanged.
    """
    _check_model(model)
    skip = _check_skip(skip)
    _require_cpu_float32(_require_linears(model, skip, "quantize_dynamic_with_embeddings"),
                         "quantize_dynamic_with_embeddings")
    quantized = _float_copy(model)
    if embeddings:
        replace_layers(quantized, _embedding_converter(8, "per_channel"), (nn.Embedding,), skip)
    if patch_convs:
        replace_layers(
            quantized,
            lambda name, conv: DynamicInt8PatchConv2d(conv, per_channel) if _is_patchify(conv) else None,
            (nn.Conv2d,),
            skip,
        )
    names = [name for name, _ in quantizable_layers(quantized, (nn.Linear,), skip)]
    _torch_dynamic_inplace(quantized, names, per_channel)
    _guard_transformer_fastpath(quantized)
    return quantized


# ------------------------------------------------------------------------------------- from scratch


def _embedding_converter(bits: int, granularity: str):
    def convert(name: str, embedding: nn.Embedding):
        if not embedding.weight.is_floating_point() or embedding.max_norm is not None or embedding.sparse:
            return None
        return Int8Embedding.from_float(embedding, bits, granularity)

    return convert


def quantize_from_scratch(
    model: nn.Module,
    *,
    bits: int = 8,
    granularity: str = "per_channel",
    activation: str = "dynamic",
    embeddings: bool = True,
    convs: bool = True,
    skip: Sequence[str] = (),
) -> nn.Module:
    """Quantize with this package's own modules: every layer's arithmetic is readable plain PyTorch.

    ``nn.Linear`` → :class:`Int8Linear`; with ``embeddings`` ``nn.Embedding`` → :class:`Int8Embedding` (per
    row); with ``convs`` ``nn.Conv2d`` → :class:`Int8Conv2d` (weight-only). Works on any device and float dtype.
    Storage shrinks about 4× (weights in int8); speed does not improve, because plain PyTorch has no fast int8
    matmul on CPU (see :func:`quantize_dynamic_with_embeddings` for that).

    Args:
        model: a float model.
        bits: 2..8 bits for weights (activations use 8 bits in ``"dynamic"`` mode).
        granularity: ``"per_channel"`` (one scale per output row) or ``"per_tensor"``.
        activation: ``"dynamic"`` (INT8 activations, integer matmul) or ``"weight_only"``.
        embeddings, convs: also quantize ``nn.Embedding`` / ``nn.Conv2d`` layers.
        skip: names of submodules to leave in float.
    Returns:
        a quantized copy in eval mode, same class and forward interface; ``model`` is unchanged.
    """
    _check_model(model)
    skip = _check_skip(skip)
    _check_bits(bits)
    check_choice(granularity, "granularity", GRANULARITIES)
    check_choice(activation, "activation", ("dynamic", "weight_only"))
    _require_linears(model, skip, "quantize_from_scratch")
    quantized = _float_copy(model)
    replace_layers(
        quantized, lambda name, layer: Int8Linear.from_float(layer, bits, granularity, activation), (nn.Linear,), skip
    )
    if embeddings:
        replace_layers(quantized, _embedding_converter(bits, granularity), (nn.Embedding,), skip)
    if convs:
        replace_layers(
            quantized,
            lambda name, conv: Int8Conv2d.from_float(conv, bits, granularity) if type(conv) is nn.Conv2d else None,
            (nn.Conv2d,),
            skip,
        )
    _guard_transformer_fastpath(quantized)
    return quantized


# ------------------------------------------------------------------------------------------ torchao


def _torchao_config(mode: str):
    try:
        import torchao.quantization as tq
    except ImportError as err:  # optional extra
        raise ImportError(
            "quantize_torchao needs the optional package torchao (pip install torchao); "
            "without it use quantize_dynamic_with_embeddings (CPU) or quantize_from_scratch"
        ) from err
    names = {
        "int8_dynamic": ("Int8DynamicActivationInt8WeightConfig", "int8_dynamic_activation_int8_weight"),
        "int8_weight_only": ("Int8WeightOnlyConfig", "int8_weight_only"),
    }[mode]
    for name in names:  # config classes (torchao >= 0.10) or the older factory functions
        factory = getattr(tq, name, None)
        if factory is not None:
            return tq.quantize_, factory()
    raise ImportError(f"this torchao version ({getattr(tq, '__version__', '?')}) has neither of {names}")


def quantize_torchao(model: nn.Module, *, mode: str = "int8_dynamic", skip: Sequence[str] = ()) -> nn.Module:
    """INT8 through torchao's ``quantize_`` (the successor of ``torch.ao.quantization``); optional extra.

    ``mode="int8_dynamic"``: int8 weights and per-token int8 activations (``torch._int_mm`` kernels);
    ``mode="int8_weight_only"``: int8 weights, float compute. Built for CUDA (e.g. Colab). On a CPU without
    AVX-512 VNNI the int8 × int8 matmul falls back to slow reference code: the ViT-B/32 image tower at batch 1
    takes 3.9 s instead of 0.25 s in float32 with ``int8_dynamic``, 0.23 s with ``int8_weight_only`` (one AVX2
    thread), so on CPU prefer :func:`quantize_dynamic_with_embeddings`. Install with ``pip install torchao`` (the
    ``torchao`` extra of this package).

    Returns:
        a quantized copy in eval mode (Linear weights become torchao tensor subclasses); ``model`` is unchanged.
    """
    check_choice(mode, "mode", ("int8_dynamic", "int8_weight_only"))
    _check_model(model)
    skip = _check_skip(skip)
    _require_linears(model, skip, "quantize_torchao")
    quantize_, config = _torchao_config(mode)
    quantized = _float_copy(model)
    targets = {id(layer) for _, layer in quantizable_layers(quantized, (nn.Linear,), skip)}
    quantize_(quantized, config, filter_fn=lambda module, fqn: id(module) in targets)
    _guard_transformer_fastpath(quantized)
    return quantized


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` (written to memory, not to disk)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    buffer = io.BytesIO()
    with silence_quantization_warnings():
        torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
