"""Packaging promises: light import, no exact pins, a valid conda env, README commands CI really runs."""

import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

import mmcourse

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_matches_metadata():
    assert mmcourse.__version__ == PYPROJECT["project"]["version"]


def test_import_is_light():
    heavy = "('torch', 'transformers', 'matplotlib', 'ipywidgets')"
    code = f"import sys, mmcourse; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_exact_pins_and_no_torchvision():
    deps = PYPROJECT["project"]["dependencies"] + sum(PYPROJECT["project"]["optional-dependencies"].values(), [])
    for dep in deps:
        assert "==" not in dep, f"exact pin in package metadata: {dep}"
        assert not dep.startswith("torchvision"), "the course must not need torchvision"
    names = {re.split(r"[<>=!~\[ ;]", d)[0] for d in PYPROJECT["project"]["dependencies"]}
    assert {"torch", "transformers", "matplotlib", "ipywidgets", "tqdm", "numpy"} <= names
    dev = {re.split(r"[<>=!~\[ ;]", d)[0] for d in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert {"jupyterlab", "nbval", "nbclient", "nbformat", "pytest", "pytest-xdist", "ruff", "ipykernel"} <= dev


def test_environment_yml_creates_the_course_env():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "mmcourse"
    assert "python=3.11" in env["dependencies"]
    assert "pip" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert any(re.fullmatch(r"-e \.(\[dev\])?|\.\[dev\]|-e \"?\.\[dev\]\"?", p) for p in pip_section), pip_section


def _readme_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- (open|test)-command -->\s*```(?:bash|sh)?\n(.*?)\n```", readme, flags=re.S)
    return dict(blocks)


def test_readme_has_exactly_two_one_line_setup_commands():
    commands = _readme_commands()
    assert set(commands) == {"open", "test"}
    for name, cmd in commands.items():
        assert "\n" not in cmd.strip(), f"the {name} command must be one line: {cmd!r}"
        assert 'pip install -e ".[dev]"' in cmd, cmd
    assert "jupyter lab" in commands["open"]
    assert "pytest" in commands["test"]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in ci and "README.md" in ci, ".ci/run must extract and run the README's test command"
    assert "HF_HUB_OFFLINE=1" in ci


def _reference_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return dict(p.split("==") for p in pip_section if "==" in p)


def test_ci_installs_the_reference_environment():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "environment.yml" in ci, ".ci/run must install environment.yml's versions (the reference environment)"
    assert {"torch", "numpy", "transformers", "nbval"} <= set(_reference_pins())


def test_stored_outputs_were_made_in_the_reference_environment():
    """Each chapter records the platform it was executed on; it must be environment.yml's versions on x86-64 with
    the AVX2 pins, or the exact check would only pass on the maintainer's own machine."""
    import json

    from mmcourse.dev.notebooks import CPU_PINS, stored_platform

    pins = _reference_pins()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        platform = stored_platform(json.loads(path.read_text(encoding="utf-8")))
        assert platform, f"{path.name} records no platform: run python -m mmcourse.dev.notebooks execute"
        assert platform["torch"].split("+")[0] == pins["torch"], (path.name, platform["torch"])
        assert platform["numpy"] == pins["numpy"] and platform["transformers"] == pins["transformers"], path.name
        assert platform["python"] == "3.11" and platform["machine"] == "x86_64" and platform["cpu_kernels"] == "AVX2"
        assert platform["cpu_pins"] == " ".join(f"{k}={v}" for k, v in CPU_PINS.items()), path.name
        assert platform["accelerator"] == "none", path.name


def test_setup_is_deterministic_and_returns_a_device():
    import torch

    device = mmcourse.setup(123)
    a = torch.rand(3)
    mmcourse.setup(123)
    b = torch.rand(3)
    assert torch.equal(a, b) and isinstance(device, torch.device)
    assert mmcourse.setup(0, device="cpu") == torch.device("cpu")


def test_setup_rejects_bad_seeds():
    import pytest

    for bad in (-1, 1.5, "0", True):
        with pytest.raises(ValueError, match="seed"):
            mmcourse.setup(bad)
