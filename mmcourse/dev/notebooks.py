"""Maintainer tools for the chapter notebooks: execute them reproducibly, check stored outputs, stamp Colab cells.

Stored outputs are a promise to the student, re-checked by ``pytest`` through nbval. They are produced by one
command, always in the same *reference environment* (CPU only, one thread, offline, fixed hash seed, the CPU pins
of :data:`CPU_PINS`), so that a second run — on any x86-64 processor with AVX2 or newer — gives the same numbers.
Each notebook records the platform it was executed on; the tests compare every output there and the claim lines
elsewhere (:mod:`mmcourse.dev.nbcheck`)::

    python -m mmcourse.dev.notebooks execute                 # every notebook under notebooks/, in place
    python -m mmcourse.dev.notebooks execute --check         # which notebooks' stored outputs would change?
    python -m mmcourse.dev.notebooks execute --check --imitate ATEN_CPU_CAPABILITY=default   # ... on an older CPU?
    python -m mmcourse.dev.notebooks execute --imitate ATEN_CPU_CAPABILITY=default --out-dir /tmp/old-cpu
    python -m mmcourse.dev.notebooks stamp                   # write the Colab badge + setup cell into every notebook
    python -m mmcourse.dev.notebooks stamp --check           # fail if a notebook's badge/setup cell is out of sync

The same commands are available as ``mmcourse notebooks ...``.
"""

from __future__ import annotations

import argparse
import configparser
import copy
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "REFERENCE_ENV", "CPU_PINS", "SETUP_MARKER", "BADGE_IMAGE", "REPO_ROOT", "NOTEBOOK_DIR", "SANITIZE_FILE",
    "repository_url", "badge_source", "setup_source", "stamp_notebook", "stamp_problems", "chapter_notebooks",
    "read_notebook", "write_notebook", "current_env_kernel_manager", "reference_env", "execute_notebook",
    "PLATFORM_KEY", "MODE_VARIABLE", "CHECK_MODES", "platform_fingerprint", "platform_in", "reference_platform",
    "stored_platform", "check_mode", "COMPARED_MIME", "sanitize_patterns", "sanitize", "comparable_outputs",
    "output_differences", "cmd_execute", "cmd_stamp", "add_parser", "main",
]

#: Environment every stored output is produced in (and that the nbval tests run in, see conftest.py).
REFERENCE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONWARNINGS": "default",
    "CUDA_VISIBLE_DEVICES": "",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "TQDM_MININTERVAL": "1",
}

#: The CPU pins of the reference environment: with them, training gives the same bits on every x86-64 processor
#: with AVX2 or newer (Intel or AMD, with or without AVX-512). PyTorch's own kernels use their AVX2 versions
#: (``ATEN_CPU_CAPABILITY``), oneDNN (convolutions, GELU) its AVX2 code (``ONEDNN_MAX_CPU_ISA``), and MKL (matrix
#: products) its code path that gives the same results on every x86 processor (``MKL_CBWR=COMPATIBLE``; ``AVX2``
#: is honoured on Intel processors only). Two more sources of processor-dependent bits are avoided in the code, not
#: here: the unfused AdamW's and ``torch.sqrt``'s square root (see :func:`mmcourse.train.fused_adamw`).
#: A value already set in the environment wins in the tests (``ATEN_CPU_CAPABILITY=default pytest`` imitates an older
#: processor); ``execute`` always uses these.
CPU_PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE",
}

#: Cells 0 and 1 of every chapter notebook are owned by :func:`stamp_notebook`.
SETUP_MARKER = "# NBVAL_SKIP"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
SANITIZE_FILE = REPO_ROOT / "tests" / "sanitize.cfg"


