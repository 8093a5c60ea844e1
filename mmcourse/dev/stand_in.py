"""Offline stand-ins for Hub checkpoints: run ``from_pretrained("openai/clip-vit-base-patch32")`` without a network.

Serves article §8.2 (chapter 8). The article's INT8 snippet starts with::

    model = AutoModel.from_pretrained("openai/clip-vit-base-patch32")
    processor = AutoProcessor.from_pretrained("openai/clip-vit-base-patch32")

which downloads the pretrained CLIP from the Hugging Face Hub. Offline (the course's reference environment, a
laptop on a train) there is nothing to download. ``from_pretrained`` however looks first for a *local directory*
of that name, relative to the working directory, and loads whatever checkpoint it finds there. A **stand-in** is
such a directory, written by :func:`write_clip_stand_in`:

* ``config.json`` + ``model.safetensors`` — the checkpoint's architecture (:func:`mmcourse.hf.clip_config`, for
  ViT-B/32 ``CLIPConfig()``: 151 M parameters) with **random weights** (:func:`random_clip_weights`, seeded).
  Size, speed and what quantization does to the arithmetic are those of the real model; what it *knows* is
  nothing. The config carries
  ``mmcourse_stand_in`` so that :func:`is_stand_in` can tell a stand-in from the real checkpoint.
* a real ``CLIPTokenizer`` (byte-level BPE, lower-casing, ``</w>`` word ends, ``<|startoftext|>`` /
  ``<|endoftext|>``, exactly CLIP's pipeline) with a small vocabulary: the 256 byte symbols, each also as a word
  end, plus BPE merges learnt by :func:`learn_bpe_merges` so that every word of ShapesWorld is one token. Any text
  can be tokenized (unknown words fall apart into pieces, as in CLIP).
* a ``CLIPProcessor`` with CLIP's image settings (shortest edge → 224 px bicubic, centre crop 224, CLIP's mean and
  std). Without torchvision, transformers loads it as ``CLIPImageProcessorPil`` (the PIL backend), silently.

For the "now on a real model" sections of chapters 4, 6 and 8 there are also **tiny** stand-ins, built in memory
in a fraction of a second: :func:`tiny_clip_stand_in`, :func:`tiny_blip_captioner` and :func:`tiny_vilt_vqa` — the
classes of CLIP, BLIP captioning and ViLT VQA (model and processor) with a few small layers and random weights,
and a real tokenizer with a small vocabulary (:func:`bert_stand_in_tokenizer`, BERT's WordPiece, as BLIP and ViLT
use). They run the same code as the pretrained models; their outputs are noise.

:func:`prepare_from_pretrained` writes the stand-in only when the real checkpoint cannot be had (no Hub, not in the
local cache) and prints one line saying which of the three it will be; on Colab the real model is downloaded.
:class:`ScratchDirectory` makes a fresh temporary directory the working directory until ``close()``, so that the
stand-in and anything the snippet saves (``quantized_clip_model.pth``) never land beside the notebooks.

Written for transformers 5 (the version the course pins); the tokenizers and the tiny stand-ins also build on
transformers 4.40+ (Colab may ship it). transformers is imported inside the functions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_choice, check_positive, check_tensor
from mmcourse.hf import _transformers, check_tokenizer
from mmcourse.train import seeded

__all__ = [
    "STAND_IN_KEY",
    "CLIP_IMAGE_MEAN",
    "CLIP_IMAGE_STD",
    "byte_level_alphabet",
    "learn_bpe_merges",
    "clip_stand_in_tokenizer",
    "clip_stand_in_processor",
    "write_clip_stand_in",
    "random_clip_weights",
    "is_stand_in",
    "checkpoint_source",
    "prepare_from_pretrained",
    "ScratchDirectory",
    "tiny_clip_config",
    "build_tiny_hf_clip",
    "ShapesCLIPProcessor",
    "bert_stand_in_tokenizer",
    "tiny_clip_stand_in",
    "tiny_blip_captioner",
    "tiny_vilt_vqa",
]

STAND_IN_KEY = "mmcourse_stand_in"
"""Config attribute that marks a stand-in checkpoint (its value says what it stands in for)."""

CLIP_IMAGE_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

_END_OF_WORD = "</w>"
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


# ------------------------------------------------------------------------------------------------ tokenizer


def byte_level_alphabet() -> list[str]:
    """The 256 printable symbols byte-level BPE (GPT-2, CLIP) uses for the 256 byte values, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def _check_words(words) -> list[str]:
    if isinstance(words, str) or not isinstance(words, Iterable):
        raise TypeError(f"words must be a list of str, got {type(words).__name__}")
    words = list(words)
    for w in words:
        if not isinstance(w, str) or not w or not w.isascii() or not w.isalpha() or w != w.lower():
            raise ValueError(f"words must be non-empty lower-case ASCII letters (one word each), got {w!r}")
    return sorted(set(words))


