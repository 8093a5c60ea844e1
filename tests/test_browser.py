"""A student's session in a real browser: JupyterLab and headless Chromium, driven by playwright.

nbval compares only a widget's text stand-in, so nothing else would notice a change (to the explorers, ipywidgets or
JupyterLab) that leaves every interactive cell dead in the browser. This test opens JupyterLab on copies of the
notebooks (the repository's are never written) and, as a student would:

1. opens chapter 1 and runs it with *Run → Run All Cells*; every cell must run, without an error and without
   writing to stderr;
2. finds the explorer, moves its *image noise* slider with the keyboard, and checks that the slider's value and the
   figure (the PNG the kernel redraws) both change, and that the figure is shown at its natural size;
3. saves, reloads the page and checks that the explorer comes back with the figure it last drew, and still redraws
   when its slider moves;
4. opens exercise 4, runs it, and checks that ``check()`` prints its feedback (the question, its points, ✗ for the
   unanswered tests);
5. runs an explorer with chapter 4's controls and checks that no control label is cut short.

Every browser console error and uncaught page error fails the test, except those listed in
:data:`ALLOWED_CONSOLE_ERRORS` with the reason each one is expected. On failure, screenshots of the page and
JupyterLab's log are saved in ``test-artifacts/browser/`` (with ``MMCOURSE_BROWSER_ARTIFACTS=always``, the
screenshots of every step too, e.g. the explorer before and after the slider moved).

Run it alone with ``pytest -m browser``. It needs the ``playwright`` package (in the ``dev`` extra; its own browser
download is not used) and a Chromium or Chrome: ``$MMCOURSE_CHROMIUM`` or ``chromium``, ``chromium-browser``,
``google-chrome`` on ``PATH`` (CI installs Debian's ``chromium``). Without either it is skipped, saying which is
missing.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from jupyterlab_session import CHROMIUM_ARGS, LabServer, Notebook, find_chromium

from mmcourse.dev.notebooks import REPO_ROOT, reference_env

pytestmark = pytest.mark.browser

CHAPTER = REPO_ROOT / "notebooks" / "01_overview.ipynb"
EXERCISE = REPO_ROOT / "exercises" / "ex04_contrastive.ipynb"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
ALWAYS_SAVE = os.environ.get("MMCOURSE_BROWSER_ARTIFACTS") == "always"

#: Console errors that are expected, each with its reason: (regular expression on "text (url)", reason).
ALLOWED_CONSOLE_ERRORS = [
    (r"colab\.research\.google\.com/assets/colab-badge\.svg",
     "every notebook opens with an 'Open in Colab' badge, an external image: offline it cannot load"),
]

RUN_ALL_TIMEOUT = 300.0  # chapter 1 takes 30-110 s on a busy 2-core machine
REDRAW_TIMEOUT = 60.0

#: An explorer with chapter 4's controls: "temperature" is the longest label of a chapter's slider.
LAYOUT_CELL = '''\
import ipywidgets as widgets
import matplotlib.pyplot as plt

from mmcourse.viz.widgets import explorer


def draw(tau=0.07, image=0):
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    ax.plot([0, 1], [0, tau])
    ax.set_title(f"temperature {tau:.3f}, image {image}")
    return fig


explorer(
    draw,
    "Temperature: softmax over the similarity matrix",
    tau=widgets.FloatLogSlider(value=0.07, base=10, min=-2.3, max=0.3, step=0.05, description="temperature"),
    image=widgets.Dropdown(options=[("a red circle", 0), ("a blue square", 1)], value=0, description="image"),
)
'''

IMAGE_STATE = """img => fetch(img.src).then(r => r.arrayBuffer()).then(b => crypto.subtle.digest('SHA-256', b))
    .then(d => ({digest: [...new Uint8Array(d)].map(x => x.toString(16).padStart(2, '0')).join(''),
                 natural: img.naturalWidth, shown: img.getBoundingClientRect().width}))"""

CUT_LABELS = """box => [...box.querySelectorAll('.widget-label')]
    .filter(l => l.offsetParent !== null && l.textContent && l.scrollWidth > l.clientWidth)
    .map(l => `${l.textContent} (${l.scrollWidth} px of text in ${l.clientWidth} px)`)"""


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the browser test needs the playwright package: pip install -e '.[dev]'")
    return sync_playwright


class Console:
    """Console errors and uncaught page errors of every page of a browser context."""

    def __init__(self):
        self.messages: list[str] = []

    def watch(self, page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"uncaught page error: {error}"))

    def _console(self, message) -> None:
        if message.type == "error":
            url = (message.location or {}).get("url", "")
            self.messages.append(f"{message.text} ({url})" if url else message.text)

    def unexpected(self) -> list[str]:
        return [m for m in self.messages if not any(re.search(p, m) for p, _reason in ALLOWED_CONSOLE_ERRORS)]


class Artifacts:
    """Screenshots (and JupyterLab's log) in ``test-artifacts/browser/``: on failure, or every step if asked."""

    def __init__(self, folder: Path):
        self.folder = folder
        shutil.rmtree(folder, ignore_errors=True)
        self.saved: list[Path] = []

    def shot(self, page, name: str, always: bool = False, target=None) -> None:
        if not (always or ALWAYS_SAVE):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{len(self.saved) + 1:02d}-{name}.png"
        try:
            (target or page).screenshot(path=str(path), **({} if target else {"full_page": True}))
            self.saved.append(path)
        except Exception as error:  # noqa: BLE001 - a screenshot that fails must not hide the test's own failure
            print(f"could not save screenshot {path}: {error}")

    def save_log(self, server: LabServer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if server.log_path.exists():
            shutil.copy(server.log_path, self.folder / "jupyterlab.log")
            self.saved.append(self.folder / "jupyterlab.log")


def _explorer(page, title: str):
    boxes = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output .widget-vbox").filter(
        has_text=title)
    boxes.first.wait_for(state="attached", timeout=30_000)
    assert boxes.count() == 1, f"{boxes.count()} explorers titled {title!r} on the page"
    return boxes.first


def _image_state(box) -> dict:
    return box.locator("img.widget-image").evaluate(IMAGE_STATE)


def _wait_for_redraw(box, before: dict, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _image_state(box)
        if state["digest"] != before["digest"]:
            return state
        time.sleep(0.5)
    raise AssertionError(f"the explorer's figure did not change within {timeout:.0f} s after the slider moved")


def _settled_image_state(page, box, timeout: float, quiet: float = 2.0) -> dict:
    """The figure once the redraws have stopped: the kernel idle and the image unchanged for ``quiet`` seconds.

    Each step of the slider is one redraw, run as its own kernel request: between two of them the kernel is idle for
    a moment, so "idle" alone can name a figure that a later redraw replaces.
    """
    deadline = time.monotonic() + timeout
    state, since = _image_state(box), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        idle = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status")
        current = _image_state(box)
        if current["digest"] != state["digest"] or idle != "idle":
            state, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return current
    raise AssertionError(f"the explorer's figure kept changing for {timeout:.0f} s after the slider stopped")


def _check_chapter(page, server, artifacts, timings) -> None:
    chapter = Notebook(page, server, CHAPTER.name).open()
    timings["chapter 1 run all"] = chapter.run_all(RUN_ALL_TIMEOUT)

    box = _explorer(page, "Corrupt one modality")
    box.scroll_into_view_if_needed()
    slider = box.locator(".widget-hslider").filter(has=page.locator(".widget-label", has_text="image noise"))
    readout = slider.locator(".widget-readout")
    assert readout.text_content().strip() == "0.60", f"the slider starts at {readout.text_content()!r}, not 0.60"
    before = _image_state(box)
    artifacts.shot(page, "chapter1-explorer-before", target=box)

    handle = slider.locator(".noUi-handle")
    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    page.wait_for_function("el => el.textContent.trim() === '0.90'", arg=readout.element_handle(), timeout=10_000)
    _wait_for_redraw(box, before, REDRAW_TIMEOUT)
    after = _settled_image_state(page, box, REDRAW_TIMEOUT)  # the last redraw (one per step of the slider)
    assert after["digest"] != before["digest"]
    artifacts.shot(page, "chapter1-explorer-after", target=box)
    assert after["shown"] <= after["natural"] + 1, (
        f"the explorer's figure is stretched: {after['natural']} px wide, shown {after['shown']:.0f} px wide")

    # a student saves and reloads the page: the explorer comes back from the running kernel, and still works
    chapter.save()
    page.reload()
    chapter.open()
    box = _explorer(page, "Corrupt one modality")
    box.scroll_into_view_if_needed()
    slider = box.locator(".widget-hslider").filter(has=page.locator(".widget-label", has_text="image noise"))
    readout = slider.locator(".widget-readout")
    readout.wait_for(state="attached", timeout=30_000)
    assert readout.text_content().strip() == "0.90", "after a reload the slider lost its value"
    deadline = time.monotonic() + 30
    while _image_state(box)["digest"] != after["digest"]:
        assert time.monotonic() < deadline, "after a reload the explorer does not show the figure it last drew"
        time.sleep(0.5)
    slider.locator(".noUi-handle").press("ArrowLeft")
    page.wait_for_function("el => el.textContent.trim() === '0.80'", arg=readout.element_handle(), timeout=10_000)
    _wait_for_redraw(box, after, REDRAW_TIMEOUT)
    artifacts.shot(page, "chapter1-explorer-after-reload", target=box)


def _check_exercise(page, server, artifacts, timings) -> None:
    exercise = Notebook(page, server, EXERCISE.name).open()
    timings["exercise 4 run all"] = exercise.run_all(RUN_ALL_TIMEOUT)
    cell = exercise.cell_with_source('check("ex04.clip_loss")')
    cell.scroll_into_view_if_needed()
    stdout = cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']").text_content()
    assert re.search(r"ex04\.clip_loss\b.*\d+/\d+ points", stdout), f"check() printed no feedback line:\n{stdout}"
    assert "✗" in stdout, f"check() shows no failed test for an unanswered question:\n{stdout}"
    whole = exercise.cell_with_source('check("ex04")')
    whole.scroll_into_view_if_needed()
    assert re.search(r"ex04: \d+(\.\d+)?/\d+(\.\d+)? points", whole.text_content()), "check('ex04') printed no total"
    artifacts.shot(page, "exercise4-check-feedback", target=cell)


def _check_layout(page, server, artifacts, timings) -> None:
    notebook = Notebook(page, server, "explorer_layout.ipynb").open()
    timings["layout explorer run all"] = notebook.run_all(60)
    box = _explorer(page, "Temperature: softmax")
    box.scroll_into_view_if_needed()
    page.wait_for_function("box => box.querySelector('img.widget-image').naturalWidth > 0",
                           arg=box.element_handle(), timeout=30_000)
    artifacts.shot(page, "layout-explorer", target=box)
    cut = box.evaluate(CUT_LABELS)
    assert not cut, f"control labels cut short: {cut}"
    image = _image_state(box)
    assert image["shown"] <= image["natural"] + 1, f"the explorer's figure is stretched: {image}"


def test_student_session_in_jupyterlab(tmp_path):
    sync_playwright = _playwright()
    chromium = find_chromium()
    if chromium is None and os.environ.get("MMCOURSE_CHROMIUM"):
        pytest.fail(f"MMCOURSE_CHROMIUM={os.environ['MMCOURSE_CHROMIUM']} is not an executable browser")
    if chromium is None:
        pytest.skip("no Chromium or Chrome found (set MMCOURSE_CHROMIUM, or install one: "
                    "apt-get install chromium); CI installs Debian's chromium")
    root = tmp_path / "course"
    root.mkdir()
    shutil.copy(CHAPTER, root)
    shutil.copy(EXERCISE, root)
    layout = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LAYOUT_CELL)])
    layout.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(layout, root / "explorer_layout.ipynb")

    artifacts = Artifacts(ARTIFACTS)
    console = Console()
    timings: dict[str, float] = {}
    start = time.monotonic()
    with LabServer(root, tmp_path / "jupyter", reference_env()) as server, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        page = context.pages[0] if context.pages else context.new_page()
        console.watch(page)
        try:
            _check_chapter(page, server, artifacts, timings)
            _check_exercise(page, server, artifacts, timings)
            _check_layout(page, server, artifacts, timings)
            unexpected = console.unexpected()
            assert not unexpected, "browser console errors:\n" + "\n".join(unexpected)
        except BaseException:
            artifacts.shot(page, "failure", always=True)
            artifacts.save_log(server)
            print("browser test artefacts:", *artifacts.saved, sep="\n  ")
            print("console errors:", *console.messages, sep="\n  ")
            raise
        finally:
            context.close()
    timings["total"] = time.monotonic() - start
    print("browser test timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print("console errors (all allowed):", *console.messages, sep="\n  ")
    if artifacts.saved:
        print("screenshots:", *artifacts.saved, sep="\n  ")
