"""Device plumbing: the library runs wherever its inputs live, without assuming the CPU.

No GPU is needed to check this. PyTorch's ``meta`` device is a real device with no data: every operation runs
its shape and device logic, and an operation that mixes a ``meta`` tensor with a tensor created on the default
(CPU) device raises "Tensor on device meta is not on the expected device cpu". So running each model's forward
pass and loss on ``meta`` finds exactly the bugs that break a CUDA run (``torch.arange(n)`` without ``device=``,
masks built on the CPU, random numbers drawn from a CPU generator into a GPU tensor, ...), and checking the
outputs' devices proves that everything a model returns lives where it was given.

A static check adds what ``meta`` cannot see: no ``.numpy()`` on a tensor that was not first moved to the CPU.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import mmcourse
from mmcourse.models.clip import build_tiny_clip
from mmcourse.models.fusion import CrossAttentionFusionClassifier, EarlyFusionClassifier, LateFusionClassifier
from mmcourse.nn.attention import CrossModalAttention
from mmcourse.nn.blocks import CrossAttentionBlock, MultimodalEncoder, TransformerEncoder
from mmcourse.nn.encoders import ProjectionHead, SmallCNN, TextTransformer, TinyViT
from mmcourse.objectives.contrastive import contrastive_loss, siglip_loss

META = torch.device("meta")
VOCAB, B, L, S = 40, 4, 8, 16


def tensors_in(value):
    """Every tensor in a (nested) output: tensors, tuples, lists, dicts, namedtuples."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors_in(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from tensors_in(v)


def assert_on(value, device: torch.device) -> None:
    found = list(tensors_in(value))
    assert found, "the call returned no tensor"
    wrong = [tuple(t.shape) for t in found if t.device != device]
    assert not wrong, f"tensors of shapes {wrong} are not on {device}"


def images(device=META) -> torch.Tensor:
    return torch.rand(B, 3, S, S, device=device)


def token_ids(device=META) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(7, VOCAB, (B, L), device=device)
    mask = torch.ones(B, L, dtype=torch.long, device=device)
    return ids, mask


def encoders():
    return SmallCNN(width=4, dim=16, image_size=S), TextTransformer(VOCAB, dim=16, depth=1, num_heads=2, max_len=L)


def on_meta(module: torch.nn.Module) -> torch.nn.Module:
    return module.to(META)


def test_meta_device_catches_a_cpu_assumption():
    # the premise of this file: mixing a meta tensor with a default-device tensor fails loudly
    with pytest.raises(RuntimeError, match="device"):
        torch.zeros(3, device=META) + torch.arange(3)


@pytest.mark.parametrize("with_weights", [False, True])
def test_cross_modal_attention_with_padding_mask(with_weights):
    layer = on_meta(CrossModalAttention(16, num_heads=2, dropout=0.0)).eval()
    query, context = torch.rand(B, L, 16, device=META), torch.rand(B, 5, 16, device=META)
    mask = torch.ones(B, 5, dtype=torch.bool, device=META)
    out = layer(query, context, context, mask=mask, need_weights=with_weights) if with_weights else layer(
        query, context, context, mask=mask
    )
    assert_on(out, META)


def test_transformer_stacks():
    x, ctx = torch.rand(B, L, 16, device=META), torch.rand(B, 5, 16, device=META)
    pad = torch.ones(B, L, dtype=torch.bool, device=META)
    assert_on(on_meta(TransformerEncoder(16, depth=1, num_heads=2, causal=True))(x, pad), META)
    assert_on(on_meta(MultimodalEncoder(16, depth=1, num_heads=2))(x, ctx), META)
    assert_on(on_meta(MultimodalEncoder(16, depth=1, num_heads=2, causal=True))(x, ctx), META)
    assert_on(on_meta(CrossAttentionBlock(16, num_heads=2, self_attention=True, causal=True))(x, ctx), META)


@pytest.mark.parametrize("make", [lambda: SmallCNN(width=4, dim=16, image_size=S),
                                  lambda: TinyViT(image_size=S, patch_size=4, dim=16, depth=1, num_heads=2)])
def test_image_encoders(make):
    assert_on(on_meta(make()).eval()(images()), META)


@pytest.mark.parametrize("pool", ["eos", "cls", "mean"])
def test_text_encoder(pool):
    ids, mask = token_ids()
    model = on_meta(TextTransformer(VOCAB, dim=16, depth=1, num_heads=2, max_len=L, pool=pool, causal=pool == "eos"))
    assert_on(model(ids, mask), META)
    assert_on(on_meta(ProjectionHead(16, 8, hidden_dim=32))(torch.rand(B, 16, device=META)), META)


def test_tiny_clip_forward_and_losses():
    model = on_meta(build_tiny_clip(VOCAB, image_size=S, cnn_width=4, vision_dim=16, text_dim=16, num_heads=2,
                                    max_len=L, embed_dim=8)).train()
    ids, mask = token_ids()
    out = model(images(), ids, mask)
    assert_on(out, META)
    image_features, text_features = model.encode_image(images()), model.encode_text(ids, mask)
    assert_on((image_features, text_features), META)
    assert_on(contrastive_loss(image_features, text_features), META)
    assert_on(siglip_loss(image_features, text_features), META)


