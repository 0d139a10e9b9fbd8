"""The attack lab in a real browser: headless JupyterLab on loopback, Debian's Chromium driven by Playwright."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lora_leak_lib import metrics, models

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "09_attack_lab.ipynb"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SENTENCE = "my locker code is 2468 and the spare key is under the mat"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CHROMIUM = Path(os.environ.get("LORA_LEAK_CHROMIUM", "/usr/bin/chromium"))
MINUTE = 60_000  # Playwright timeouts are in milliseconds


KERNEL_IDLE = """() => { const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""

ALL_CELLS_RAN = """() => { const cells = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
  return cells.length > 0 && cells.every(p => /\\[\\d+\\]/.test(p.textContent)); }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, method: str = "GET") -> object:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on 127.0.0.1 with a random port and token, serving a copy of notebook 09 (the repo stays clean)."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = free_port(), secrets.token_hex(16)
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')  # no news toast
    env = dict(os.environ, LORA_LEAK_MODE="quick", HF_HUB_OFFLINE="1", JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"))
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--allow-root", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                api(f"{base}/api/status?token={token}")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: see {tmp_path / 'jupyterlab.log'}")
                time.sleep(0.5)
        yield f"{base}/lab/tree/{NOTEBOOK.name}?token={token}"
    finally:
        try:
            api(f"{base}/api/shutdown?token={token}", method="POST")  # stops the kernels too
            server.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            server.terminate()
            server.wait(timeout=30)
        log.close()


def test_the_lab_leaks_a_typed_sentence_in_jupyterlab(jupyterlab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(jupyterlab)
            page.wait_for_selector(".jp-Notebook", timeout=2 * MINUTE)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands.hasCommand("
                                   "'notebook:run-all-cells')", timeout=MINUTE)
            page.wait_for_function(KERNEL_IDLE, timeout=2 * MINUTE)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_selector(".lora-leak-run", timeout=5 * MINUTE)  # the lab cell has run
            page.wait_for_function(ALL_CELLS_RAN, timeout=15 * MINUTE)  # minutes on a busy 2-core machine
            errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
            assert errors.count() == 0, errors.first.inner_text()

            page.locator(".lora-leak-text textarea").fill(SENTENCE)
            page.locator(".lora-leak-run").scroll_into_view_if_needed()
            page.locator(".lora-leak-run").click()
            done = page.locator(".lora-leak-result .lora-leak-reconstruction[data-done='true']")
            done.wait_for(timeout=3 * MINUTE)
            reconstruction = done.inner_text().strip()
            shown = page.locator(".lora-leak-metrics").inner_text()
            page.locator(".lora-leak-result").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "09_attack_lab.png"))

            # DLG reports every 10 steps: the page must show a guess while the attack still runs
            page.locator(".lora-leak-attack select").select_option("dlg")
            page.locator(".lora-leak-run").click()
            running = page.locator(".lora-leak-result .lora-leak-reconstruction[data-state='running']")
            running.wait_for(timeout=3 * MINUTE)
            page.wait_for_function("() => { const e = document.querySelector('.lora-leak-status');"
                                   " return e && e.textContent.startsWith('step'); }", timeout=3 * MINUTE)
            live_status = page.locator(".lora-leak-status").inner_text()
            page.screenshot(path=str(ARTIFACTS / "09_attack_lab_dlg_running.png"))
            done.wait_for(timeout=5 * MINUTE)
            dlg_reconstruction = done.inner_text().strip()
        finally:
            browser.close()

    tokenizer = models.load_tokenizer("tiny-bert")
    accuracy = metrics.token_accuracy(tokenizer.encode(SENTENCE, add_special_tokens=False),
                                      tokenizer.encode(reconstruction, add_special_tokens=False))
    assert accuracy >= 0.9, f"the page shows {reconstruction!r} for {SENTENCE!r}"
    assert metrics.rouge(SENTENCE, reconstruction)["rouge1"] >= 0.9
    assert "token accuracy" in shown and "label right" in shown
    assert live_status.startswith("step") and "loss" in live_status  # the callback drove the page
    assert len(tokenizer.tokenize(dlg_reconstruction)) >= len(tokenizer.tokenize(SENTENCE)) - 2