def learn_bpe_merges(words: Sequence[str]) -> list[tuple[str, str]]:
    """Byte-pair-encoding merges, learnt until every word of ``words`` is a single symbol (deterministic).

    Each word starts as its letters, the last one marked as a word end (``"red"`` → ``r e d</w>``). At each step
    the most frequent adjacent pair over all words (ties: the alphabetically first) is merged everywhere and
    recorded. Applied in the order learnt, the merges turn each of ``words`` back into one token.

    Args:
        words: lower-case ASCII words, e.g. ``["red", "circle"]`` (duplicates ignored).
    Returns:
        the merges in rank order, e.g. ``[("r", "e"), ("re", "d</w>"), …]``.
    """
    words = _check_words(words)
    split = {w: [*w[:-1], w[-1] + _END_OF_WORD] for w in words}
    merges: list[tuple[str, str]] = []
    while True:
        pairs = Counter(pair for symbols in split.values() for pair in zip(symbols, symbols[1:]))
        if not pairs:
            return merges
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for w, symbols in split.items():
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            split[w] = merged


def _default_words() -> list[str]:
    from mmcourse.data import Tokenizer

    return [w for w in Tokenizer.from_world(None).vocab if w.isascii() and w.isalpha()]


def clip_stand_in_tokenizer(words: Sequence[str] | None = None, *, model_max_length: int = 77):
    """A real ``transformers.CLIPTokenizer`` with a small vocabulary: bytes, byte word-ends, ``words``, specials.

    Vocabulary (ids in this order): the 256 byte symbols, the same 256 as word ends (``"a</w>"``), the merged
    symbols of :func:`learn_bpe_merges` (the last merge of each word is the whole word), ``<|startoftext|>``,
    ``<|endoftext|>`` (also padding and unknown, as in CLIP). Every text is tokenized; each of ``words`` is one
    token.

    Args:
        words: whole-word tokens (default: the ShapesWorld vocabulary of :class:`mmcourse.data.Tokenizer`).
        model_max_length: longest sequence (CLIP: 77).
    """
    from transformers import CLIPTokenizer

    words = _default_words() if words is None else words
    merges = learn_bpe_merges(words)
    alphabet = byte_level_alphabet()
    symbols = alphabet + [s + _END_OF_WORD for s in alphabet] + [a + b for a, b in merges] + [_BOS, _EOS]
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
    try:
        tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)  # transformers 5
    except TypeError:  # transformers 4.x reads a vocab.json and a merges.txt
        tokenizer = _clip_tokenizer_from_files(vocab, merges)
    tokenizer.model_max_length = model_max_length
    return tokenizer


def _clip_tokenizer_from_files(vocab: dict[str, int], merges: list[tuple[str, str]]):
    import json

    from transformers import CLIPTokenizerFast

    with tempfile.TemporaryDirectory(prefix="mmcourse-vocab-") as directory:
        vocab_file, merges_file = Path(directory) / "vocab.json", Path(directory) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
        return CLIPTokenizerFast(vocab_file=str(vocab_file), merges_file=str(merges_file))


