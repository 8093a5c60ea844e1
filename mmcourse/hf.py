"""Hugging Face interop: real CLIP models offline, and one interface for TinyCLIP and HF CLIP.

Serves article §8 (chapter 8) and every chapter that wants to show "the same thing with a real library model".

* :func:`load_clip` — the article's ``openai/clip-vit-base-patch32`` at a pinned revision when it can be had
  (Colab, or a local Hugging Face cache), otherwise the same architecture built from its config with random
  weights, announced by one line. Unknown names that cannot be loaded raise a clear error.
* :func:`load_clip_tokenizer` — the pretrained tokenizer, refusing the 2-token tokenizer that
  ``CLIPTokenizer.from_pretrained`` silently returns offline in transformers 5.
* :func:`pretrained_in_cache`, :func:`pretrained_available` — can the pretrained checkpoint be had here (Hub or
  local cache)? Lets a notebook run an optional pretrained section only where it can, and skip it otherwise.
* :func:`load_pretrained` — any pretrained model (e.g. BLIP captioning :data:`BLIP_CAPTIONING`, ViLT VQA
  :data:`VILT_VQA`) at its pinned revision, or :class:`PretrainedUnavailable` with a one-line reason (offline and
  not cached, Hub unreachable, download interrupted); :data:`DOWNLOAD_MB` says how much each one downloads.
* :func:`load_clip_processor` — the pretrained ``CLIPProcessor`` (pinned revision); :func:`to_pil_images` turns
  image tensors into the PIL images such processors expect; :class:`TokenizerAdapter` gives a Hugging Face
  tokenizer the course's ``encode(texts, max_len)`` interface (for
  :func:`mmcourse.retrieval.zero_shot_classifier`).
* :func:`as_clip_encoder`, :func:`image_embeddings`, :func:`text_embeddings` — TinyCLIP and HF ``CLIPModel``
  behind one ``encode_image`` / ``encode_text`` interface, so :mod:`mmcourse.retrieval` and
  :func:`mmcourse.retrieval.zero_shot_classifier` work with either. transformers 5 returns an output object
  from ``get_image_features`` / ``get_text_features`` (the projected embedding is ``.pooler_output``); 4.x
  returns the tensor itself; both are handled.

transformers is imported inside the functions that need it, so ``import mmcourse.hf`` stays light and the adapters
work on TinyCLIP without it. An HF ``CLIPModel`` sized for ShapesWorld and the offline stand-in for the pretrained
checkpoint are maintainer tools: :mod:`mmcourse.dev.stand_in`. Tests and notebooks run offline: set
``HF_HUB_OFFLINE=1`` before transformers is first imported (it reads the variable once, at import).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import socket
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_positive, check_tensor
from mmcourse.train import module_device, seeded

__all__ = [
    "CLIP_VIT_B32",
    "CLIP_VIT_L14",
    "BLIP_CAPTIONING",
    "VILT_VQA",
    "PINNED_REVISIONS",
    "DOWNLOAD_MB",
    "PretrainedUnavailable",
    "load_pretrained",
    "KNOWN_CLIP_CONFIGS",
    "clip_config",
    "hub_offline",
    "hub_reachable",
    "pretrained_in_cache",
    "pretrained_available",
    "load_clip",
    "load_clip_processor",
    "to_pil_images",
    "TokenizerAdapter",
    "load_clip_tokenizer",
    "check_tokenizer",
    "features_from_output",
    "HFCLIPEncoder",
    "as_clip_encoder",
    "image_embeddings",
    "text_embeddings",
]

CLIP_VIT_B32 = "openai/clip-vit-base-patch32"
CLIP_VIT_L14 = "openai/clip-vit-large-patch14"
BLIP_CAPTIONING = "Salesforce/blip-image-captioning-base"
VILT_VQA = "dandelin/vilt-b32-finetuned-vqa"

PINNED_REVISIONS: dict[str, str] = {
    CLIP_VIT_B32: "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268",
    CLIP_VIT_L14: "32bd64288804d66eefd0ccbe215aa642df71cc41",
}
"""Hub commits the course was written against: a pinned revision gives every student the same weights.

