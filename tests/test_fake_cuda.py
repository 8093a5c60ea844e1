"""Training and evaluation on a device that is not the CPU, run on the CPU with ``fake_cuda`` (see its docstring).

The meta-device tests check forward passes; these run whole (tiny) training loops and evaluations, where the
device bugs hide: targets built on the CPU, random draws from a CPU generator, scores gathered with CPU indices.
"""

from __future__ import annotations

import pytest
import torch
from fake_cuda import DeviceMismatch, fake_cuda, is_tagged

import mmcourse
from mmcourse.data import ShapesWorld, Tokenizer

SHAPES3 = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(48, image_size=16, max_objects=1, seed=0, shapes=SHAPES3)


@pytest.fixture(scope="module")
def tokenizer(world):
    return Tokenizer.from_world(world)


def test_the_harness_fails_where_cuda_would():
    with fake_cuda():
        device = mmcourse.setup(0)
        assert device.type == "cuda"
        x = torch.randn(4, 3).to(device)
        assert x.device.type == "cuda" and is_tagged(x)
        with pytest.raises(DeviceMismatch):
            _ = x + torch.arange(3)  # a CPU tensor that is not 0-dim
        _ = x + torch.tensor(2.0)  # CPU scalars mix, as on CUDA
        _ = x[torch.tensor([0, 2])]  # CPU indices into a GPU tensor are fine
        with pytest.raises(DeviceMismatch):
            _ = torch.arange(4)[x[:, 0].long().clamp(0, 3)]  # GPU indices into a CPU tensor are not
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()
        with pytest.raises(DeviceMismatch, match="generator"):
            torch.rand(3, generator=torch.Generator().manual_seed(0), device=device)
        y = x.cpu()
        assert y.device.type == "cpu" and not is_tagged(y) and is_tagged(x)
        assert torch.ones(2).to(x).device.type == "cuda" and torch.ones(2).to(tensor=x).device.type == "cuda"
        assert x.to(torch.float64).device.type == "cuda" and x.to(tensor=y).device.type == "cpu"
    assert not torch.cuda.is_available() or torch.cuda.get_device_name(0) != "fake CUDA (CPU)"


def test_a_module_moved_to_the_device_trains_there():
    with fake_cuda():
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).to("cuda")
        assert all(p.device.type == "cuda" for p in model.parameters())
        assert all(b.device.type == "cuda" for b in model.buffers())
        with pytest.raises(DeviceMismatch):
            model(torch.randn(5, 3))
        out = model(torch.randn(5, 3, device="cuda"))
        out.sum().backward()
        assert all(p.grad.device.type == "cuda" for p in model.parameters())


def test_tiny_clip_training_and_evaluation(world, tokenizer):
    from mmcourse.labs.common import (
        caption_retrieval,
        scene_text_pairs,
        train_tiny_clip,
        zero_shot_color_shape_accuracy,
    )
    from mmcourse.models.clip import build_tiny_clip

    with fake_cuda():
        model = build_tiny_clip(tokenizer.vocab_size, image_size=16)
        train_tiny_clip(model, scene_text_pairs(world, tokenizer), steps=2, batch_size=16, device="cuda")
        assert next(model.parameters()).device.type == "cuda"
        assert 0.0 <= zero_shot_color_shape_accuracy(model, world, tokenizer) <= 1.0
        assert set(caption_retrieval(model, world.images[:12], world.captions[:12], tokenizer, ks=(1,)))


@pytest.mark.parametrize("cure", ["projection", "cross_attention", "contrastive"])
def test_chapter7_cures(world, tokenizer, cure):
    from mmcourse.labs.ch07_heterogeneity import build_cure, cure_pairs, cure_recall, train_cure

    with fake_cuda():
        model = build_cure(cure, tokenizer.vocab_size, image_size=16)
        train_cure(model, cure_pairs(world, tokenizer, list(range(24))), steps=2, batch_size=8, device="cuda")
        assert next(model.parameters()).device.type == "cuda"
        recall = cure_recall(model, world, tokenizer, list(range(24, 36)))
        assert 0.0 <= recall["i2t_R@1"] <= 1.0