def clip_stand_in_processor(tokenizer, image_size: int = 224):
    """A ``CLIPProcessor``: ``tokenizer`` + CLIP's image preprocessing on the PIL backend (no torchvision).

    Images: shortest edge resized to ``image_size`` (bicubic), centre-cropped to ``image_size``², scaled to
    ``[0, 1]``, normalised with :data:`CLIP_IMAGE_MEAN` / :data:`CLIP_IMAGE_STD`.
    """
    import transformers

    if not hasattr(tokenizer, "convert_tokens_to_ids"):
        raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    image_processor_class = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    image_processor = image_processor_class(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(CLIP_IMAGE_MEAN), image_std=list(CLIP_IMAGE_STD),
    )
    return transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


# ------------------------------------------------------------------------------------------------ checkpoint


@contextmanager
def _no_transformers_progress_bars():
    """Hide transformers' progress bars (they go to stderr) and its info logs while the stand-in is written."""
    from transformers.utils import logging

    bars, level = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _check_name(name) -> str:
    from mmcourse.hf import KNOWN_CLIP_CONFIGS

    if not isinstance(name, str):
        raise TypeError(f"name must be a str (a Hub model id), got {type(name).__name__}")
    check_choice(name, "name", sorted(KNOWN_CLIP_CONFIGS))
    return name


