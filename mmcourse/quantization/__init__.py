"""Quantization: make a multimodal model smaller and faster (article §8.2, chapter 8).

The article quantizes CLIP with ``torch.quantization.quantize_dynamic(model, {torch.nn.Linear},
dtype=torch.qint8)``. This package runs that code on today's torch and goes further:

* :mod:`~mmcourse.quantization.core` — INT8 from scratch: symmetric per-tensor / per-channel quantization at
  2..8 bits, the INT8 matmul with int32 accumulation, :class:`Int8Linear`, :class:`Int8Embedding`,
  :class:`Int8Conv2d`.
* :mod:`~mmcourse.quantization.convert` — whole models, each ``quantize_*`` returning a quantized copy with the
  same forward interface: :func:`quantize_dynamic` (the article's path, warnings explained and handled),
  :func:`quantize_dynamic_with_embeddings` (also the token table and the patch embedding: the smallest and
  fastest on CPU), :func:`quantize_from_scratch` (this package's modules), :func:`quantize_torchao` (torch's
  successor API; optional, for CUDA).

Chapter 8's measurements (size, latency, cosine to float32, accuracy before/after, bit-width sweeps and their
figures) are in :mod:`mmcourse.labs.ch08_quantization` and :mod:`mmcourse.labs.ch08_bit_width`.

Which path runs where: the torch dynamic paths run on CPU (fbgemm / x86 kernels on Intel and AMD, qnnpack on
ARM); :func:`quantize_from_scratch` runs anywhere (it shows the arithmetic, it is not faster); torchao's INT8
targets CUDA GPUs (e.g. Colab) and is slow on CPUs without AVX-512 VNNI.
"""

from mmcourse.quantization.convert import (
    DynamicInt8PatchConv2d,
    ensure_quantized_engine,
    model_size_bytes,
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
    "model_size_bytes",
]
