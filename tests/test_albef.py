"""Tests of mmcourse.models.albef: the combined ITC/ITM/MLM/MIM/ITG model, its data, training and evaluation."""

from __future__ import annotations

import pytest
import torch

from mmcourse.data import ShapesWorld, Tokenizer, language
from mmcourse.labs.ch05_pretraining import (
    HardNegativeBatches,
    embed,
    evaluate_retrieval,
    itm_rerank,
    prepare_data,
    relation_keys,
    train_albef,
)
from mmcourse.labs.common import fact_key
from mmcourse.models.albef import ALBEF

KINDS = ("swap_relation", "swap_colors")


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld(64, image_size=16, max_objects=2, seed=0)


@pytest.fixture(scope="module")
def tok(world) -> Tokenizer:
    return Tokenizer.from_world(world)


@pytest.fixture(scope="module")
def data(world, tok) -> dict:
    return prepare_data(world, tok, range(24), KINDS, max_len=12)


def tiny_model(tok, **kw) -> ALBEF:
    torch.manual_seed(0)
    defaults = dict(image_size=16, cnn_width=4, dim=16, embed_dim=16, text_depth=1, num_heads=2, max_len=12)
    return ALBEF(tok.vocab_size, **(defaults | kw))


def test_prepare_data_shapes_and_negatives(world, tok, data):
    assert data["images"].shape == (24, 3, 16, 16)
    assert data["input_ids"].shape == data["attention_mask"].shape == (24, 12)
    assert data["neg_ids"].shape == (24, 2, 12) and data["neg_valid"].shape == (24, 2)
    assert data["scene_ids"].tolist() == list(range(24))
    two = world.num_objects[:24] == 2
    # relational negatives exist exactly for two-object scenes, and decode to the world's negative caption
    assert torch.equal(data["neg_valid"][:, 0], two)
    i = int(two.nonzero()[0])
    assert tok.decode(data["neg_ids"][i, 0]) == world.negatives("swap_relation")[i]
    with pytest.raises(ValueError, match="indices"):
        prepare_data(world, tok, [])


def test_all_objectives_give_finite_losses_and_gradients(tok, data):
    model = tiny_model(tok, mim=True, captioner=True)
    batch = {k: v[:8] for k, v in data.items()}
    objectives = ("itc", "itm", "mlm", "mim", "itg")
    out = model.compute_losses(batch, objectives, generator=torch.Generator().manual_seed(0))
    for name in objectives + ("loss",):
        assert out[name].dim() == 0 and torch.isfinite(out[name]), name
    assert 0.0 <= float(out["itm_acc"]) <= 1.0
    out["loss"].backward()
    for name in ("text_encoder", "image_encoder", "fusion", "itm_head", "mlm_head", "mim_decoder", "captioner"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
    # weights scale the total
    out2 = model.compute_losses(batch, ("itc",), weights={"itc": 2.0})
    assert torch.allclose(out2["loss"], 2 * out2["itc"])


def test_forward_shapes(tok, data):
    model = tiny_model(tok, captioner=True).eval()
    images, ids, mask = data["images"][:5], data["input_ids"][:5], data["attention_mask"][:5]
    img_tokens = model.image_tokens(images)
    assert img_tokens.shape == (5, model.num_image_tokens, 16)
    txt_tokens = model.text_tokens(ids, mask)
    assert txt_tokens.shape == (5, 12, 16)
    assert model.encode_image(images).shape == model.encode_text(ids, mask).shape == (5, 16)
    assert torch.allclose(model.encode_image(images).norm(dim=-1), torch.ones(5))
    assert model.fuse(txt_tokens, mask, img_tokens).shape == (5, 12, 16)
    assert model.itm_logits(img_tokens, txt_tokens, mask).shape == (5, 2)
    assert model.match_probability(images, ids, mask).shape == (5,)
    caption = model.captioner.generate(images, max_len=6)
    assert caption.shape[0] == 5 and caption.shape[1] <= 6


def test_hard_negative_captions_are_extra_itc_columns(tok, data):
    model = tiny_model(tok).eval()
    batch = {k: v[:8] for k, v in data.items()}
    with_neg = model.compute_losses(batch, ("itc",))["itc"]
    plain = model.compute_losses({k: v for k, v in batch.items() if not k.startswith("neg_")}, ("itc",))["itc"]
    # more columns in the image->text softmax can only raise the loss
    assert with_neg > plain
    none_valid = dict(batch, neg_valid=torch.zeros_like(batch["neg_valid"]))
    assert torch.allclose(model.compute_losses(none_valid, ("itc",))["itc"], plain)


def test_objective_errors(tok, data):
    model = tiny_model(tok)
    batch = {k: v[:4] for k, v in data.items()}
    with pytest.raises(ValueError, match="objectives"):
        model.compute_losses(batch, ("itc", "contrastive"))
    with pytest.raises(ValueError, match="mim=True"):
        model.compute_losses(batch, ("mim",))
    with pytest.raises(ValueError, match="captioner=True"):
        model.compute_losses(batch, ("itg",))
    with pytest.raises(ValueError, match="at least 2"):
        model.compute_losses({k: v[:1] for k, v in batch.items()}, ("itm",))
    with pytest.raises(ValueError, match="must agree"):
        model.compute_losses(dict(batch, input_ids=batch["input_ids"][:3]), ("itc",))
    with pytest.raises(ValueError, match="image_encoder"):
        ALBEF(tok.vocab_size, image_encoder="resnet")


def test_train_albef_fixed_steps_is_deterministic(tok, data):
    runs = []
    for _ in range(2):
        model = tiny_model(tok)
        history = train_albef(model, data, objectives=("itc", "itm", "mlm"), steps=6, batch_size=8, seed=3,
                              hard_fraction=0.25)
        runs.append((history.losses, model.encode_text(data["input_ids"][:3], data["attention_mask"][:3])))
    assert len(runs[0][0]) == 6 and all(torch.isfinite(torch.tensor(runs[0][0])))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])
    with pytest.raises(TypeError, match="ALBEF"):
        train_albef(torch.nn.Linear(2, 2), data)
    with pytest.raises(TypeError, match="positional"):
        train_albef(model, data, ("itc",))