@pytest.mark.parametrize("options", [{}, {"augment": ["shift", "flip"]}, {"freeze_encoders": True}])
def test_chapter7_small_data_training(world, tokenizer, options):
    from mmcourse.labs.ch07_sparsity import build_small_clip, noisy_scene_text_pairs, score_pairs, train_on_pairs

    with fake_cuda():
        init = None
        if options.get("freeze_encoders"):
            init = build_small_clip(tokenizer.vocab_size, image_size=16)
            train_on_pairs(init, noisy_scene_text_pairs(world, tokenizer, list(range(16))), steps=1, batch_size=8,
                           device="cuda")
        scores = score_pairs(world, tokenizer, list(range(16)), list(range(24, 36)), steps=2, batch_size=8,
                             device="cuda", init=init, **options)
        assert 0.0 <= scores["accuracy"] <= 1.0


def test_analysis_helpers_bring_results_back_where_the_inputs_are(world, tokenizer):
    # helpers meant for tables and figures run the model on its device and answer on the inputs' (CPU) device
    from mmcourse.labs.ch02_representation import MatchingHead
    from mmcourse.labs.ch03_architectures import build_fusion_model, word_patch_attention
    from mmcourse.models.albef import ALBEF

    with fake_cuda():
        head = MatchingHead(8).to("cuda")
        scores = head.pairwise(torch.randn(3, 8), torch.randn(5, 8))
        assert scores.shape == (3, 5) and scores.device.type == "cpu"

        fusion = build_fusion_model("cross", tokenizer.vocab_size, image_size=16, patch_size=4).to("cuda")
        ids, mask = tokenizer.encode(world.captions[:2], max_len=8)
        maps = word_patch_attention(fusion, world.images[:2], ids, mask)
        assert maps.device.type == "cpu" and maps.shape[:2] == (2, 8)

        model = ALBEF(tokenizer.vocab_size, 16, image_encoder="vit", patch_size=4, image_layers=0, coordinates=False,
                      dim=16, num_heads=2, max_len=8, mim=True).to("cuda")
        blanked, reconstruction, hidden = model.reconstruct(world.images[:2], 0.5, torch.Generator().manual_seed(0))
        assert all(t.device.type == "cpu" for t in (blanked, reconstruction, hidden))


def test_a_module_comes_back_to_the_cpu():
    with fake_cuda():
        model = torch.nn.Linear(3, 2).to("cuda").cpu()
        assert all(p.device.type == "cpu" for p in model.parameters())
        assert model(torch.randn(4, 3)).device.type == "cpu"


TINY_ALBEF = dict(cnn_width=4, dim=16, embed_dim=16, text_depth=1, num_heads=2)


def test_chapter5_experiments_on_the_device():
    # every compositionality setting (ITC, hard negatives, twins, ITM re-ranking) and both captioning objectives
    from mmcourse.labs.ch05_pretraining import (
        COMPOSITIONALITY_SETTINGS,
        captioning_experiment,
        compositionality_experiment,
    )

    settings = [name for name, spec in COMPOSITIONALITY_SETTINGS.items() if not spec.get("model_kwargs")]
    with fake_cuda():
        result = compositionality_experiment(settings, steps=2, batch_size=16, num_scenes=300, gallery_size=40,
                                             rerank_k=4, eval_every=2, model_kwargs=TINY_ALBEF, device="cuda",
                                             test_twins=("swap_relation",))
        assert len(result["rows"]) == len(settings)
        captions = captioning_experiment(steps=2, batch_size=16, num_scenes=200, test_size=20,
                                         model_kwargs=TINY_ALBEF, device="cuda")
        assert all(0.0 <= row["objects_match"] <= 1.0 for row in captions["rows"])


