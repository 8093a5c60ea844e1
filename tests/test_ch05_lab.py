"""Chapter 5's lab additions: the shipped base checkpoint, the balanced held-out ITM test, colour-swap-only partners."""

import pytest
import torch

from mmcourse.data import ShapesWorld, Tokenizer
from mmcourse.labs.ch05_pretraining import (
    BASE_CHECKPOINT,
    BASE_CONFIG,
    HardNegativeBatches,
    _colour_swap_partners,
    cache_image_tokens,
    itm_heldout_accuracy,
    load_base,
    prepare_data,
)
from mmcourse.models.albef import ALBEF
from mmcourse.train import seeded


def test_the_base_checkpoint_is_small_and_loads_into_the_base_config():
    assert BASE_CHECKPOINT.exists(), "make it with: python -m mmcourse.labs.ch05_pretraining"
    assert BASE_CHECKPOINT.stat().st_size <= 5_000_000
    state = torch.load(BASE_CHECKPOINT, map_location="cpu", weights_only=True)
    model = load_base(state["text_encoder.token_embed.weight"].shape[0])
    assert isinstance(model, ALBEF) and not model.training
    assert model.image_encoder.__class__.__name__ == "SmallCNN" and not BASE_CONFIG["coordinates"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(60, image_size=16, min_objects=2, max_objects=2, seed=2)


def test_itm_heldout_accuracy_is_balanced(world):
    tok = Tokenizer.from_world(world)
    with seeded(0):
        model = ALBEF(tok.vocab_size, image_size=16, cnn_width=4, dim=16, embed_dim=16, num_heads=2, max_len=12)
    data = cache_image_tokens(model, prepare_data(world, tok, range(20), max_len=12))
    out = itm_heldout_accuracy(model, data)
    assert set(out) == {"accuracy", "positives", "negatives"}
    assert out["accuracy"] == pytest.approx((out["positives"] + out["negatives"]) / 2)
    with torch.no_grad():  # a head that always says "no" scores exactly 0.5
        model.itm_head.proj.weight.zero_()
        model.itm_head.proj.bias.copy_(torch.tensor([1.0, 0.0]))
    assert itm_heldout_accuracy(model, data) == {"accuracy": 0.5, "positives": 0.0, "negatives": 1.0}
    with pytest.raises(ValueError, match="image_tokens"):
        itm_heldout_accuracy(model, prepare_data(world, tok, range(20), max_len=12))


def test_colour_swap_partners_differ_by_the_colours_binding_only(world):
    tok = Tokenizer.from_world(world)
    data = prepare_data(world, tok, range(60), ("swap_colors",), max_len=12, twins=("swap_colors",))
    narrowed = _colour_swap_partners(data, world, tok)
    batches = HardNegativeBatches(narrowed, 8, torch.Generator().manual_seed(0))
    captions = tok.decode(data["input_ids"])
    colours = set(world.colors)
    layout = [" ".join(w for w in c.split() if w not in colours) for c in captions]
    assert any(batches.partners), "the twins must give partners"
    for i, partners in enumerate(batches.partners):
        for j in partners:
            assert layout[i] == layout[j] and captions[i] != captions[j]
