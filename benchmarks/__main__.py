"""Run every ``benchmarks/bench_*.py`` and write ``benchmarks/RESULTS.md`` (+ ``RESULTS.json``).

    python -m benchmarks                  # full run on the CPU (about half an hour; not part of CI)
    python -m benchmarks --quick          # seconds per module; smoke-tested in CI so the scripts never rot
    python -m benchmarks --device cuda    # on a GPU: the device-aware benchmarks -> RESULTS_cuda.md/.json
    python -m benchmarks --render         # rewrite RESULTS.md from RESULTS.json (+ RESULTS_cuda.json)

A module's ``run(quick, device="cpu")`` declares that it can run on another device; only those run with
``--device cuda`` (data generation, grading and memory measurements are CPU matters; the quantization module
measures float16 and torchao's INT8 there instead of torch's CPU-only dynamic INT8).
When ``RESULTS_cuda.json`` sits next to ``RESULTS.json``, ``RESULTS.md`` shows each GPU table under its CPU one.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def modules(only: list[str] | None = None) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if only:
        unknown = sorted(set(only) - {n.removeprefix("bench_") for n in names})
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {unknown}; known: {[n.removeprefix('bench_') for n in names]}")
        names = [n for n in names if n.removeprefix("bench_") in only]
    return names


def machine_info() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def to_markdown(report: dict) -> str:
    lines = [f"### {report['title']}", ""]
    cols = report["columns"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for row in report["rows"]:
        cells = []
        for c in cols:
            v = row.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("notes"):
        lines += ["", report["notes"]]
    return "\n".join(lines) + "\n"


def accepts_device(run) -> bool:
    return "device" in inspect.signature(run).parameters


def render(results: dict, gpu_results: dict | None = None) -> str:
    """RESULTS.md: machine, then every report (and its GPU twin, when there is one)."""
    md = ["# Benchmark results", "", "Machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()), ""]
    if results.get("preface"):  # how the tables were assembled, when they come from several runs
        md += [results["preface"], ""]
    if gpu_results:
        gpu_machine = ", ".join(f"{k} {v}" for k, v in gpu_results["machine"].items())
        md += [f"GPU tables (marked GPU) come from a separate run on: {gpu_machine}", ""]
    for name, report in results["reports"].items():
        md.append(to_markdown(report))
        if gpu_results and name in gpu_results["reports"]:
            gpu_report = dict(gpu_results["reports"][name])
            gpu_report["title"] = "GPU — " + gpu_report["title"]
            md.append(to_markdown(gpu_report))
    if results["errors"]:
        md += ["## Errors", ""] + [f"- {k}: {v.splitlines()[0][:300]} (full text in the JSON)"
                                   for k, v in results["errors"].items()]
    return "\n".join(md)


def save(results: dict, out_dir: Path) -> None:
    """Write RESULTS[_quick][_device].json and .md (after every module, so an interrupted run keeps its tables)."""
    suffix = ("_quick" if results["quick"] else "") + ("" if results["device"] == "cpu" else f"_{results['device']}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"RESULTS{suffix}.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    gpu = out_dir / "RESULTS_cuda.json"
    gpu_results = json.loads(gpu.read_text(encoding="utf-8")) if suffix == "" and gpu.exists() else None
    (out_dir / f"RESULTS{suffix}.md").write_text(render(results, gpu_results), encoding="utf-8")


def run_all(quick: bool, only: list[str] | None = None, out_dir: Path = HERE, device: str = "cpu",
            show: bool = False) -> dict:
    results = {"machine": machine_info(), "quick": quick, "device": device, "reports": {}, "errors": {}}
    sys.path.insert(0, str(HERE.parent))
    for name in modules(only):
        start = time.perf_counter()
        try:
            run = importlib.import_module(f"benchmarks.{name}").run
            if device != "cpu" and not accepts_device(run):
                continue
            report = run(quick=quick, device=device) if accepts_device(run) else run(quick=quick)
        except Exception as exc:  # one broken benchmark must not hide the others
            message = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(exc).__name__}: {exc}")
            results["errors"][name] = message if len(message) < 2000 else message[:1000] + " … " + message[-1000:]
            print(f"{name}: FAILED {message.splitlines()[0][:200]}", flush=True)
            continue
        report["seconds"] = round(time.perf_counter() - start, 1)
        results["reports"][name] = report
        print(f"{name}: done in {report['seconds']} s", flush=True)
        if show:
            print(to_markdown(report), flush=True)
        save(results, out_dir)
    save(results, out_dir)
    return results


def render_saved(out_dir: Path = HERE) -> None:
    results = json.loads((out_dir / "RESULTS.json").read_text(encoding="utf-8"))
    gpu = out_dir / "RESULTS_cuda.json"
    gpu_results = json.loads(gpu.read_text(encoding="utf-8")) if gpu.exists() else None
    (out_dir / "RESULTS.md").write_text(render(results, gpu_results), encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds per module")
    parser.add_argument("--only", nargs="*", help="run only these (e.g. attention retrieval)")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: runs the device-aware benchmarks")
    parser.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from the saved JSON files")
    parser.add_argument("--print", action="store_true", dest="show", help="also print each table as it is done")
    args = parser.parse_args(argv)
    if args.render:
        render_saved(args.out_dir)
        return 0
    results = run_all(args.quick, args.only, args.out_dir, args.device, args.show)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