def write_clip_stand_in(
    root: str | os.PathLike = ".",
    name: str = "openai/clip-vit-base-patch32",
    *,
    seed: int = 0,
    words: Sequence[str] | None = None,
) -> Path:
    """Write a stand-in checkpoint for ``name`` into the directory ``root / name`` and return that path.

    ``from_pretrained(name)`` run from ``root`` then loads it: ``AutoModel`` → a ``CLIPModel`` of ``name``'s
    architecture with random weights (``seed``), ``AutoProcessor`` → :func:`clip_stand_in_processor` with
    :func:`clip_stand_in_tokenizer` (``words``). The text config's start/end/padding ids are the tokenizer's.

    Args:
        root: where the ``name`` directory is created (missing parents too); an existing stand-in is replaced.
        name: one of :data:`mmcourse.hf.KNOWN_CLIP_CONFIGS` (the article's ``openai/clip-vit-base-patch32``).
        seed: seeds the random weights.
        words: whole-word tokens of the tokenizer (default: ShapesWorld's vocabulary).
    """
    import transformers

    from mmcourse.hf import clip_config

    name = _check_name(name)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    target = Path(root) / name
    if target.exists():
        if not is_stand_in(target):
            raise ValueError(f"{name!r} under root already holds a checkpoint that is not a stand-in; not replaced")
        shutil.rmtree(target)
    tokenizer = clip_stand_in_tokenizer(words)
    config = clip_config(name)
    text = config.text_config
    text.bos_token_id, text.eos_token_id, text.pad_token_id = (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    setattr(config, STAND_IN_KEY, f"random weights in the architecture of {name}")
    config.architectures = ["CLIPModel"]
    with _no_transformers_progress_bars():
        with torch.device("meta"):  # shapes only: the weights are drawn below, once
            skeleton = transformers.CLIPModel(config)
        tensors = random_clip_weights(skeleton, seed=seed, logit_scale=config.logit_scale_init_value)
        target.mkdir(parents=True)
        _save_safetensors(tensors, target / "model.safetensors")
        config.save_pretrained(target)
        clip_stand_in_processor(tokenizer, image_size=config.vision_config.image_size).save_pretrained(target)
    return target


def random_clip_weights(model: nn.Module, *, seed: int = 0, logit_scale: float = 2.6592) -> dict[str, torch.Tensor]:
    """A float32 state dict for ``model`` (its shapes; it may live on the meta device): every weight matrix,
    embedding and convolution drawn from ``N(0, 0.02²)`` (seeded), biases 0, LayerNorms 1 / 0, CLIP's
    ``logit_scale`` at ``logit_scale`` (log of 1/0.07).

    Cheaper than building the model on CPU (which initialises every weight twice) and enough for a stand-in:
    size, speed and quantization behave as for any weights of the right shapes and scale.

    Raises:
        ValueError: the model has persistent buffers, whose values this function cannot invent.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    parameters = dict(model.named_parameters())
    extra = [k for k in model.state_dict() if k not in parameters]
    if extra:
        raise ValueError(f"model has persistent buffers ({extra[:3]}): build it on CPU instead")
    norms = {name for name, module in model.named_modules() if isinstance(module, nn.LayerNorm)}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, parameter in parameters.items():
        owner, _, leaf = name.rpartition(".")
        tensor = torch.empty(parameter.shape, dtype=torch.float32)
        if owner in norms:
            tensor.fill_(1.0 if leaf == "weight" else 0.0)
        elif leaf == "bias":
            tensor.zero_()
        elif name == "logit_scale":
            tensor.fill_(logit_scale)
        else:
            tensor.normal_(0.0, 0.02, generator=generator)
        tensors[name] = tensor
    return tensors


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})


def is_stand_in(model_or_path) -> bool:
    """True for a model (or a checkpoint directory) written by :func:`write_clip_stand_in`."""
    if isinstance(model_or_path, (str, os.PathLike)):
        import json

        config_file = Path(model_or_path) / "config.json"
        if not config_file.is_file():
            return False
        return STAND_IN_KEY in json.loads(config_file.read_text(encoding="utf-8"))
    config = getattr(model_or_path, "config", None)
    if config is None:
        raise TypeError(
            f"model_or_path must be a Hugging Face model or a directory, got {type(model_or_path).__name__}"
        )
    return bool(getattr(config, STAND_IN_KEY, None))


def checkpoint_source(name: str = "openai/clip-vit-base-patch32", root: str | os.PathLike = ".") -> str:
    """Where ``from_pretrained(name)`` run from ``root`` would load from.

    Returns:
        ``"local"`` (a directory ``root / name`` exists), ``"hub"`` (the Hub is reachable), ``"cache"`` (the
        local Hugging Face cache holds the checkpoint) or ``"none"`` (nothing to load: offline, not cached).
    """
    from mmcourse.hf import hub_reachable, pretrained_in_cache

    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str (a Hub model id), got {name!r}")
    if (Path(root) / name).is_dir():
        return "local"
    if hub_reachable():
        return "hub"
    if pretrained_in_cache(name, revision="main"):
        return "cache"
    return "none"


def prepare_from_pretrained(
    name: str = "openai/clip-vit-base-patch32",
    root: str | os.PathLike = ".",
    *,
    seed: int = 0,
    verbose: bool = True,
) -> str:
    """Make ``from_pretrained(name)`` work from ``root``: nothing to do online, a stand-in offline.

    Writes :func:`write_clip_stand_in` only when :func:`checkpoint_source` says ``"none"``, and prints one line
    saying what ``from_pretrained`` will load (``verbose``).

    Returns:
        ``"hub"``, ``"cache"``, ``"local"`` (a directory of that name already exists and is used as it is) or
        ``"stand-in"`` (written now).
    """
    name = _check_name(name)
    source = checkpoint_source(name, root)
    if source == "none":
        write_clip_stand_in(root, name, seed=seed)
        source = "stand-in"
    if verbose:
        print({
            "hub": f"{name}: online, from_pretrained downloads the pretrained checkpoint from the Hugging Face Hub.",
            "cache": f"{name}: offline, but the pretrained checkpoint is in the local Hugging Face cache.",
            "local": f"{name}: a local directory of that name exists; from_pretrained loads it.",
            "stand-in": f"{name}: offline and not cached, so a stand-in was written to ./{name} (same architecture, "
                        "random weights, a small CLIP tokenizer, CLIP's image processor).",
        }[source])
    return source


# ------------------------------------------------------------------------------------------ scratch directory


class ScratchDirectory:
    """A fresh temporary directory, made the working directory until :meth:`close` (or the end of a ``with``).

    ``close()`` goes back to the previous working directory and deletes the scratch directory with everything
    written into it. Usable across notebook cells: create it in one cell, ``close()`` it in a later one. If a
    notebook stops before ``close()``, the directory is still deleted when the object is garbage-collected or the
    kernel exits (a stand-in CLIP is 600 MB).
    """

    def __init__(self, prefix: str = "mmcourse-"):
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        self.previous = Path.cwd()
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.path), True)
        os.chdir(self.path)
        self.closed = False

    def files(self) -> list[str]:
        """Names of the files under the scratch directory, relative to it, sorted."""
        if self.closed:
            return []
        return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())

    def close(self) -> None:
        """Go back to the previous working directory and delete the scratch directory (idempotent)."""
        if self.closed:
            return
        if Path.cwd().resolve() == self.path.resolve() or self.path.resolve() in Path.cwd().resolve().parents:
            os.chdir(self.previous)
        self._cleanup()  # shutil.rmtree, once
        self.closed = True

    def __enter__(self) -> ScratchDirectory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:  # no path: it would differ on every run
        return f"ScratchDirectory({'closed' if self.closed else 'open'}, {len(self.files())} files)"


# ----------------------------------------------------------------------------- a tiny HF CLIP for ShapesWorld


def tiny_clip_config(
    tokenizer,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int | None = None,
    projection_dim: int = 64,
    max_len: int = 16,
):
    """A small ``CLIPConfig`` whose text side matches a :class:`mmcourse.data.Tokenizer`.

    ``vocab_size`` = the tokenizer's, ``eos_token_id`` = its ``[EOS]`` (CLIP pools the text there),
    ``pad/bos`` likewise, ``max_position_embeddings = max_len``. Both towers get ``num_layers`` layers of width
    ``hidden_size`` (``intermediate_size`` default ``4 * hidden_size``); images are ``image_size`` px in
    ``patch_size`` patches.
    """
    for value, pname in ((image_size, "image_size"), (patch_size, "patch_size"), (hidden_size, "hidden_size"),
                         (num_layers, "num_layers"), (num_heads, "num_heads"), (projection_dim, "projection_dim"),
                         (max_len, "max_len")):
        check_positive(value, pname, integer=True)
    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    vocab = getattr(tokenizer, "vocab", None)
    if vocab is None or not hasattr(tokenizer, "eos_id"):
        raise TypeError(f"tokenizer must be an mmcourse.data.Tokenizer (vocab, eos_id), got {type(tokenizer).__name__}")
    check_tokenizer(tokenizer)
    intermediate_size = 4 * hidden_size if intermediate_size is None else intermediate_size
    check_positive(intermediate_size, "intermediate_size", integer=True)
    common = {"hidden_size": hidden_size, "intermediate_size": intermediate_size, "num_hidden_layers": num_layers,
              "num_attention_heads": num_heads}
    text = {**common, "vocab_size": len(vocab), "max_position_embeddings": max_len,
            "eos_token_id": tokenizer.eos_id, "bos_token_id": tokenizer.bos_id, "pad_token_id": tokenizer.pad_id}
    vision = {**common, "image_size": image_size, "patch_size": patch_size, "num_channels": 3}
    return _transformers().CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def build_tiny_hf_clip(tokenizer, *, seed: int = 0, **config_kwargs):
    """A randomly initialised ``transformers.CLIPModel`` from :func:`tiny_clip_config` (``seed`` fixes it).

    Train it like TinyCLIP (its ``forward(input_ids, pixel_values, attention_mask, return_loss=True)`` returns
    CLIP's loss) or quantize it with :mod:`mmcourse.quantization`; returned in eval mode.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    config = tiny_clip_config(tokenizer, **config_kwargs)
    with seeded(seed):
        return _transformers().CLIPModel(config).eval()


class ShapesCLIPProcessor:
    """The HF ``CLIPProcessor`` role for ShapesWorld: text with the course tokenizer, images as tensors.

    ``processor(text=[...], images=...)`` returns ``{"input_ids", "attention_mask", "pixel_values"}`` (only the
    keys asked for), ready for ``CLIPModel(**inputs)``. Images: a float tensor ``(B, 3, H, W)`` in ``[0, 1]``,
    a uint8 tensor in ``[0, 255]``, or PIL images; they are resized (bilinear, antialiased) to ``image_size`` and
    normalised with ``image_mean`` / ``image_std``. No torchvision involved.
    """

    def __init__(
        self,
        tokenizer,
        image_size: int = 32,
        max_len: int = 16,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
    ):
        if not hasattr(tokenizer, "encode"):
            raise TypeError(f"tokenizer must have encode(texts, max_len), got {type(tokenizer).__name__}")
        check_positive(image_size, "image_size", integer=True)
        check_positive(max_len, "max_len", integer=True)
        if len(image_mean) != 3 or len(image_std) != 3 or any(s <= 0 for s in image_std):
            raise ValueError(f"image_mean and image_std must hold 3 numbers (std > 0), got {image_mean}, {image_std}")
        self.tokenizer, self.image_size, self.max_len = check_tokenizer(tokenizer), image_size, max_len
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        return f"ShapesCLIPProcessor(image_size={self.image_size}, max_len={self.max_len}, vocab={len(self.tokenizer)})"

    def preprocess_images(self, images) -> torch.Tensor:
        """Images → ``pixel_values`` ``(B, 3, image_size, image_size)`` float32, normalised."""
        pixels = _images_to_tensor(images)
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return (pixels - self.image_mean) / self.image_std

    def __call__(self, text=None, images=None, return_tensors: str = "pt", **_) -> dict[str, torch.Tensor]:
        if text is None and images is None:
            raise ValueError("give text, images or both")
        if return_tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt', got {return_tensors!r}")
        out: dict[str, torch.Tensor] = {}
        if text is not None:
            out["input_ids"], out["attention_mask"] = self.tokenizer.encode(text, max_len=self.max_len)
        if images is not None:
            out["pixel_values"] = self.preprocess_images(images)
        return out


def _images_to_tensor(images) -> torch.Tensor:
    """Float ``(B, 3, H, W)`` in ``[0, 1]`` from a float/uint8 tensor (3-D or 4-D) or PIL image(s)."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        check_tensor(images, "images", ndim=4)
        if images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            return images.float() / 255
        if not images.is_floating_point():
            raise TypeError(f"images must be float in [0, 1] or uint8, got {images.dtype}")
        return images.float()
    pil_images = images if isinstance(images, (list, tuple)) else [images]
    if not pil_images or not all(hasattr(im, "convert") and hasattr(im, "size") for im in pil_images):
        raise TypeError(f"images must be a tensor or PIL image(s), got {type(images).__name__}")
    import numpy as np

    arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255 for im in pil_images]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"PIL images must share one size, got {sorted({a.shape[:2] for a in arrays})}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- tiny stand-ins for the real-model sections

_TINY_LAYERS = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def bert_stand_in_tokenizer(words: Sequence[str], *, model_max_length: int = 40):
    """A real BERT WordPiece tokenizer (lower-casing, ``[CLS] … [SEP]``, as BLIP and ViLT use) whose vocabulary is
    ``[PAD] [UNK] [CLS] [SEP] [MASK]``, ``words`` and a few punctuation marks; any other word becomes ``[UNK]``.

    Built from a ``vocab.txt`` written to a temporary directory (no download); transformers 4.x and 5.x.
    """
    import transformers

    words = _check_words(words)
    vocab = [*_BERT_SPECIALS, *words, "?", ".", ",", "'", "-"]
    tokenizer_class = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer
    with tempfile.TemporaryDirectory(prefix="mmcourse-vocab-") as directory:
        (Path(directory) / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        tokenizer = tokenizer_class.from_pretrained(directory, model_max_length=model_max_length)
    return tokenizer


def _mark_stand_in(model, what: str):
    setattr(model.config, STAND_IN_KEY, f"random weights in a tiny configuration of {what}")
    return model.eval()


def _image_processor(name: str, **kwargs):
    """``transformers.<name>Pil`` (transformers 5's PIL backend, no torchvision) or ``<name>`` (4.x)."""
    import transformers

    return (getattr(transformers, f"{name}Pil", None) or getattr(transformers, name))(**kwargs)


def tiny_clip_stand_in(words: Sequence[str], *, seed: int = 0, image_size: int = 32):
    """``(CLIPModel, CLIPProcessor)``: two 2-layer towers of width 32 with random weights (``seed``), images of
    ``image_size`` px in 8-px patches, :func:`clip_stand_in_tokenizer` of ``words``."""
    import transformers

    tokenizer = clip_stand_in_tokenizer(words)
    text = {**_TINY_LAYERS, "vocab_size": len(tokenizer), "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    vision = {**_TINY_LAYERS, "image_size": image_size, "patch_size": 8}
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    with seeded(seed):
        model = transformers.CLIPModel(config)
    return _mark_stand_in(model, "CLIP"), clip_stand_in_processor(tokenizer, image_size=image_size)


def tiny_blip_captioner(words: Sequence[str], *, seed: int = 0, image_size: int = 64):
    """``(BlipForConditionalGeneration, BlipProcessor)``: BLIP's captioner with 2-layer towers of width 32 and
    random weights (``seed``), images resized to ``image_size`` px, :func:`bert_stand_in_tokenizer` of ``words``
    plus BLIP's ``[DEC]`` start token. ``generate`` works as for the real one; the captions are noise."""
    import transformers

    tokenizer = bert_stand_in_tokenizer(words)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    processor = transformers.BlipProcessor(
        image_processor=_image_processor("BlipImageProcessor", size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer)
    text = {**_TINY_LAYERS, "vocab_size": len(tokenizer), "encoder_hidden_size": 32, "max_position_embeddings": 40,
            "bos_token_id": tokenizer.bos_token_id, "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id, "initializer_range": 0.2}
    # BLIP initialises its vision tower with std 1e-10: every image would give the same caption
    vision = {**_TINY_LAYERS, "image_size": image_size, "patch_size": 16, "initializer_range": 0.2}
    config = transformers.BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    with seeded(seed):
        model = transformers.BlipForConditionalGeneration(config)
    return _mark_stand_in(model, "BLIP captioning"), processor


def tiny_vilt_vqa(words: Sequence[str], answers: Sequence[str], *, seed: int = 0, image_size: int = 64):
    """``(ViltForQuestionAnswering, ViltProcessor)``: ViLT with 2 layers of width 32 and random weights (``seed``)
    that picks one of ``answers``; images resized to a shorter side of ``image_size`` px (multiples of the 16-px
    patch), questions with :func:`bert_stand_in_tokenizer` of ``words``."""
    import transformers

    answers = list(dict.fromkeys(answers))
    if not answers or not all(isinstance(a, str) and a for a in answers):
        raise ValueError(f"answers must be non-empty strings, got {answers!r}")
    tokenizer = bert_stand_in_tokenizer(words)
    processor = transformers.ViltProcessor(
        image_processor=_image_processor("ViltImageProcessor", size={"shortest_edge": image_size}, size_divisor=16),
        tokenizer=tokenizer)
    config = transformers.ViltConfig(
        **_TINY_LAYERS, vocab_size=len(tokenizer), image_size=image_size, patch_size=16, max_position_embeddings=40,
        num_labels=len(answers), id2label=dict(enumerate(answers)), label2id={a: i for i, a in enumerate(answers)},
        initializer_range=0.2)  # at ViLT's 0.02 a tiny model gives every question the same answer
    with seeded(seed):
        model = transformers.ViltForQuestionAnswering(config)
    return _mark_stand_in(model, "ViLT VQA"), processor
