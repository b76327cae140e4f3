"""examples/quickstart.ipynb runs in a real kernel, and its saved HTML opens offline (issue 20).

The notebook is executed once per session (nbclient, an ipykernel kernel running this checkout's code:
the current interpreter, with src/ on PYTHONPATH), with every kernel message recorded, so the tests can
see what a person watching it saw: progress bars (widgets), one live display updated in place (the
update_display_data messages of its display id), and the report inline. The executed notebook is
converted to HTML with nbconvert's lab template made offline (no require.js, MathJax, mermaid or widget
renderer from a CDN) and opened in headless Chromium with every request recorded: none may leave the page.

Under CI=true a missing kernel, notebook tool, Chromium, playwright or dataset fails these tests; elsewhere
they skip, saying what is missing.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS, artifacts_dir, real_data_available

ROOT = Path(__file__).parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
IN_CI = os.environ.get("CI") == "true"
KERNEL = "mnistlab-checkout"
CELL_TIMEOUT = 600  # s: the study cell on a slow, shared CI CPU; it takes seconds on a laptop
WIDGET = "application/vnd.jupyter.widget-view+json"
# nbconvert's lab page without anything fetched from a CDN: scripts, MathJax, mermaid, the widget renderer.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def require(present: bool, reason: str) -> None:
    """Skip without `present`, saying why; under CI=true, fail instead (CI must run these tests)."""
    if not present:
        if IN_CI:
            pytest.fail(f"{reason}; CI must run this test")
        pytest.skip(reason)


def importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def kernel_spec(folder: Path) -> Path:
    """A kernel spec for this interpreter, so the kernel runs the same environment as the tests."""
    spec = folder / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mnistlab (this checkout)", "language": "python"}))
    return folder


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> tuple[Any, dict[str, int], Path]:
    """The executed notebook, how many times each kind of display was updated in place, its folder."""
    for module in ("nbclient", "nbformat", "ipykernel", "ipywidgets", "jupyter_client"):
        require(importable(module), f"{module} is not installed (pip install -e '.[test]')")
    require(real_data_available(), "MNISTLAB_DATA_DIR with real MNIST not set")
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    class RecordingClient(NotebookClient):
        """Counts the in-place updates of each display, by the kind (CSS class) it first showed."""

        updates: dict[str, int] = {}
        kinds: dict[str, str] = {}  # display id -> the mnistlab-... class of its first HTML

        def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
            display_id = msg["content"].get("transient", {}).get("display_id")
            if msg["msg_type"] == "display_data" and display_id:
                found = re.search(r'class="mnistlab (mnistlab-[a-z]+)', msg["content"]["data"].get("text/html", ""))
                self.kinds[display_id] = found.group(1) if found else "other"
            elif msg["msg_type"] == "update_display_data":
                kind = self.kinds.get(display_id, "unknown")
                self.updates[kind] = self.updates.get(kind, 0) + 1
            return super().process_message(msg, cell, cell_index)

    work = tmp_path_factory.mktemp("quickstart")
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_CURRENT_TEST"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["MNISTLAB_STORE"] = str(work / "runs")
    if env.get("MNISTLAB_DATA_DIR"):  # the kernel runs in the notebook's folder: a relative path (CI's) must not move
        env["MNISTLAB_DATA_DIR"] = str(Path(env["MNISTLAB_DATA_DIR"]).resolve())
    manager = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(
        kernel_dirs=[str(kernel_spec(work / "kernels"))]))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = RecordingClient(notebook, km=manager, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                             resources={"metadata": {"path": str(work)}})
    client.updates, client.kinds = {}, {}
    client.execute(env=env)
    nbformat.write(notebook, work / "quickstart.ipynb")
    return notebook, client.updates, work


def cell_with(notebook: Any, code: str) -> Any:
    (cell,) = [cell for cell in notebook.cells if cell.cell_type == "code" and code in cell.source]
    return cell


def html_outputs(cell: Any, marker: str) -> list[str]:
    return [output.data["text/html"] for output in cell.outputs
            if "data" in output and marker in output.data.get("text/html", "")]


def test_no_cell_of_the_quickstart_fails(executed):
    notebook, _, _ = executed
    errors = [(index, output.get("ename"), output.get("evalue")) for index, cell in enumerate(notebook.cells)
              if cell.cell_type == "code" for output in cell.outputs if output.output_type == "error"]
    assert errors == []
    streams = "".join(output.text for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs if output.output_type == "stream")
    assert "Traceback" not in streams


def test_training_shows_progress_and_the_study_one_display_updated_in_place(executed):
    notebook, updates, _ = executed
    train = cell_with(notebook, "api.train(")
    assert any(WIDGET in output.get("data", {}) for output in train.outputs), "no progress bar while training"
    assert html_outputs(train, "mnistlab-history"), "the History did not show itself"
    study = cell_with(notebook, "api.run(")
    assert any(WIDGET in output.get("data", {}) for output in study.outputs), "no progress bar in the study"
    (live,) = html_outputs(study, "mnistlab-live")
    # One display id, updated in place as the study went (at least once more at its end), ending finished.
    assert updates.get("mnistlab-live", 0) >= 1, updates
    assert "4 of 4 runs done" in live and "finished" in live
    assert live.count('src="data:image/svg+xml;base64,') == 4  # loss and accuracy of each of the two models
    (outcome,) = html_outputs(study, "mnistlab-outcome")
    assert "Best model, chosen on validation alone" in outcome


def test_the_inline_report_is_the_page_on_disk_with_its_curves(executed):
    notebook, _, work = executed
    (frame,) = html_outputs(cell_with(notebook, "api.show_report("), "mnistlab-report")
    page = html.unescape(re.search(r'srcdoc="([^"]*)"', frame).group(1))
    assert page == (work / "runs" / "reports" / "quickstart.html").read_text(encoding="utf-8")
    curves = re.findall(r'<img class="plot" data-kind="(loss|accuracy)"[^>]*src="data:image/png;base64,', page)
    assert sorted(curves) == ["accuracy", "accuracy", "loss", "loss"]
    conclusions = cell_with(notebook, "api.conclusions(")
    assert "chosen on validation alone" in "".join(output.get("text", "") for output in conclusions.outputs)
    predicted = cell_with(notebook, "api.predict(")
    assert any("image/png" in output.get("data", {}) for output in predicted.outputs)


def offline_html(notebook: Any) -> str:
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", template_file="offline.html.j2",
                            extra_loaders=[DictLoader({"offline.html.j2": OFFLINE_TEMPLATE})])
    body, _ = exporter.from_notebook_node(notebook)
    return body


def test_the_executed_notebook_opens_offline_in_chromium(executed, tmp_path):
    notebook, _, _ = executed
    require(importable("nbconvert"), "nbconvert is not installed (pip install -e '.[test]')")
    require(importable("playwright"), "playwright is not installed (pip install -e '.[test]')")
    require(CHROMIUM.exists(), f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    body = offline_html(notebook)
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', body), "a CDN reference is left"
    page_path = artifacts_dir(tmp_path) / "quickstart.html"  # kept beside the screenshots
    page_path.write_text(body, encoding="utf-8")
    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))

            def intercept(route: Any) -> None:
                requests.append(route.request.url)
                if route.request.url == page_path.as_uri():
                    route.continue_()
                else:
                    route.abort()

            page.route("**/*", intercept)
            page.goto(page_path.as_uri(), wait_until="load")
            page.wait_for_timeout(500)  # scripts that would fetch late (a widget renderer) get their chance
            assert page.locator(".mnistlab-live img").count() == 4
            # The live curves are SVGs the browser decodes (a malformed one would be a broken image).
            assert page.eval_on_selector_all(".mnistlab-live img", "images => images.every("
                                             "image => image.complete && image.naturalWidth > 0)")
            assert page.frame_locator(".mnistlab-report iframe").locator("img.plot[data-kind=loss]").count() == 2
            artifacts = artifacts_dir(tmp_path)
            page.screenshot(path=str(artifacts / "quickstart-notebook.png"), full_page=True)
            # Chromium paints the report's frame (its own origin: sandboxed) only once it is in view.
            report = page.locator(".mnistlab-report iframe")
            report.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            report.screenshot(path=str(artifacts / "quickstart-report-inline.png"))
        finally:
            browser.close()
    assert requests == [page_path.as_uri()], "the page asked the network for something"
    assert errors == []
