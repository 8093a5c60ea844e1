"""Tests of mmcourse.labs.ch05_masking: counting and drawing what MLM and MIM hide."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mmcourse.data import ShapesWorld, Tokenizer  # noqa: E402
from mmcourse.labs import ch05_masking as mv
from mmcourse.objectives.mim import patchify, random_masking
from mmcourse.objectives.mlm import mask_tokens


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld(40, image_size=16, min_objects=2, max_objects=2, seed=0)


@pytest.fixture(scope="module")
def tok(world) -> Tokenizer:
    return Tokenizer.from_world(world)


@pytest.fixture(scope="module")
def ids(world, tok) -> torch.Tensor:
    return tok.encode(world.captions, max_len=12)[0]


def _mask(ids, tok, p=0.5, seed=0, **kw):
    return mask_tokens(ids, tok, tok.vocab_size, p, torch.Generator().manual_seed(seed), **kw)


def test_mask_fates_add_up(ids, tok):
    masked, labels = _mask(ids, tok)
    fates = mv.mask_fates(ids, masked, labels, tok.mask_id, special_ids=tok.special_ids)
    assert fates["chosen"] == int((labels != -100).sum()) > 0
    assert fates["mask"] + fates["random"] + fates["unchanged"] == fates["chosen"]
    assert fates["eligible"] == int((ids > max(tok.special_ids)).sum())
    assert "eligible" not in mv.mask_fates(ids, masked, labels, tok.mask_id)


def test_mask_fates_see_each_rule(ids, tok):
    masked, labels = _mask(ids, tok, mask_replace_prob=1.0, random_replace_prob=0.0)
    fates = mv.mask_fates(ids, masked, labels, tok.mask_id)
    assert fates["mask"] == fates["chosen"] and fates["random"] == fates["unchanged"] == 0
    masked, labels = _mask(ids, tok, mask_replace_prob=0.0, random_replace_prob=0.0)
    fates = mv.mask_fates(ids, masked, labels, tok.mask_id)
    assert fates["unchanged"] == fates["chosen"] and fates["mask"] == 0
    masked, labels = _mask(ids, tok, mask_replace_prob=0.0, random_replace_prob=1.0)
    fates = mv.mask_fates(ids, masked, labels, tok.mask_id)
    assert fates["mask"] == 0 and fates["random"] > fates["unchanged"]


def test_mask_fates_validate(ids, tok):
    masked, labels = _mask(ids, tok)
    with pytest.raises(ValueError, match="same shape"):
        mv.mask_fates(ids, masked[:, :-1], labels, tok.mask_id)
    with pytest.raises(TypeError, match="mask_id"):
        mv.mask_fates(ids, masked, labels, "3")
    with pytest.raises(TypeError, match="labels"):
        mv.mask_fates(ids, masked, labels.float(), tok.mask_id)


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_show_token_masking_draws_every_real_token(ids, tok):
    masked, labels = _mask(ids[:4], tok)
    fig = mv.show_token_masking(ids[:4], masked, labels, tok.vocab, tok.mask_id, title="t")
    fates = mv.mask_fates(ids[:4], masked, labels, tok.mask_id)
    real = int((ids[:4] != tok.pad_id).sum())
    changed = fates["mask"] + fates["random"]
    assert len(_texts(fig)) == real + changed  # one box per real token, plus the original under a changed one
    assert _texts(fig).count("[MASK]") == fates["mask"]
    plt.close(fig)
    with pytest.raises(ValueError, match="vocab"):
        mv.show_token_masking(ids[:4], masked, labels, tok.vocab[:5], tok.mask_id)


def test_hide_patches_paints_only_hidden_patches(world):
    images = world.images[:3]
    _, hidden, _ = random_masking(patchify(images, 4), 0.5, torch.Generator().manual_seed(0))
    out = mv.hide_patches(images, hidden, 4, fill=0.25)
    patches_in, patches_out = patchify(images, 4), patchify(out, 4)
    hide = hidden.bool()
    assert torch.equal(patches_out[~hide], patches_in[~hide])
    assert (patches_out[hide] == 0.25).all()
    with pytest.raises(ValueError, match="hidden"):
        mv.hide_patches(images, hidden[:, :3], 4)


def test_show_patch_masking_rows(world):
    images = world.images[:4]
    _, hidden, _ = random_masking(patchify(images, 4), 0.75, torch.Generator().manual_seed(0))
    fig = mv.show_patch_masking(images, hidden, 4)
    assert len(fig.axes) == 2 * 4
    plt.close(fig)
    fig = mv.show_patch_masking(images, hidden, 4, reconstructions=images.clone())
    assert len(fig.axes) == 3 * 4
    plt.close(fig)
    with pytest.raises(ValueError, match="reconstructions"):
        mv.show_patch_masking(images, hidden, 4, reconstructions=images[:2])


def test_masking_figure_is_deterministic_and_uses_the_reconstruction(world, tok, ids):
    images = world.images[:3]
    seen = []

    def reconstruct(imgs, hidden):
        seen.append(hidden.clone())
        return imgs

    first = mv.masking_figure(
        images, 4, 0.5, ids[:3], tok.vocab, tok.special_ids, tok.mask_id, 0.3, seed=5, reconstruct=reconstruct
    )
    second = mv.masking_figure(
        images, 4, 0.5, ids[:3], tok.vocab, tok.special_ids, tok.mask_id, 0.3, seed=5, reconstruct=reconstruct
    )
    assert _texts(first) == _texts(second) and torch.equal(seen[0], seen[1])
    assert seen[0].shape == (3, 16) and int(seen[0][0].sum()) == 16 - 8
    titles = [ax.get_title(loc="left") for ax in first.axes]
    assert any(t.startswith("MIM: 8 of 16 patches hidden") for t in titles)
    plt.close("all")
    with pytest.raises(ValueError, match="mask_ratio"):
        mv.masking_figure(images, 4, 1.0, ids[:3], tok.vocab, tok.special_ids, tok.mask_id, 0.3)
    with pytest.raises(ValueError, match="seed"):
        mv.masking_figure(images, 4, 0.5, ids[:3], tok.vocab, tok.special_ids, tok.mask_id, 0.3, seed=-1)