:data:`BLIP_CAPTIONING` and :data:`VILT_VQA` are not pinned yet — their commit ids could not be read from the Hub
when these entries were written — so they load ``main``; add ``PINNED_REVISIONS[name] = "<commit sha>"`` to pin."""

DOWNLOAD_MB: dict[str, int] = {CLIP_VIT_B32: 605, BLIP_CAPTIONING: 990, VILT_VQA: 470}
"""About how many megabytes the weights of each checkpoint download (once; then the Hugging Face cache has them)."""

KNOWN_CLIP_CONFIGS: dict[str, dict] = {
    # CLIPConfig() defaults *are* ViT-B/32: text 12 x 512 (8 heads), vision 12 x 768 (12 heads), patch 32, 224 px.
    CLIP_VIT_B32: {},
    CLIP_VIT_L14: {
        "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                        "num_hidden_layers": 12},
        "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                          "num_hidden_layers": 24, "patch_size": 14, "image_size": 224},
        "projection_dim": 768,
    },
}
"""``CLIPConfig`` keyword arguments of the architectures :func:`load_clip` can build without a download."""


def _transformers():
    import transformers

    return transformers


def _dtype_kwarg(transformers) -> str:
    """``from_pretrained``'s name for the weight dtype: ``dtype`` (transformers >= 4.56) or ``torch_dtype``."""
    major, minor = (int(part) for part in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def clip_config(name: str = CLIP_VIT_B32):
    """The ``transformers.CLIPConfig`` of a known architecture (no download), e.g. ViT-B/32 = ``CLIPConfig()``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in KNOWN_CLIP_CONFIGS:
        raise ValueError(f"name must be one of {sorted(KNOWN_CLIP_CONFIGS)} to build offline, got {name!r}")
    return _transformers().CLIPConfig(**KNOWN_CLIP_CONFIGS[name])


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` asks Hugging Face libraries not to connect."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 2.0) -> bool:
    """True unless offline mode is set or the Hub's host cannot be reached within ``timeout`` seconds.

    Checked before any download so that a machine without network falls back at once (transformers itself
    would retry for ~25 s and print each retry).
    """
    check_positive(timeout, "timeout")
    if hub_offline():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _resolve_revision(name: str, revision: str | None) -> str | None:
    if revision is None:
        return PINNED_REVISIONS.get(name)
    if not isinstance(revision, str) or not revision:
        raise TypeError(f"revision must be a non-empty str (a commit sha, tag or branch) or None, got {revision!r}")
    return revision


def load_clip(
    name: str = CLIP_VIT_B32,
    *,
    revision: str | None = None,
    pretrained: bool = True,
    seed: int = 0,
    verbose: bool = True,
):
    """A Hugging Face ``CLIPModel`` in eval mode: pretrained when possible, else built from its config.

    Args:
        name: a Hub model id, e.g. ``"openai/clip-vit-base-patch32"`` (the article's model).
        revision: Hub commit to load; default: the pinned one in :data:`PINNED_REVISIONS` (``main`` for others).
        pretrained: try the pretrained weights (from the Hub when reachable, else the local cache). ``False``
            builds the architecture with random weights directly.
        seed: seeds the random weights of a config-built model.
        verbose: print the one-line message when falling back.
    Returns:
        a float32 ``transformers.CLIPModel``. ``model.config._name_or_path`` is ``name`` when the weights are
        pretrained and empty when they are random.
    Raises:
        ValueError: ``name`` could not be loaded and is not one of :data:`KNOWN_CLIP_CONFIGS`.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str (a Hub model id), got {name!r}")
    revision = _resolve_revision(name, revision)
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be a bool, got {type(pretrained).__name__}")
    transformers = _transformers()
    reason = "pretrained=False"
    if pretrained:
        online = hub_reachable()
        try:
            model = transformers.CLIPModel.from_pretrained(
                name, revision=revision, local_files_only=not online, **{_dtype_kwarg(transformers): torch.float32}
            )
            return model.eval()
        except (OSError, ValueError) as err:
            reason = "no network and not in the local cache" if not online else f"loading failed ({err})"
            reason = reason.splitlines()[0]
    if name not in KNOWN_CLIP_CONFIGS:
        raise ValueError(
            f"cannot load {name!r}: {reason}; offline, only these architectures can be built from their "
            f"config (random weights): {sorted(KNOWN_CLIP_CONFIGS)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    with seeded(seed):
        model = transformers.CLIPModel(clip_config(name)).float().eval()
        if verbose and pretrained:
            print(f"{name}: pretrained weights unavailable ({reason}); using its architecture with random weights.")
        return model


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def pretrained_in_cache(name: str = CLIP_VIT_B32, *, revision: str | None = None) -> bool:
    """True when the local Hugging Face cache holds ``name``'s config and weights at ``revision``.

    ``revision``: a commit sha, branch or tag; default: the pinned one of :data:`PINNED_REVISIONS` (``"main"`` for
    other names). Nothing is downloaded.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str (a Hub model id), got {name!r}")
    revision = _resolve_revision(name, revision) or "main"
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(name, filename, revision=revision), str)

    return cached("config.json") and any(cached(f) for f in _WEIGHT_FILES)


def pretrained_available(name: str = CLIP_VIT_B32, *, revision: str | None = None) -> bool:
    """True when :func:`load_clip` would get the *pretrained* weights: the Hub is reachable (and offline mode is
    off), or the local cache holds them (:func:`pretrained_in_cache`)."""
    return hub_reachable() or pretrained_in_cache(name, revision=revision)


def check_tokenizer(tokenizer, model=None, *, min_vocab_size: int = 3):
    """Refuse a tokenizer that cannot serve ``model``: too small a vocabulary, ids beyond the model's table,
    or an end-of-text id that differs from the one CLIP pools at. Returns the tokenizer.

    The classic trap: offline, ``CLIPTokenizer.from_pretrained("openai/clip-vit-base-patch32")`` does not fail
    in transformers 5, it returns a tokenizer with only ``<|startoftext|>`` and ``<|endoftext|>`` — every word
    becomes the same id and all texts look alike to the model.
    """
    try:
        size = len(tokenizer)
    except TypeError as err:
        raise TypeError(f"tokenizer must have a vocabulary (len(tokenizer)), got {type(tokenizer).__name__}") from err
    if size < min_vocab_size:
        raise ValueError(
            f"tokenizer has only {size} tokens (expected at least {min_vocab_size}): its vocabulary files were not "
            "found (offline CLIPTokenizer.from_pretrained returns such a 2-token tokenizer). Load it online once, "
            "or use the course tokenizer (ShapesCLIPProcessor)"
        )
    if model is not None:
        text_config = _text_config(model)
        if size > text_config.vocab_size:
            raise ValueError(
                f"tokenizer has {size} tokens but the model's text embedding only {text_config.vocab_size} rows"
            )
        eos = getattr(tokenizer, "eos_token_id", getattr(tokenizer, "eos_id", None))
        if eos is not None and text_config.eos_token_id not in (2, eos):  # 2 = legacy "pool at argmax id"
            raise ValueError(
                f"tokenizer's end-of-text id is {eos} but the model pools the text at eos_token_id="
                f"{text_config.eos_token_id}; build the config with eos_token_id={eos}"
            )
    return tokenizer


def _text_config(model):
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", config)
    if text_config is None or not hasattr(text_config, "vocab_size"):
        raise TypeError(f"model must be a Hugging Face CLIP-like model with a text config, got {type(model).__name__}")
    return text_config


class PretrainedUnavailable(ValueError):
    """A pretrained checkpoint cannot be had here; the message is one line that says why."""


def _load_errors() -> tuple[type[BaseException], ...]:
    """What a failed or interrupted download raises: ``OSError`` (Hub errors, ``requests``), ``ValueError``, and
    ``httpx`` / ``safetensors`` errors where those packages are installed."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    for module, name in (("httpx", "HTTPError"), ("safetensors", "SafetensorError")):
        found = importlib.util.find_spec(module) and getattr(importlib.import_module(module), name, None)
        if isinstance(found, type):
            errors.append(found)
    return tuple(errors)


def _from_hub(auto_class: str, what: str, name: str, revision: str | None, **kwargs):
    """``transformers.<auto_class>.from_pretrained(name)`` at the pinned revision, from the cache when the Hub is
    out of reach (no network attempt when ``HF_HUB_OFFLINE`` is set); :class:`PretrainedUnavailable` naming
    ``what`` when it cannot be had."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str (a Hub model id), got {name!r}")
    revision = _resolve_revision(name, revision)
    loader = getattr(_transformers(), auto_class)
    try:
        return loader.from_pretrained(name, revision=revision, local_files_only=not hub_reachable(), **kwargs)
    except _load_errors() as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise PretrainedUnavailable(f"cannot load the {what} of {name!r} here: {reason}") from err


def load_pretrained(class_name: str, name: str, *, revision: str | None = None):
    """``transformers.<class_name>.from_pretrained(name)`` at the pinned revision (:data:`PINNED_REVISIONS`, else
    ``main``), from the local cache when the Hub is out of reach. A model class (``"BlipForConditionalGeneration"``)
    comes back in float32 and eval mode; a processor or tokenizer class (``"AutoProcessor"``) as it is.

    Raises:
        PretrainedUnavailable: offline and not cached, the Hub unreachable, or the download failed or was cut off.
    """
    transformers = _transformers()
    if not isinstance(class_name, str) or not hasattr(transformers, class_name):
        raise ValueError(f"class_name must name a transformers class, got {class_name!r}")
    if class_name.endswith(("Processor", "Tokenizer", "TokenizerFast")):
        return _from_hub(class_name, "processor", name, revision)
    return _from_hub(class_name, "weights", name, revision, **{_dtype_kwarg(transformers): torch.float32}).eval()


def load_clip_tokenizer(name: str = CLIP_VIT_B32, *, revision: str | None = None):
    """The pretrained CLIP tokenizer (pinned revision), checked by :func:`check_tokenizer`.

    Raises:
        ValueError: it cannot be had here (offline without cache gives a 2-token tokenizer, refused).
    """
    return check_tokenizer(_from_hub("AutoTokenizer", "tokenizer", name, revision))


def load_clip_processor(name: str = CLIP_VIT_B32, *, revision: str | None = None):
    """The pretrained ``CLIPProcessor`` of ``name`` (pinned revision), its tokenizer checked by
    :func:`check_tokenizer`. Without torchvision transformers 5 uses the PIL image backend.

    Raises:
        ValueError: it cannot be had here (offline and not cached).
    """
    processor = _from_hub("AutoProcessor", "processor", name, revision)
    check_tokenizer(processor.tokenizer)
    return processor


def to_pil_images(images: torch.Tensor) -> list:
    """``(B, 3, H, W)`` float images in ``[0, 1]`` (or one ``(3, H, W)``) → a list of ``B`` RGB PIL images.

    Hugging Face image processors rescale pixel values by 1/255 themselves, so they expect 8-bit images (PIL or
    uint8), not float tensors in ``[0, 1]``.
    """
    import numpy as np
    from PIL import Image

    check_tensor(images, "images", ndim=(3, 4), floating=True)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    pixels = (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]


class TokenizerAdapter:
    """A Hugging Face tokenizer behind the course tokenizer's interface.

    ``encode(texts, max_len) → (input_ids (B, max_len), attention_mask (B, max_len))`` (padded / truncated to
    ``max_len``), as :func:`mmcourse.retrieval.zero_shot_classifier` and
    :func:`mmcourse.labs.ch08_quantization.evaluate_zero_shot` expect. ``len(adapter)`` is the vocabulary size.
    """

    def __init__(self, tokenizer):
        if not callable(tokenizer) or not hasattr(tokenizer, "pad_token_id"):
            raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
        self.tokenizer = check_tokenizer(tokenizer)
        self.eos_token_id = tokenizer.eos_token_id

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __repr__(self) -> str:
        return f"TokenizerAdapter({type(self.tokenizer).__name__}, vocab={len(self)})"

    def encode(self, texts, max_len: int = 77) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        check_positive(max_len, "max_len", integer=True)
        out = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_len,
                             return_tensors="pt")
        return out["input_ids"], out["attention_mask"]


# ------------------------------------------------------------------------ one interface for TinyCLIP and HF


def features_from_output(output) -> torch.Tensor:
    """The ``(B, D)`` embedding from ``get_image_features`` / ``get_text_features``: the tensor itself
    (transformers 4.x) or ``.pooler_output`` of the output object (transformers 5)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise TypeError(f"expected a tensor or an output with .pooler_output, got {type(output).__name__}")


class HFCLIPEncoder(nn.Module):
    """A Hugging Face CLIP-like model (``get_image_features`` / ``get_text_features``) with TinyCLIP's interface.

    ``encode_image(pixel_values (B, 3, H, W)) → (B, D)``, ``encode_text(input_ids (B, L), attention_mask (B, L))
    → (B, D)``, unit norm unless ``normalize=False``. The wrapped model is ``.model`` (a submodule, so
    ``.eval()``, ``.to()`` and ``.parameters()`` reach it).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise TypeError(f"model must have get_image_features and get_text_features, got {type(model).__name__}")
        self.model = model

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = features_from_output(self.model.get_image_features(pixel_values=pixel_values))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        output = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        features = features_from_output(output)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask=None):
        """``(image_embeds (B, D), text_embeds (B, D))``, unit norm."""
        return self.encode_image(pixel_values), self.encode_text(input_ids, attention_mask)


def as_clip_encoder(model: nn.Module) -> nn.Module:
    """``model`` itself when it has ``encode_image`` and ``encode_text`` (TinyCLIP), an :class:`HFCLIPEncoder`
    around it when it is a Hugging Face CLIP-like model; otherwise a ``TypeError``."""
    if hasattr(model, "encode_image") and hasattr(model, "encode_text"):
        return model
    if hasattr(model, "get_image_features") and hasattr(model, "get_text_features"):
        return HFCLIPEncoder(model)
    raise TypeError(
        "model must have encode_image/encode_text (TinyCLIP) or get_image_features/get_text_features (HF CLIP), "
        f"got {type(model).__name__}"
    )


@torch.no_grad()
def image_embeddings(model: nn.Module, images: torch.Tensor, *, batch_size: int = 256,
                     normalize: bool = True) -> torch.Tensor:
    """``(N, 3, H, W) → (N, D)`` embeddings from TinyCLIP or an HF CLIP, ``batch_size`` images at a time."""
    check_tensor(images, "images", ndim=4, floating=True)
    check_positive(batch_size, "batch_size", integer=True)
    encoder = as_clip_encoder(model)
    device = module_device(encoder)
    return torch.cat([encoder.encode_image(images[i : i + batch_size].to(device), normalize=normalize)
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def text_embeddings(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                    batch_size: int = 256, normalize: bool = True) -> torch.Tensor:
    """``input_ids (N, L)``, ``attention_mask (N, L)`` → ``(N, D)`` embeddings from TinyCLIP or an HF CLIP."""
    check_tensor(input_ids, "input_ids", ndim=2, floating=False)
    if attention_mask is not None:
        check_tensor(attention_mask, "attention_mask", ndim=2)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have shape {tuple(input_ids.shape)}, got "
                             f"{tuple(attention_mask.shape)}")
    check_positive(batch_size, "batch_size", integer=True)
    encoder = as_clip_encoder(model)
    device = module_device(encoder)
    parts = []
    for i in range(0, len(input_ids), batch_size):
        mask = None if attention_mask is None else attention_mask[i : i + batch_size].to(device)
        parts.append(encoder.encode_text(input_ids[i : i + batch_size].to(device), mask, normalize=normalize))
    return torch.cat(parts)
