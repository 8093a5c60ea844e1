"""Quantization: make a multimodal model smaller and faster (article §8.2, chapter 8).

The article quantizes CLIP with ``torch.quantization.quantize_dynamic(model, {torch.nn.Linear},
dtype=torch.qint8)``. This package runs that code on today's torch and goes further:

* :mod:`~mmcourse.quantization.core` — INT8 from scratch: symmetric per-tensor / per-channel quantization at
  2..8 bits, :class:`Int8Linear`, :class:`Int8Embedding`, :class:`Int8Conv2d`.
* :mod:`~mmcourse.quantization.convert` — whole models, each ``quantize_*`` returning a quantized copy with the
  same forward interface: :func:`quantize_dynamic` (the article's path, warnings explained and handled),
  :func:`quantize_dynamic_with_embeddings` (also the token table and the patch embedding: the smallest and
  fastest on CPU), :func:`quantize_from_scratch` (this package's modules), :func:`quantize_torchao` (torch's
  successor API; optional, for CUDA).
* :mod:`~mmcourse.quantization.measure` — size (``torch.save`` bytes), latency, cosine to float32, zero-shot
  and retrieval accuracy, and :func:`compare_models` for the before/after table.
* :mod:`~mmcourse.quantization.analysis` — per-layer errors and bit-width sweeps as plain data.
* :mod:`~mmcourse.quantization.plots` — figures of a bit-width sweep and of a size/latency table (matplotlib is
  imported only when a figure is drawn).

Which path runs where: the torch dynamic paths run on CPU (fbgemm / x86 kernels on Intel and AMD, qnnpack on
ARM); :func:`quantize_from_scratch` runs anywhere (it shows the arithmetic, it is not faster); torchao's INT8
targets CUDA GPUs (e.g. Colab) and is slow on CPUs without AVX-512 VNNI.
"""

from mmcourse.quantization.analysis import bit_width_sweep, layer_output_errors, weight_errors
from mmcourse.quantization.convert import (
    DynamicInt8PatchConv2d,
    ensure_quantized_engine,
    quantizable_layers,
    quantize_dynamic,
    quantize_dynamic_with_embeddings,
    quantize_from_scratch,
    quantize_torchao,
    replace_layers,
    silence_quantization_warnings,
)
from mmcourse.quantization.core import (
    GRANULARITIES,
    SUPPORTED_BITS,
    Int8Conv2d,
    Int8Embedding,
    Int8Linear,
    dequantize_symmetric,
    fake_quantize,
    int8_matmul,
    packed_size_bytes,
    qmax_for_bits,
    quantization_error,
    quantize_symmetric,
    symmetric_scale,
)
from mmcourse.quantization.measure import (
    compare_features,
    compare_latency,
    compare_models,
    evaluate_retrieval,
    evaluate_zero_shot,
    feature_cosine,
    measure_latency,
    model_size_bytes,
)
from mmcourse.quantization.plots import show_bit_width, show_quantization_table

__all__ = [
    # core
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
    # convert
    "silence_quantization_warnings",
    "ensure_quantized_engine",
    "quantizable_layers",
    "replace_layers",
    "DynamicInt8PatchConv2d",
    "quantize_dynamic",
    "quantize_dynamic_with_embeddings",
    "quantize_from_scratch",
    "quantize_torchao",
    # measure
    "model_size_bytes",
    "measure_latency",
    "compare_latency",
    "feature_cosine",
    "compare_features",
    "evaluate_zero_shot",
    "evaluate_retrieval",
    "compare_models",
    # analysis
    "weight_errors",
    "layer_output_errors",
    "bit_width_sweep",
    # plots
    "show_bit_width",
    "show_quantization_table",
]