@pytest.mark.parametrize("fusion", [EarlyFusionClassifier, LateFusionClassifier, CrossAttentionFusionClassifier])
def test_fusion_classifiers(fusion):
    image_encoder, text_encoder = encoders()
    model = on_meta(fusion(image_encoder, text_encoder, num_classes=3)).train()
    ids, mask = token_ids()
    assert_on(model(images(), ids, mask), META)


def test_albef_objectives():
    # MLM and MIM draw their random masks on the generator's device (the CPU by default, so that a seed gives the
    # same masks on every device) and copy the result to the input's device; that copy needs values, which meta
    # tensors lack, so those two objectives are checked on real data in test_pretraining.py.
    from mmcourse.models.albef import ALBEF

    torch.manual_seed(0)
    model = on_meta(ALBEF(VOCAB, image_size=S, cnn_width=4, dim=16, embed_dim=8, text_depth=1, num_heads=2,
                          max_len=L, mim=True, captioner=True, caption_depth=1)).train()
    ids, mask = token_ids()
    batch = {"images": images(), "input_ids": ids, "attention_mask": mask}
    losses = model.compute_losses(batch, ("itc", "itm", "itg"))
    assert set(losses) >= {"itc", "itm", "itm_acc", "itg"}
    assert_on(losses, META)


def test_captioner_teacher_forcing():
    from mmcourse.models.captioner import Captioner

    model = on_meta(Captioner(VOCAB, SmallCNN(width=4, dim=16, image_size=S), dim=16, depth=1, num_heads=2,
                              max_len=L))
    ids, _ = token_ids()
    assert_on(model(images(), ids), META)


def test_modality_classifier():
    from mmcourse.data import ShapesWorld, Tokenizer
    from mmcourse.labs.ch01_overview import ModalityClassifier

    tokenizer = Tokenizer.from_world(ShapesWorld(8, image_size=S, seed=0))
    model = on_meta(ModalityClassifier(tokenizer.vocab_size, 3, tokenizer, dim=16, width=4, max_len=L))
    ids = torch.randint(7, tokenizer.vocab_size, (B, L), device=META)
    assert_on(model(images(), ids, torch.ones(B, L, dtype=torch.long, device=META)), META)


def test_heterogeneity_cures():
    # chapter 7's cures: the projection's loss, the matcher and its pairwise scores follow the inputs
    from mmcourse.labs.ch07_heterogeneity import CrossAttentionMatcher, ImageToTextProjection

    ids, mask = token_ids()
    words = torch.rand(B, VOCAB, device=META)  # bag-of-words targets (bag_of_words checks the id range: .item())
    projection = on_meta(ImageToTextProjection(VOCAB, S, cnn_width=4, vision_dim=8))
    assert_on(projection.loss(images(), words), META)
    matcher = on_meta(CrossAttentionMatcher(VOCAB, S, cnn_width=4, vision_dim=8, text_dim=16, max_len=L))
    assert_on(matcher(images(), ids, mask), META)
    assert_on(matcher.pairwise(images(), ids[:3], mask[:3]), META)


def test_fit_keeps_in_memory_data_on_the_model_device():
    # fit moves in-memory tensors to the model's device once; batches then never leave it
    from mmcourse.train import fit

    seen = []

    def step(model, batch):
        x, y = batch
        seen.append((x.device, y.device))
        return torch.nn.functional.cross_entropy(model(x), y)

    model = torch.nn.Linear(4, 3)
    data = (torch.randn(32, 4), torch.randint(0, 3, (32,)))
    fit(model, step, data, steps=3, batch_size=8, device="cpu", seed=0, progress=False)
    assert seen == [(torch.device("cpu"), torch.device("cpu"))] * 3


def _numpy_calls_without_cpu(path: Path) -> list[str]:
    """``x.numpy()`` calls in a source file whose receiver is not visibly on the CPU (``….cpu().numpy()``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "numpy":
            receiver = ast.unparse(node.func.value)
            if ".cpu()" not in receiver and "cpu" not in receiver.lower():
                bad.append(f"{path.name}:{node.lineno}: {receiver}.numpy()")
    return bad


def test_no_numpy_on_tensors_that_may_live_on_a_gpu():
    root = Path(mmcourse.__file__).parent
    bad = [hit for path in sorted(root.rglob("*.py")) for hit in _numpy_calls_without_cpu(path)]
    assert not bad, "call .cpu() before .numpy() (CUDA tensors have no numpy view):\n" + "\n".join(bad)


def test_notebooks_choose_the_device_from_setup():
    # every chapter asks mmcourse.setup() for the device instead of hard-coding the CPU
    import nbformat

    notebooks = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "mmcourse.setup(" in code, f"{path.name} does not call mmcourse.setup()"
        assert 'device="cpu"' not in code and "device='cpu'" not in code, f"{path.name} hard-codes the CPU"
