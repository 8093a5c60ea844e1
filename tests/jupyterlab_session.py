"""A JupyterLab server and a headless Chromium page driven the way a student uses them (for ``test_browser.py``).

:class:`LabServer` starts JupyterLab as a subprocess on a free localhost port, with a token, in a temporary root
and with temporary Jupyter config, data, runtime, settings and workspace folders (the user's own are never read or
written); the kernels are this interpreter (``python`` in the kernel spec is ``sys.executable``), so ``mmcourse``
is importable. :class:`Notebook` opens a notebook in a page, runs it from the *Run* menu as a student does, and
waits until JupyterLab shows no cell queued or running. Everything here is bounded in time and fails with a message
that says what it waited for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil

#: Where the test looks for a browser, first hit wins: ``$MMCOURSE_CHROMIUM``, then these names on ``PATH``.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Headless Chromium on a machine that may have no network: without the background-networking flags Chromium's own
#: connections (updates, sync, field trials) are refused and logged; QUIC and the GPU are not needed.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: JupyterLab's own notifications that could cover the notebook: no news, no update check.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


#: JavaScript: the current notebook's code cells, from JupyterLab's cell models (independent of which cells the
#: page has rendered); a queued cell is "running" too.
PROGRESS = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(cell => cell.model.type === 'code');
    const errors = [], stderr = [];
    cells.forEach((cell, index) => cell.model.outputs.toJSON().forEach(output => {
        if (output.output_type === 'error') errors.push(`code cell ${index + 1}: ${output.ename}: ${output.evalue}`);
        if (output.output_type === 'stream' && output.name === 'stderr') {
            const text = Array.isArray(output.text) ? output.text.join('') : output.text;
            stderr.push(`code cell ${index + 1}: ${text.slice(0, 1000)}`);
        }
    }));
    const session = panel.sessionContext.session;
    return {
        total: cells.length,
        running: cells.filter(cell => cell.model.executionState === 'running').length,
        ran: cells.filter(cell => cell.model.executionCount !== null).length,
        errors,
        stderr,
        kernel: session && session.kernel ? session.kernel.status : 'no kernel',
    };
}"""


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable to drive: ``$MMCOURSE_CHROMIUM`` if set, else the first on ``PATH``."""
    chosen = os.environ.get("MMCOURSE_CHROMIUM")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabServer:
    """JupyterLab serving ``root`` on ``127.0.0.1``; a context manager that always stops it and its kernels."""

    def __init__(self, root: Path, home: Path, env: dict[str, str], start_timeout: float = 90.0):
        self.root, self.home = Path(root), Path(home)
        self.port, self.token = free_port(), uuid.uuid4().hex
        self.log_path = self.home / "jupyterlab.log"
        self.env = dict(env)
        for name, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                          ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                          ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")]:
            (self.home / sub).mkdir(parents=True, exist_ok=True)
            self.env[name] = str(self.home / sub)
        for relative, values in LAB_SETTINGS.items():
            path = self.home / "settings" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def __enter__(self) -> LabServer:
        command = [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: the test reads cell states from it
            "--allow-root",  # CI containers run as root
        ]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(command, cwd=self.root, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not answer on {self.base_url} within {self.start_timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __exit__(self, *_exc) -> None:
        if self.process is None:
            return
        try:
            processes = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            processes = []
        # the kernels run in sessions of their own: shut them down through the server, then stop the server
        try:
            request = urllib.request.Request(self.url("api/sessions"))
            with urllib.request.urlopen(request, timeout=10) as response:
                sessions = json.load(response)
            for session in sessions:
                delete = urllib.request.Request(self.url(f"api/sessions/{session['id']}"), method="DELETE")
                urllib.request.urlopen(delete, timeout=30).close()
        except (OSError, ValueError):
            pass
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        gone, alive = psutil.wait_procs(processes, timeout=10)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        self._log.close()
        self.process = None


class Notebook:
    """One notebook open in a JupyterLab page."""

    def __init__(self, page, server: LabServer, name: str):
        self.page, self.server, self.name = page, server, name

    def open(self, timeout: float = 90.0) -> Notebook:
        self.page.goto(self.server.url(f"lab/tree/{self.name}"), timeout=timeout * 1000)
        self.page.wait_for_function(
            """name => {
                const app = window.jupyterapp;
                const widget = app && app.shell.currentWidget;
                return !!(widget && widget.context && widget.context.path.endsWith(name)
                          && widget.sessionContext.session && widget.sessionContext.session.kernel
                          && widget.sessionContext.session.kernel.status === 'idle');
            }""",
            arg=self.name, timeout=timeout * 1000, polling=500,
        )
        return self

    def progress(self) -> dict:
        """The open notebook's code cells as JupyterLab's models see them: how many are queued or running, how many
        have run, the errors they show, and the kernel's status."""
        return self.page.evaluate(PROGRESS)

    def menu(self, menu: str, item: str) -> None:
        """Click ``menu`` in the menu bar, then its item labelled ``item``."""
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{re.escape(menu)}$")).click()
        self.page.locator(".lm-MenuBar-menu .lm-Menu-item").filter(
            has=self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$"))).click()

    def save(self, timeout: float = 30.0) -> None:
        """*File → Save Notebook*, then wait until the notebook is no longer marked modified."""
        self.menu("File", "Save Notebook")
        self.page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty",
                                    timeout=timeout * 1000, polling=250)

    def run_all(self, timeout: float) -> float:
        """*Run → Run All Cells*, then wait until no cell is queued or running; returns the seconds it took.

        Fails as soon as a cell shows an error, if a cell is left without running, and if a cell wrote to stderr (a
        warning in a student's notebook is a defect, as in the stored outputs)."""
        start = time.monotonic()
        self.menu("Run", "Run All Cells")
        deadline = start + timeout
        started = False
        while True:
            state = self.progress()
            if state["errors"]:
                raise AssertionError(f"{self.name}: a cell failed during Run All:\n" + "\n".join(state["errors"]))
            started = started or state["running"] > 0
            if started and state["running"] == 0 and state["kernel"] == "idle":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: Run All did not finish within {timeout:.0f} s ({state['running']} "
                                   f"of {state['total']} code cells still queued or running, kernel "
                                   f"{state['kernel']})")
            time.sleep(0.5)
        if state["ran"] != state["total"]:
            raise AssertionError(f"{self.name}: Run All ran {state['ran']} of {state['total']} code cells")
        if state["stderr"]:
            raise AssertionError(f"{self.name}: cells wrote to stderr:\n" + "\n".join(state["stderr"]))
        return time.monotonic() - start

    def cell_with_source(self, text: str):
        """The code cell whose source contains ``text`` (the first, if several)."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").filter(
            has=self.page.locator(".jp-InputArea-editor", has_text=text)).first