def test_vit_variant_runs(tok, data):
    model = tiny_model(tok, image_encoder="vit", patch_size=4, image_depth=1, mim=True)
    out = model.compute_losses({k: v[:4] for k, v in data.items()}, ("itc", "mim"))
    assert torch.isfinite(out["loss"])
    blanked, recon, hidden = model.reconstruct(data["images"][:2], 0.5, torch.Generator().manual_seed(0))
    assert blanked.shape == recon.shape == (2, 3, 16, 16) and hidden.shape == (2, 16)


@pytest.mark.parametrize("coordinates", [False, True])
def test_simmim_replaces_hidden_patch_embeddings_by_the_mask_token(tok, data, coordinates):
    model = tiny_model(tok, image_encoder="vit", patch_size=4, image_depth=1, mim=True, coordinates=coordinates).eval()
    images = data["images"][:3]
    none_hidden = torch.zeros(3, 16)
    assert torch.allclose(model.masked_image_tokens(images, none_hidden), model.image_tokens(images), atol=1e-6)
    hidden = (torch.arange(16) % 3 == 0).float().expand(3, -1)
    changed = images.clone()
    changed[:, :, :4, :4] = torch.rand(3, 3, 4, 4)  # patch 0 is hidden: its pixels must not matter
    assert torch.allclose(model.masked_image_tokens(changed, hidden), model.masked_image_tokens(images, hidden))
    changed = images.clone()
    changed[:, :, :4, 4:8] = torch.rand(3, 3, 4, 4)  # patch 1 is visible: its pixels matter
    assert not torch.allclose(model.masked_image_tokens(changed, hidden), model.masked_image_tokens(images, hidden))
    model.train()
    model.compute_losses({k: v[:4] for k, v in data.items()}, ("mim",))["loss"].backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    assert tiny_model(tok, mim=True).mask_token is None  # the CNN blanks pixels instead


def test_relation_keys_agree_with_the_captions(world):
    keys = relation_keys(world)
    objects = [[language.SceneObject(**o) for o in world.objects(i)] for i in range(len(world))]
    for i in range(len(world)):
        for j in range(len(world)):
            if world.num_objects[i] == 2 and world.num_objects[j] == 2:
                holds = language.claim_holds(objects[j], language.true_claim(objects[i]))
                assert holds == (keys[i] == keys[j]), (world.captions[i], world.captions[j])


