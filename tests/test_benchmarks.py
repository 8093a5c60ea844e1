"""Smoke test: every benchmark runs in --quick mode and the report is written, so the scripts never rot."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmarks_run_and_write_a_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out-dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "RESULTS_quick.json").read_text())
    expected = {p.stem for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert set(results["reports"]) == expected and not results["errors"]
    markdown = (tmp_path / "RESULTS_quick.md").read_text()
    for report in results["reports"].values():
        assert report["rows"], report["title"]
        assert report["title"] in markdown


def test_render_keeps_the_preface_and_pairs_gpu_tables():
    sys.path.insert(0, str(ROOT))
    from benchmarks.__main__ import render

    report = {"title": "T", "columns": ["a"], "rows": [{"a": 1.5}]}
    cpu = {"machine": {"cpu_count": 2}, "reports": {"bench_x": report}, "errors": {}, "preface": "Assembled from runs."}
    gpu = {"machine": {"cuda": "G"}, "reports": {"bench_x": report | {"rows": [{"a": 0.5}]}}, "errors": {}}
    markdown = render(cpu, gpu)
    assert "Assembled from runs." in markdown
    assert markdown.index("### T") < markdown.index("### GPU — T")
    assert "| 0.5 |" in markdown and "| 1.5 |" in markdown
    assert "Assembled" not in render(cpu | {"preface": ""})


def test_accelerator_precision_table_runs_on_any_device():
    """The GPU table's code runs here on the CPU (quick: a tiny HF CLIP), so a GPU session finds it working."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_quantization import ACCELERATOR_COLUMNS, accelerator_table

    report = accelerator_table(quick=True, device="cpu")
    rows = {row["path"]: row for row in report["rows"]}
    assert set(rows) == {"fp32", "fp16", "torchao int8 weight-only", "torchao int8 dynamic"}
    assert report["columns"] == ACCELERATOR_COLUMNS
    assert rows["fp32"]["image_cos"] == 1.0 and rows["fp32"]["size_x"] == 1.0
    assert rows["fp16"]["image_cos"] > 0.999 and 1.8 < rows["fp16"]["size_x"] < 2.1
    for path in ("torchao int8 weight-only", "torchao int8 dynamic"):
        try:
            import torchao  # noqa: F401
        except ImportError:
            assert rows[path]["size_mb"].startswith("not run: ImportError")
        else:
            assert rows[path]["image_cos"] > 0.99 and rows[path]["image_b8_ms"] > 0


def test_attribute_probe_targets_and_scores_are_the_scenes_sets():
    """The probe's labels are each scene's colours and shapes, and a scene scores only when its whole set is right."""
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_attribute_probe import _exact_sets, attribute_targets
    from mmcourse.data import COLORS, SHAPES, ShapesWorld

    world = ShapesWorld(30, image_size=16, min_objects=1, max_objects=2, seed=3)
    colours, shapes = attribute_targets(world)
    for i in range(len(world)):
        objects = world.objects(i)
        assert {COLORS[j] for j in colours[i].nonzero().flatten().tolist()} == {o["color"] for o in objects}
        assert {SHAPES[j] for j in shapes[i].nonzero().flatten().tolist()} == {o["shape"] for o in objects}
    logits = shapes * 2 - 1
    assert _exact_sets(logits, shapes) == 1.0
    logits[0, (shapes[0] == 0).nonzero()[0]] = 1.0  # one extra shape in the first scene's prediction
    assert abs(_exact_sets(logits, shapes) - (len(world) - 1) / len(world)) < 1e-6
    assert _exact_sets(torch.zeros_like(shapes) - 1, shapes) == 0.0