# ----------------------------------------------------------------------------------------------------------------
# The repository URL: one place (pyproject's [project.urls] Repository), stamped into every notebook.
# ----------------------------------------------------------------------------------------------------------------
def repository_url() -> str:
    """The course repository URL from ``pyproject.toml`` (``[project.urls] Repository``)."""
    pyproject = REPO_ROOT / "pyproject.toml"
    if pyproject.exists():
        text = pyproject.read_text(encoding="utf-8")
        try:
            import tomllib

            url = tomllib.loads(text)["project"]["urls"]["Repository"]
        except ModuleNotFoundError:  # Python 3.10: no tomllib
            match = re.search(r'^Repository\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
            url = match.group(1) if match else None
        if url:
            return url.rstrip("/")
    from importlib.metadata import metadata

    for entry in metadata("mmcourse").get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip() == "Repository":
            return url.strip().rstrip("/")
    raise RuntimeError("no Repository URL found in pyproject.toml or the installed package metadata")


def _github_path(url: str) -> str:
    match = re.match(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?$", url)
    if not match:
        raise ValueError(f"Repository URL must look like https://github.com/OWNER/NAME, got {url!r}")
    return match.group(1)


def badge_source(notebook_relpath: str, url: str) -> str:
    """Markdown of the 'Open in Colab' badge for a notebook at ``notebook_relpath`` in the repository."""
    colab = f"https://colab.research.google.com/github/{_github_path(url)}/blob/main/{notebook_relpath}"
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab})"


def setup_source(url: str) -> str:
    """Source of the setup cell: installs the course package on Colab only, does nothing elsewhere."""
    return (
        f"{SETUP_MARKER}\n"
        "# Colab only: install the course package (this cell does nothing on your own machine).\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        "try:\n"
        "    import google.colab  # noqa: F401\n"
        "\n"
        "    IN_COLAB = True\n"
        "except ImportError:\n"
        "    IN_COLAB = False\n"
        "if IN_COLAB:\n"
        f'    package = "mmcourse @ git+{url}"\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)'
    )


def _is_badge_cell(cell) -> bool:
    return cell.cell_type == "markdown" and BADGE_IMAGE in cell.source


def _is_setup_cell(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith(SETUP_MARKER)


def stamp_notebook(nb, notebook_relpath: str, url: str) -> bool:
    """Make cells 0/1 of ``nb`` the badge and the setup cell; return True if anything changed."""
    import nbformat

    changed = False
    badge = badge_source(notebook_relpath, url)
    if nb.cells and _is_badge_cell(nb.cells[0]):
        if nb.cells[0].source != badge:
            nb.cells[0].source, changed = badge, True
    else:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(badge))
        changed = True
    setup = setup_source(url)
    if len(nb.cells) > 1 and _is_setup_cell(nb.cells[1]):
        if nb.cells[1].source != setup:
            nb.cells[1].source, changed = setup, True
    else:
        nb.cells.insert(1, nbformat.v4.new_code_cell(setup))
        changed = True
    return changed


def stamp_problems(nb, notebook_relpath: str, url: str) -> list[str]:
    """What is out of sync in ``nb``'s badge and setup cell (empty list: in sync)."""
    problems = []
    if not nb.cells or not _is_badge_cell(nb.cells[0]):
        problems.append("cell 0 is not the Colab badge")
    elif nb.cells[0].source != badge_source(notebook_relpath, url):
        problems.append("the Colab badge points to the wrong URL")
    if len(nb.cells) < 2 or not _is_setup_cell(nb.cells[1]):
        problems.append("cell 1 is not the setup cell")
    elif nb.cells[1].source != setup_source(url):
        problems.append("the setup cell is out of date")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# Reading, writing, executing
# ----------------------------------------------------------------------------------------------------------------
def chapter_notebooks(paths: Sequence[str | Path] | None = None) -> list[Path]:
    """The notebooks named by ``paths`` (files or folders), or every notebook under ``notebooks/``."""
    if not paths:
        paths = [NOTEBOOK_DIR]
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(q for q in p.glob("*.ipynb") if ".ipynb_checkpoints" not in q.parts))
        elif p.suffix == ".ipynb" and p.exists():
            found.append(p)
        else:
            raise ValueError(f"expected a notebook (.ipynb) or a folder of notebooks, got {str(p)!r}")
    return found