def test_evaluation_and_itm_rerank(world, tok, data):
    model = tiny_model(tok)
    image_emb, text_emb = embed(model, data)
    assert image_emb.shape == text_emb.shape == (24, 16)
    metrics = evaluate_retrieval(model, data, relation_keys(world, range(24)), ks=(1, 5), rerank_k=4)
    for key in ("t2i_R@1", "t2i_R@5", "i2t_R@1", "t2i_R@1_itm"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["t2i_R@5"] >= metrics["t2i_R@1"]
    sim = text_emb @ image_emb.t()
    reranked = itm_rerank(model, data, sim, k=4)
    top_itc = sim.topk(4, dim=1).indices
    top_new = reranked.topk(4, dim=1).indices
    # the same four candidates stay on top; only their order changes, following the ITM probability
    assert torch.equal(top_itc.sort(1).values, top_new.sort(1).values)
    q = 0
    model.eval()  # BatchNorm in the CNN: compare in eval mode, as itm_rerank does
    probs = model.match_probability(
        data["images"][top_itc[q]], data["input_ids"][[q] * 4], data["attention_mask"][[q] * 4]
    )
    assert torch.equal(top_new[q], top_itc[q][probs.argsort(descending=True, stable=True)])


def test_outputs_follow_the_input_device(tok, data):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        model = tiny_model(tok, captioner=True).to(device)
        batch = {k: v[:4].to(device) for k, v in data.items()}
        out = model.compute_losses(batch, ("itc", "itm", "mlm", "itg"), generator=torch.Generator().manual_seed(0))
        assert all(v.device.type == device for k, v in out.items() if k != "itm_acc")
        assert model.encode_image(batch["images"]).device.type == device


def test_fact_key_and_groups(world, data):
    assert fact_key("a red circle left of a blue square") == fact_key("a blue square right of a red circle")
    assert fact_key("a red circle left of a blue square") != fact_key("a red circle right of a blue square")
    assert fact_key("a red circle left of a blue square") != fact_key("a blue circle left of a red square")
    assert fact_key("a red circle") == ("text", "a red circle")
    groups = data["group_ids"].tolist()
    for i in range(24):
        for j in range(24):
            assert (groups[i] == groups[j]) == (fact_key(world.captions[i]) == fact_key(world.captions[j]))
    # a hard-negative caption never states its own scene's fact
    valid = data["neg_valid"]
    assert (data["neg_group_ids"][valid] != data["group_ids"][:, None].expand_as(valid)[valid]).all()


def test_itc_does_not_treat_captions_of_the_same_fact_as_negatives(tok, data):
    model = tiny_model(tok).eval()
    batch = {k: v[:6] for k, v in data.items() if not k.startswith("neg_")}
    batch["group_ids"] = torch.tensor([0, 0, 1, 2, 3, 4])  # pretend scenes 0 and 1 state the same fact
    loss = model.compute_losses(batch, ("itc",))["itc"]
    img = model.encode_image(batch["images"])
    txt = model.encode_text(batch["input_ids"], batch["attention_mask"])
    logits = model.logit_scale() * img @ txt.t()
    blocked = torch.zeros(6, 6, dtype=torch.bool)
    blocked[0, 1] = blocked[1, 0] = True
    targets = torch.arange(6)
    expected = (
        torch.nn.functional.cross_entropy(logits.masked_fill(blocked, -1e30), targets)
        + torch.nn.functional.cross_entropy(logits.t().masked_fill(blocked, -1e30), targets)
    ) / 2
    assert torch.allclose(loss, expected, atol=1e-5)


def test_hard_negative_batches(world, tok):
    two = ShapesWorld(300, image_size=16, max_objects=2, min_objects=2, seed=1)
    d = prepare_data(two, tok, None, (), max_len=12)
    batches = list(HardNegativeBatches(d, 16, torch.Generator().manual_seed(0)))
    again = list(HardNegativeBatches(d, 16, torch.Generator().manual_seed(0)))
    assert len(batches) == 300 // 8 and all(b["images"].shape[0] == 16 for b in batches)
    assert all(torch.equal(a["scene_ids"], b["scene_ids"]) for a, b in zip(batches, again, strict=True))
    anchors = torch.cat([b["scene_ids"][:8] for b in batches])
    assert anchors.unique().numel() == anchors.numel()  # each scene is an anchor at most once per epoch
    paired = 0
    for b in batches:
        same_bag = b["bag_ids"][:8] == b["bag_ids"][8:]
        other_fact = b["group_ids"][:8] != b["group_ids"][8:]
        paired += int((same_bag & other_fact).sum())
        assert (other_fact | ~same_bag).all()  # a partner never states the anchor's fact
    assert paired > len(anchors) // 2  # most scenes of a 300-scene world have such a partner
    with pytest.raises(ValueError, match="bag_ids"):
        HardNegativeBatches({"images": d["images"]}, 8, torch.Generator())


def test_itm_caption_negatives_keep_the_one_to_two_ratio(tok, data):
    model = tiny_model(tok).eval()
    batch = {k: v[:8] for k, v in data.items()}
    seen = {}
    original = model.itm_logits

    def spy(image_tokens, text_tokens, attention_mask):
        seen["text"] = text_tokens.detach()
        return original(image_tokens, text_tokens, attention_mask)

    model.itm_logits = spy
    out = model.compute_losses(batch, ("itm",), generator=torch.Generator().manual_seed(0), itm_caption_negatives=True)
    assert torch.isfinite(out["itm"])
    text = seen["text"]
    assert text.shape[0] == 3 * 8  # B positives, B negative images, B negative texts
    valid = batch["neg_valid"]
    for i in range(8):
        own = model.text_tokens(batch["neg_ids"][i][valid[i]], batch["neg_mask"][i][valid[i]])
        if valid[i].any():  # the negative text of image i is one of its own hard-negative captions
            assert any(torch.allclose(text[16 + i], t, atol=1e-5) for t in own)


def test_counterfactual_twins_make_the_hard_negative_caption_true(world, tok):
    from mmcourse.data.twins import counterfactual_twins

    twins = counterfactual_twins(world, range(len(world)))
    assert twins["images"].shape == (len(twins["captions"]), 3, 16, 16) and len(twins["captions"]) > 10
    for j, (src, kind) in enumerate(zip(twins["source"].tolist(), twins["kind"], strict=True)):
        assert world.num_objects[src] == 2
        # the twin's caption states exactly the source's hard negative of that kind...
        assert fact_key(twins["captions"][j]) == fact_key(world.negative(src, kind))
        # ...and is true of the twin's objects, not of the source's
        claim = language.true_claim(twins["objects"][j])
        source_objects = [language.SceneObject(**o) for o in world.objects(src)]
        assert not language.claim_holds(source_objects, claim)
        assert not torch.equal(twins["images"][j], world.images[src])
    data = prepare_data(world, tok, range(24), KINDS, max_len=12, twins=("swap_relation",))
    extra = data["images"].shape[0] - 24
    assert extra == int((world.num_objects[:24] == 2).sum())
    assert (data["scene_ids"][24:] == -1).all()
    assert (data["group_ids"][24:] != data["group_ids"][:24][world.num_objects[:24] == 2]).all()


# ---------------------------------------------------------------------------------------------- chapter 5 additions
def _frozen_pair(tok, data):
    from mmcourse.labs.ch05_pretraining import cache_image_tokens, freeze_image_encoder

    model = freeze_image_encoder(tiny_model(tok, captioner=True))
    model.eval()
    return model, cache_image_tokens(model, data)


def test_cached_image_tokens_give_the_same_losses_as_the_encoder(tok, data):
    model, cached = _frozen_pair(tok, data)
    assert cached["image_tokens"].shape == (24, model.num_image_tokens, 16)
    assert "image_tokens" not in data  # a copy, the input is untouched
    batch = {k: v[:8] for k, v in data.items()}
    batch_cached = {k: v[:8] for k, v in cached.items()}
    objectives = ("itc", "itm", "mlm", "itg")
    with torch.no_grad():
        plain = model.compute_losses(batch, objectives, generator=torch.Generator().manual_seed(0))
        fast = model.compute_losses(batch_cached, objectives, generator=torch.Generator().manual_seed(0))
    for name in objectives:
        assert torch.allclose(plain[name], fast[name], atol=1e-5), name
    image_emb, _ = embed(model, data)
    cached_emb, _ = embed(model, cached)
    assert torch.allclose(image_emb, cached_emb, atol=1e-5)


def test_cached_tokens_of_the_wrong_shape_are_refused(tok, data):
    model, cached = _frozen_pair(tok, data)
    batch = {k: v[:8] for k, v in cached.items()}
    batch["image_tokens"] = batch["image_tokens"][:, :-1]
    with pytest.raises(ValueError, match="image_tokens"):
        model.compute_losses(batch, ("itc",))
    from mmcourse.labs.ch05_pretraining import cache_image_tokens, freeze_image_encoder

    with pytest.raises(ValueError, match="images"):
        cache_image_tokens(model, {"input_ids": data["input_ids"]})
    with pytest.raises(TypeError, match="ALBEF"):
        freeze_image_encoder(torch.nn.Linear(2, 2))


def test_frozen_image_encoder_does_not_change_while_the_rest_trains(tok, data):
    model, cached = _frozen_pair(tok, data)
    visual = {k: v.clone() for k, v in model.visual.state_dict().items()}
    text = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    train_albef(model, cached, objectives=("itc", "mlm"), steps=3, batch_size=8)
    assert all(torch.equal(visual[k], v) for k, v in model.visual.state_dict().items())
    assert not all(torch.equal(text[k], v) for k, v in model.text_encoder.state_dict().items())
    assert not any(p.requires_grad for p in model.visual.parameters())


def test_itm_rerank_with_the_summed_score(tok, data):
    import math

    model, cached = _frozen_pair(tok, data)
    image_emb, text_emb = embed(model, cached)
    sim = text_emb @ image_emb.t()
    reranked = itm_rerank(model, cached, sim, k=4, score="itm+itc")
    top_itc = sim.topk(4, dim=1).indices
    top_new = reranked.topk(4, dim=1).indices
    assert torch.equal(top_itc.sort(1).values, top_new.sort(1).values)
    q = 1
    with torch.no_grad():
        logits = model.itm_logits(
            cached["image_tokens"][top_itc[q]],
            model.text_tokens(data["input_ids"][[q] * 4], data["attention_mask"][[q] * 4]),
            data["attention_mask"][[q] * 4],
        )
        expected = logits.log_softmax(-1)[:, 1] + model.logit_scale() * sim[q, top_itc[q]]
    assert torch.equal(top_new[q], top_itc[q][expected.argsort(descending=True, stable=True)])
    assert math.isfinite(float(reranked.max()))
    with pytest.raises(ValueError, match="score"):
        itm_rerank(model, cached, sim, k=4, score="best")
    metrics = evaluate_retrieval(model, cached, ks=(1,), rerank_k=4, rerank_score="itm+itc")
    assert 0.0 <= metrics["t2i_R@1_itm"] <= 1.0


def test_relational_split_is_disjoint_and_bounded():
    from mmcourse.labs.ch05_pretraining import relational_split

    two = ShapesWorld(100, image_size=16, min_objects=2, max_objects=2, seed=1)
    train_idx, test_idx = relational_split(two, gallery_size=7, seed=0)
    assert len(test_idx) == 7 and not set(train_idx) & set(test_idx)
    assert relational_split(two, gallery_size=7, seed=0) == (train_idx, test_idx)
    with pytest.raises(ValueError, match="gallery_size"):
        relational_split(two, gallery_size=0)


def test_twin_scores_follow_the_winoground_definition(tok):
    from mmcourse.labs.ch05_pretraining import twin_scores

    two = ShapesWorld(40, image_size=16, min_objects=2, max_objects=2, seed=2)
    tok2 = Tokenizer.from_world(two)
    model = tiny_model(tok2)
    scores = twin_scores(model, two, tok2, range(20))
    assert scores["pairs"] == sum(s["pairs"] for s in scores["per_kind"].values()) > 0
    for key in ("text", "image", "group"):
        assert 0.0 <= scores[key] <= 1.0
    assert scores["group"] <= min(scores["text"], scores["image"])
    # an image side that sees nothing cannot prefer one image to another: the image score is 0 (ties lose)
    blind = tiny_model(tok2)
    constant = torch.nn.functional.normalize(torch.ones(1, 16), dim=-1)
    blind.image_embedding = lambda tokens: constant.expand(tokens.shape[0], -1)
    assert twin_scores(blind, two, tok2, range(20))["image"] == 0.0
    for score in ("itm", "itm+itc"):
        assert 0.0 <= twin_scores(model, two, tok2, range(20), score=score)["group"] <= 1.0
    with pytest.raises(ValueError, match="score"):
        twin_scores(model, two, tok2, range(20), score="cosine")


def test_predict_masked_words_reads_the_mlm_head(tok, data):
    from mmcourse.labs.ch05_pretraining import predict_masked_words

    model, cached = _frozen_pair(tok, data)
    ids, mask = data["input_ids"][:6], data["attention_mask"][:6]
    positions = torch.tensor([1, 2, 3, 1, 2, 3])
    guess = predict_masked_words(model, cached["image_tokens"][:6], ids, mask, positions, tok.mask_id)
    masked = ids.clone()
    masked[torch.arange(6), positions] = tok.mask_id
    with torch.no_grad():
        logits = model.mlm_logits(cached["image_tokens"][:6], masked, mask)
    assert torch.equal(guess, logits[torch.arange(6), positions].argmax(-1))
    with pytest.raises(ValueError, match="positions"):
        predict_masked_words(model, cached["image_tokens"][:6], ids, mask, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="positions"):
        predict_masked_words(model, cached["image_tokens"][:6], ids, mask, torch.full((6,), 12))


def test_reconstruct_with_a_given_mask(tok, data):
    model = tiny_model(tok, mim=True).eval()
    images = data["images"][:3]
    hidden = torch.zeros(3, model.num_image_tokens)
    hidden[:, 0] = 1
    blanked, mixed, used = model.reconstruct(images, hidden=hidden)
    assert torch.equal(used, hidden)
    cell = model.cell_size
    assert torch.equal(mixed[..., cell:, :], images[..., cell:, :].clamp(0, 1))  # visible cells stay as they were
    assert (blanked[..., :cell, :cell] == 0).all()
    with pytest.raises(ValueError, match="hidden"):
        model.reconstruct(images, hidden=torch.zeros(3, 2))


def test_compositionality_experiment_from_a_frozen_base():
    from mmcourse.labs.ch05_pretraining import (
        COMPOSITIONALITY_SETTINGS,
        DEFAULT_SETTINGS,
        compositionality_experiment,
    )

    two = ShapesWorld(120, image_size=16, min_objects=2, max_objects=2, seed=3)
    tok2 = Tokenizer.from_world(two)
    base = tiny_model(tok2)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    settings = ["ITC", "ITC + ITM with hard negatives, top-k re-ranked by ITM + ITC"]
    out = compositionality_experiment(
        settings,
        steps=2,
        batch_size=8,
        gallery_size=8,
        rerank_k=3,
        world=two,
        base_model=base,
        test_twins=("swap_relation",),
    )
    itc_row, albef_row = out["rows"]
    assert albef_row["setting"].endswith("top-3 re-ranked by ITM + ITC")
    for key in ("twin_text", "twin_image", "twin_group"):
        assert 0.0 <= itc_row[key] <= 1.0 and 0.0 <= albef_row[key + "_before_rerank"] <= 1.0
    assert len(out["keys"]) == out["test"]["images"].shape[0] > len(out["test_indices"])
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # the base itself is not trained
    frozen_copy = out["models"]["ITC"]
    assert all(torch.equal(before["visual." + k], v) for k, v in frozen_copy.visual.state_dict().items())
    with pytest.raises(ValueError, match="architecture"):
        compositionality_experiment(
            ["ITC + hard-negative captions, no coordinate channels"], steps=1, world=two, base_model=base
        )
    with pytest.raises(ValueError, match="two-object"):
        compositionality_experiment(["ITC"], steps=1, world=ShapesWorld(20, image_size=16, seed=0))
    with pytest.raises(ValueError, match="test_twins"):
        compositionality_experiment(["ITC"], steps=1, world=two, test_twins=("swap_shapes",))
    # the from-scratch benchmark keeps its four settings by default
    assert DEFAULT_SETTINGS == tuple(list(COMPOSITIONALITY_SETTINGS)[:4])