def test_chapter6_vqa_and_search_on_the_device():
    from mmcourse.labs.ch06_applications import (
        SearchEngine,
        accuracy_per_type,
        answer_probabilities,
        predict_answers,
        train_vqa,
        vqa_tensors,
    )
    from mmcourse.labs.common import scene_text_pairs, train_tiny_clip
    from mmcourse.models.clip import build_tiny_clip
    from mmcourse.models.vqa import VQAModel
    from mmcourse.nn.encoders import SmallCNN

    world = ShapesWorld(40, image_size=16, max_objects=2, seed=1)
    tokenizer = Tokenizer.from_world(world)
    data = vqa_tensors(world, tokenizer, indices=range(20), max_len=12)
    with fake_cuda():
        torch.manual_seed(0)
        model = VQAModel(tokenizer.vocab_size, SmallCNN(3, width=4, dim=16, image_size=16), dim=16, num_heads=2,
                         max_len=12)
        train_vqa(model, data, scenes=world.images, steps=2, batch_size=8, device="cuda")
        assert 0.0 <= accuracy_per_type(predict_answers(model, world.images, data), data)["all"] <= 1.0
        assert answer_probabilities(model, world.images, data).shape[0] == len(data["answer_ids"])

        clip = build_tiny_clip(tokenizer.vocab_size, image_size=16)
        train_tiny_clip(clip, scene_text_pairs(world, tokenizer), steps=2, batch_size=8, device="cuda")
        engine = SearchEngine(clip, tokenizer, world.images[:10], texts=world.captions[:10])
        for query in ("a red circle", world.images[0]):
            results = engine.search(query, k=3)
            assert results.indices.shape == (1, 3)


def test_chapters_1_to_3_training_on_the_device():
    from mmcourse.data import collate
    from mmcourse.labs.ch01_overview import accuracy, build_classifier, train_classifier
    from mmcourse.labs.ch02_representation import (
        alignment_metrics,
        build_aligner,
        labelled_scene_text_pairs,
        train_alignment,
    )
    from mmcourse.labs.ch03_architectures import (
        build_fusion_model,
        fusion_accuracy,
        left_of_questions,
        train_fusion,
    )

    world = ShapesWorld(40, image_size=16, max_objects=1, seed=0, shapes=SHAPES3)
    tokenizer = Tokenizer.from_world(world)
    batch = collate([world[i] for i in range(40)], tokenizer, max_len=12)
    data = {k: batch[k] for k in ("images", "input_ids", "attention_mask")} | {"labels": world.attribute("color")}
    pairs = ShapesWorld(40, image_size=32, min_objects=2, max_objects=2, seed=0)
    pair_tokenizer = Tokenizer.from_world(pairs)
    with fake_cuda():
        classifier = build_classifier(tokenizer, 6, width=4, max_len=12)
        train_classifier(classifier, data, steps=2, batch_size=8, device="cuda")
        assert 0.0 <= accuracy(classifier, data, use="both") <= 1.0
        pairs_24 = labelled_scene_text_pairs(world, tokenizer, range(24))
        for strategy in ("implicit", "explicit", "contrastive"):
            aligner = build_aligner(strategy, tokenizer.vocab_size, image_size=16)
            train_alignment(aligner, pairs_24, steps=2, batch_size=8, probe_images=world.images[:4],
                            probe_texts=tokenizer.encode(world.captions[:4]), snapshot_every=1, device="cuda")
            assert alignment_metrics(aligner.model, world, tokenizer, list(range(24, 40)))
        questions = left_of_questions(pairs, pair_tokenizer, list(range(40)))
        for kind in ("late", "early", "cross"):
            fusion = build_fusion_model(kind, pair_tokenizer.vocab_size, image_size=32, patch_size=8)
            train_fusion(fusion, questions, steps=2, batch_size=8, device="cuda",
                         eval_fn=lambda m: fusion_accuracy(m, questions), eval_every=1)