def read_notebook(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def write_notebook(nb, path: Path) -> None:
    """Write ``nb`` atomically (temp file + rename), so an interrupted run never leaves half a notebook."""
    import nbformat

    nbformat.validate(nb)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        os.chmod(tmp, mode)  # mkstemp creates 0600; keep the notebook readable as before
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_env_kernel_manager():
    """A kernel manager whose Python kernel is *this* interpreter (the venv), whatever kernelspecs exist."""
    import ipykernel.kernelspec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    class _CurrentEnvSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return self.kernel_spec_class(
                resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict()
            )

    return KernelManager(kernel_name="python3", kernel_spec_manager=_CurrentEnvSpecs())


def reference_env(allow_gpu: bool = False, imitate: dict[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` plus :data:`REFERENCE_ENV` and :data:`CPU_PINS` (without hiding GPUs when ``allow_gpu``), then
    ``imitate``: variables that imitate another platform, e.g. ``{"ATEN_CPU_CAPABILITY": "default"}``."""
    env = {**os.environ, **REFERENCE_ENV, **CPU_PINS, **(imitate or {})}
    if allow_gpu:
        env.pop("CUDA_VISIBLE_DEVICES")
    return env


def execute_notebook(nb, cwd: Path, *, timeout: int = 600, allow_gpu: bool = False, platform: dict | None = None,
                     imitate: dict[str, str] | None = None):
    """Run every cell of ``nb`` top to bottom in a fresh kernel of this environment; return ``nb`` (updated).

    ``platform`` (from :func:`reference_platform`) is recorded in the notebook's metadata, so the tests know where
    its outputs were made; without it the notebook's record is left as it was."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        km=current_env_kernel_manager(),
        timeout=timeout,
        resources={"metadata": {"path": str(cwd)}},
        record_timing=False,
        store_widget_state=True,
    )
    client.execute(env=reference_env(allow_gpu, imitate), cwd=str(cwd))
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    if platform is not None:
        nb.metadata.setdefault("mmcourse", {})[PLATFORM_KEY] = dict(platform)
    return nb


# ----------------------------------------------------------------------------------------------------------------
# The platform stored outputs were made on, and what a test run on another platform checks
# ----------------------------------------------------------------------------------------------------------------
#: Where ``execute`` records the platform in a notebook: ``nb.metadata["mmcourse"]["reference_platform"]``.
PLATFORM_KEY = "reference_platform"
#: Forces the check mode of the notebook tests: ``exact`` or ``claims`` (unset: decided per notebook).
MODE_VARIABLE = "MMCOURSE_NOTEBOOK_CHECK"
CHECK_MODES = ("exact", "claims")


def platform_fingerprint() -> dict[str, str]:
    """What decides the bits of the course's training runs on this machine, *in this process's environment*.

    Call it after the environment is set (the CPU pins are read when torch first runs a kernel). Fields: the machine
    (``x86_64``, ``arm64``, ...), the CPU kernels torch uses (``AVX2`` under :data:`CPU_PINS` on every x86-64
    processor that has AVX2), the CPU pins themselves, the accelerator a notebook would train on, and the versions of
    Python, torch, numpy and transformers.
    """
    import platform
    from importlib.metadata import version

    import torch

    if torch.cuda.is_available():
        accelerator = "cuda"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        accelerator = "mps"
    else:
        accelerator = "none"
    return {
        "machine": platform.machine(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "cpu_pins": " ".join(f"{key}={os.environ.get(key, '')}" for key in CPU_PINS),
        "accelerator": accelerator,
        "python": ".".join(platform.python_version_tuple()[:2]),
        "torch": torch.__version__,
        "numpy": version("numpy"),
        "transformers": version("transformers"),
    }


def platform_in(env: dict[str, str]) -> dict[str, str]:
    """:func:`platform_fingerprint` of a fresh interpreter started with the environment ``env``."""
    import subprocess

    code = (
        "import json; from mmcourse.dev.notebooks import platform_fingerprint; "
        "print(json.dumps(platform_fingerprint()))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def reference_platform(allow_gpu: bool = False, imitate: dict[str, str] | None = None) -> dict[str, str]:
    """:func:`platform_fingerprint` as a notebook kernel of :func:`execute_notebook` sees it."""
    return platform_in(reference_env(allow_gpu, imitate))


def stored_platform(nb) -> dict[str, str] | None:
    """The platform recorded in ``nb`` (a notebook, or its JSON as a dict) by ``execute``, or None."""
    return (nb.get("metadata", {}).get("mmcourse") or {}).get(PLATFORM_KEY)


def check_mode(stored: dict | None, current: dict, forced: str | None = None) -> tuple[str, str]:
    """Which check a test run makes of a notebook's stored outputs, and why.

    ``exact`` compares every output (sanitized); ``claims`` compares only the claim lines (:mod:`mmcourse.labs.common`),
    exceptions, and what is left of each output once everything else is removed. Exact where the current platform
    is the one the outputs were made on, claims elsewhere; ``forced`` (the :data:`MODE_VARIABLE` value) overrides.

    Returns:
        ``(mode, reason)``, e.g. ``("claims", "torch 2.14.0 here, 2.13.0+cpu in the outputs")``.
    """
    if forced:
        if forced not in CHECK_MODES:
            raise ValueError(f"{MODE_VARIABLE} must be one of {CHECK_MODES} or unset, got {forced!r}")
        return forced, f"forced by {MODE_VARIABLE}={forced}"
    if not stored:
        return "claims", "the notebook records no reference platform"
    differences = [f"{key} {current.get(key)!r} here, {stored.get(key)!r} in the outputs"
                   for key in sorted(set(stored) | set(current)) if stored.get(key) != current.get(key)]
    if differences:
        return "claims", "; ".join(differences)
    return "exact", "same platform as the stored outputs"


# ----------------------------------------------------------------------------------------------------------------
# Comparing outputs the way nbval does (sanitized text, stdout/stderr; PNG and widget views are not compared)
# ----------------------------------------------------------------------------------------------------------------
COMPARED_MIME = ("text/plain", "text/html", "text/latex", "text/markdown", "image/svg+xml", "application/json")


def sanitize_patterns(path: Path = SANITIZE_FILE) -> list[tuple[str, str]]:
    """The ``(regex, replace)`` pairs of the nbval sanitize file, in order."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    return [(parser[s]["regex"], parser[s]["replace"]) for s in parser.sections()]


def sanitize(text: str, patterns: Iterable[tuple[str, str]]) -> str:
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    return text


def comparable_outputs(nb, patterns) -> list[list[str]]:
    """Per code cell, the sanitized outputs nbval would compare (streams merged by nbval's own rule)."""
    from nbval.plugin import coalesce_streams

    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.source.startswith(SETUP_MARKER):
            continue
        outs = []
        for out in coalesce_streams(copy.deepcopy(cell.get("outputs", []))):  # merged in place: work on a copy
            if out.output_type == "stream":
                outs.append(f"{out.name}: " + sanitize(out.text, patterns))
            elif out.output_type in ("display_data", "execute_result"):
                for mime in COMPARED_MIME:
                    if mime in out.data:
                        data = out.data[mime]
                        data = data if isinstance(data, str) else json.dumps(data, sort_keys=True)
                        outs.append(f"{mime}: " + sanitize(data, patterns))
            elif out.output_type == "error":
                outs.append(f"error: {out.ename}: {out.evalue}")
        cells.append(outs)
    return cells


def output_differences(stored, fresh, patterns) -> list[str]:
    """Human-readable list of cells whose compared outputs differ between two runs of a notebook."""
    diffs = []
    a, b = comparable_outputs(stored, patterns), comparable_outputs(fresh, patterns)
    if len(a) != len(b):
        return [f"number of code cells differs: {len(a)} stored vs {len(b)} now"]
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            first = next((f"{p!r} -> {q!r}" for p, q in zip(x, y) if p != q), f"{len(x)} vs {len(y)} outputs")
            diffs.append(f"code cell {i}: {first[:300]}")
    return diffs


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def _relpath(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.name


def _parse_imitate(pairs: Sequence[str]) -> dict[str, str]:
    imitate = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--imitate takes NAME=VALUE, got {pair!r}")
        imitate[key] = value
    return imitate


def cmd_execute(args) -> int:
    patterns = sanitize_patterns() if args.check else []
    imitate = _parse_imitate(args.imitate)
    if imitate and not (args.check or args.out_dir):
        print("--imitate runs on another platform than the reference: give --out-dir or --check, the stored outputs "
              "stay as they are")
        return 2
    platform = reference_platform(args.allow_gpu, imitate)
    print("platform:", ", ".join(f"{key} {value}" for key, value in platform.items()))
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in chapter_notebooks(args.paths):
        nb = read_notebook(path)
        fresh = read_notebook(path)
        start = time.perf_counter()
        try:
            execute_notebook(fresh, path.parent, timeout=args.timeout, allow_gpu=args.allow_gpu, platform=platform,
                             imitate=imitate)
        except Exception as exc:  # a failing cell: report it, never write a half-run notebook
            failures += 1
            print(f"FAILED  {_relpath(path)}: {type(exc).__name__}: {str(exc).splitlines()[-1][:300]}")
            continue
        seconds = time.perf_counter() - start
        if args.check:
            diffs = output_differences(nb, fresh, patterns)
            status = "changed" if diffs else "same"
            failures += bool(diffs)
            print(f"{status:8s}{_relpath(path)}  ({seconds:.1f} s)")
            for d in diffs:
                print(f"        {d}")
        else:
            target = out_dir / path.name if out_dir is not None else path
            write_notebook(fresh, target)
            print(f"wrote   {_relpath(target)}  ({seconds:.1f} s)")
    return 1 if failures else 0


def cmd_stamp(args) -> int:
    url = repository_url()
    problems = 0
    for path in chapter_notebooks(args.paths):
        nb = read_notebook(path)
        rel = _relpath(path)
        if args.check:
            for p in stamp_problems(nb, rel, url):
                problems += 1
                print(f"{rel}: {p}")
        elif stamp_notebook(nb, rel, url):
            write_notebook(nb, path)
            print(f"stamped {rel}")
    if args.check and not problems:
        print("all notebooks in sync with", url)
    return 1 if problems else 0


def add_parser(subparsers) -> None:
    """Register ``notebooks execute|stamp`` on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser("notebooks", help="execute / check / stamp the chapter notebooks")
    _fill_parser(parser)


def _fill_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    ex = sub.add_parser("execute", help="execute notebooks in place in the reference environment")
    ex.add_argument("paths", nargs="*", help="notebooks or folders (default: notebooks/)")
    ex.add_argument("--check", action="store_true", help="do not write; report notebooks whose outputs change")
    ex.add_argument("--timeout", type=int, default=600, help="per-cell timeout in seconds (default 600)")
    ex.add_argument("--allow-gpu", action="store_true", help="let notebooks see a GPU (never for stored outputs)")
    ex.add_argument("--out-dir", help="write the executed notebooks into this folder instead of in place")
    ex.add_argument("--imitate", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable that imitates another platform, e.g. ATEN_CPU_CAPABILITY=default "
                         "(repeatable; needs --out-dir or --check)")
    ex.set_defaults(func=cmd_execute)
    st = sub.add_parser("stamp", help="write the Colab badge and setup cell into notebooks")
    st.add_argument("paths", nargs="*", help="notebooks or folders (default: notebooks/)")
    st.add_argument("--check", action="store_true", help="do not write; fail if any notebook is out of sync")
    st.set_defaults(func=cmd_stamp)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmcourse.dev.notebooks", description=__doc__.splitlines()[0])
    _fill_parser(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
