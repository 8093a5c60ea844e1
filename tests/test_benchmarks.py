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
