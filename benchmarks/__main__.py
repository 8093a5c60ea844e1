"""Run every ``benchmarks/bench_*.py`` and write ``benchmarks/RESULTS.md`` (+ ``RESULTS.json``).

    python -m benchmarks            # full run (minutes; not part of CI)
    python -m benchmarks --quick    # seconds per module; smoke-tested in CI so the scripts never rot
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
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


def run_all(quick: bool, only: list[str] | None = None, out_dir: Path = HERE) -> dict:
    results = {"machine": machine_info(), "quick": quick, "reports": {}, "errors": {}}
    sys.path.insert(0, str(HERE.parent))
    for name in modules(only):
        start = time.perf_counter()
        try:
            report = importlib.import_module(f"benchmarks.{name}").run(quick=quick)
        except Exception as exc:  # one broken benchmark must not hide the others
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)
            continue
        report["seconds"] = round(time.perf_counter() - start, 1)
        results["reports"][name] = report
        print(f"{name}: done in {report['seconds']} s", flush=True)
    suffix = "_quick" if quick else ""
    md = ["# Benchmark results", "", "Machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()), ""]
    md += [to_markdown(r) for r in results["reports"].values()]
    if results["errors"]:
        md += ["## Errors", ""] + [f"- {k}: {v}" for k, v in results["errors"].items()]
    (out_dir / f"RESULTS{suffix}.md").write_text("\n".join(md), encoding="utf-8")
    (out_dir / f"RESULTS{suffix}.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds per module")
    parser.add_argument("--only", nargs="*", help="run only these (e.g. attention retrieval)")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args(argv)
    results = run_all(args.quick, args.only, args.out_dir)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