def test_the_gpu_benchmarks_run_on_the_device(tmp_path):
    """``python -m benchmarks --device cuda`` in quick mode (the notebooks aside: they run in their own kernels), so
    a GPU session spends its minutes measuring, not debugging device plumbing."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.__main__ import accepts_device, modules, run_all

    names = [n.removeprefix("bench_") for n in modules() if n != "bench_course"]
    with fake_cuda():
        results = run_all(quick=True, only=names, device="cuda", out_dir=tmp_path)
    assert not results["errors"], results["errors"]
    device_aware = {n for n in modules() if accepts_device(importlib.import_module(f"benchmarks.{n}").run)}
    assert set(results["reports"]) == device_aware - {"bench_course"} and len(results["reports"]) >= 5
    assert (tmp_path / "RESULTS_quick_cuda.md").exists()


# ------------------------------------------------------------------------------------------------ host syncs


def _trainers():
    """One small training run per model of the course, as ``run(steps)`` under the fake device."""
    from mmcourse.data import collate
    from mmcourse.labs.ch01_overview import build_classifier, train_classifier
    from mmcourse.labs.ch02_representation import (
        bind_modality,
        binding_pairs,
        build_aligner,
        build_bound_encoder,
        labelled_scene_text_pairs,
        train_alignment,
    )
    from mmcourse.labs.ch03_architectures import build_fusion_model, left_of_questions, train_fusion
    from mmcourse.labs.ch05_pretraining import prepare_data, train_albef
    from mmcourse.labs.ch06_applications import train_vqa, vqa_tensors
    from mmcourse.labs.ch07_heterogeneity import build_cure, cure_pairs, train_cure
    from mmcourse.labs.ch07_sparsity import build_small_clip, noisy_scene_text_pairs, train_on_pairs
    from mmcourse.labs.common import scene_text_pairs, train_captioner, train_tiny_clip
    from mmcourse.models.albef import ALBEF
    from mmcourse.models.captioner import Captioner
    from mmcourse.models.clip import build_tiny_clip
    from mmcourse.models.vqa import VQAModel
    from mmcourse.nn.encoders import SmallCNN

    one = ShapesWorld(48, image_size=16, max_objects=1, seed=0, shapes=SHAPES3)
    two = ShapesWorld(48, image_size=16, min_objects=2, max_objects=2, seed=0)
    tok1, tok2 = Tokenizer.from_world(one), Tokenizer.from_world(two)
    batch = collate([one[i] for i in range(48)], tok1, max_len=12)
    labelled = {k: batch[k] for k in ("images", "input_ids", "attention_mask")} | {"labels": one.attribute("color")}
    albef_data = prepare_data(two, tok2, range(32), ("swap_colors",), max_len=12)
    vqa_data = vqa_tensors(two, tok2, indices=range(24), max_len=12)
    captions, _ = tok2.encode(two.captions[:32], max_len=12, start="bos")
    clip_pairs, aligned_pairs = scene_text_pairs(one, tok1), labelled_scene_text_pairs(one, tok1, range(32))
    bound_pairs = binding_pairs(one.images[:32], torch.randn(32, 8))
    cure_data, small_pairs = cure_pairs(one, tok1, list(range(24))), noisy_scene_text_pairs(one, tok1, list(range(16)))

    def albef(steps, objectives):
        torch.manual_seed(0)
        model = ALBEF(tok2.vocab_size, 16, cnn_width=4, dim=16, embed_dim=16, text_depth=1, num_heads=2, max_len=12,
                      mim=True, captioner=True)
        return train_albef(model, albef_data, objectives=objectives, steps=steps, batch_size=8, hard_fraction=0.25,
                           loss_kwargs={"itm_caption_negatives": "itm" in objectives}, device="cuda")

    def cnn():
        return SmallCNN(3, width=4, dim=16, image_size=16)

    return {
        "TinyCLIP": lambda s: train_tiny_clip(build_tiny_clip(tok1.vocab_size, image_size=16), clip_pairs, steps=s,
                                              batch_size=16, device="cuda"),
        "ch.1 classifier": lambda s: train_classifier(build_classifier(tok1, 6, width=4, max_len=12), labelled,
                                                      steps=s, batch_size=8, device="cuda"),
        **{f"ch.2 {k}": (lambda s, k=k: train_alignment(build_aligner(k, tok1.vocab_size, image_size=16),
                                                        aligned_pairs, steps=s, batch_size=8, device="cuda"))
           for k in ("implicit", "explicit", "contrastive")},
        "ch.2 binding": lambda s: bind_modality(build_bound_encoder(cnn(), 8), bound_pairs, steps=s, batch_size=8,
                                                device="cuda"),
        "ch.3 cross fusion": lambda s: train_fusion(
            build_fusion_model("cross", tok2.vocab_size, image_size=16, patch_size=4),
            left_of_questions(two, tok2, list(range(48))), steps=s, batch_size=8, device="cuda"),
        "ALBEF itc+itm+mlm": lambda s: albef(s, ("itc", "itm", "mlm")),
        "ALBEF mim+itg": lambda s: albef(s, ("mim", "itg")),
        "captioner": lambda s: train_captioner(
            Captioner(tok2.vocab_size, cnn(), dim=16, depth=1, num_heads=2, max_len=12),
            {"images": two.images[:32], "caption_ids": captions}, steps=s, batch_size=8, device="cuda"),
        "VQA": lambda s: train_vqa(VQAModel(tok2.vocab_size, cnn(), dim=16, num_heads=2, max_len=12), vqa_data,
                                   scenes=two.images, steps=s, batch_size=8, device="cuda"),
        "ch.7 cross-attention cure": lambda s: train_cure(build_cure("cross_attention", tok1.vocab_size, image_size=16),
                                                          cure_data, steps=s, batch_size=8, device="cuda"),
        "ch.7 small data": lambda s: train_on_pairs(build_small_clip(tok1.vocab_size, image_size=16), small_pairs,
                                                    steps=s, batch_size=8, augment=["shift", "flip"], device="cuda"),
    }


TRAINER_NAMES = ["TinyCLIP", "ch.1 classifier", "ch.2 implicit", "ch.2 explicit", "ch.2 contrastive", "ch.2 binding",
                 "ch.3 cross fusion", "ALBEF itc+itm+mlm", "ALBEF mim+itg", "captioner", "VQA",
                 "ch.7 cross-attention cure", "ch.7 small data"]


@pytest.fixture(scope="module")
def trainers():
    built = _trainers()
    assert sorted(built) == sorted(TRAINER_NAMES)
    return built


@pytest.mark.parametrize("name", TRAINER_NAMES)
def test_training_reads_nothing_back_from_the_device_per_step(trainers, name):
    """A step that reads a value back (``float(loss)``, a NaN check, ``.item()``) makes the CPU wait for the GPU:
    every training run may read a few values in all, however many steps it takes."""
    from fake_cuda import count_syncs

    with fake_cuda():
        with count_syncs() as short:
            trainers[name](2)
        with count_syncs() as longer:
            trainers[name](12)
    assert len(longer) == len(short) <= 6, f"{len(short)} reads in 2 steps, {len(longer)} in 12: {longer}"


def test_hard_negatives_drawn_on_the_device_follow_the_softmax_and_skip_the_positives():
    from mmcourse.objectives.itm import sample_hard_negatives

    similarity = torch.tensor([[5.0, 1.0, 2.0, 0.0], [0.0, 5.0, 0.0, 0.0], [3.0, 0.0, 5.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    groups = torch.tensor([0, 1, 2, 0])  # rows 0 and 3 show the same scene
    generator = torch.Generator().manual_seed(0)
    with fake_cuda():
        sim = similarity.to("cuda")
        draws = torch.stack([sample_hard_negatives(sim, groups.to("cuda"), generator) for _ in range(3000)]).cpu()
    counts = torch.stack([torch.bincount(draws[:, row], minlength=4) for row in range(4)]).float()
    assert counts[0, 0] == counts[0, 3] == counts[1, 1] == counts[2, 2] == counts[3, 3] == counts[3, 0] == 0
    weights = similarity.softmax(dim=1).masked_fill(torch.eye(4, dtype=torch.bool) | (groups[:, None] == groups), 0)
    expected = weights / weights.sum(dim=1, keepdim=True)
    assert (counts / 3000 - expected).abs().max() < 0.04
