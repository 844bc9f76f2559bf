"""Helpers for the tests of ``genloom serve``: tiny checkpoints and servers on loopback.

Every server here binds 127.0.0.1 on a free port and is always stopped, whatever the test
does; every request loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import torch
from genloom import checkpoint, pipeline
from genloom.plugins import PluginSet
from genloom.testing import compose

STARTUP_TIMEOUT_S = 180  # a loaded CI machine takes a while to import torch
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def make_checkpoint(plugin_set: PluginSet, preset: str, directory: Path, *, overrides: Sequence[str] = (),
                    weight_std: float | None = None, seed: int = 0) -> Path:
    """A run directory holding one checkpoint of ``preset`` with random weights (no training).

    ``weight_std`` redraws every parameter at that scale, so that a text model's greedy
    output varies with its context instead of repeating one token.
    """
    config = compose(plugin_set, [f"pipeline={preset}", *overrides])
    torch.manual_seed(seed)
    built = pipeline.build(config, plugin_set.registry, with_dataset=False)
    if weight_std is not None:
        with torch.no_grad():
            for param in built.generator.parameters():
                param.normal_(0.0, weight_std)
    checkpoint.save(directory / "checkpoints", step=3, model=built.generator, config=config,
                    plugins=plugin_set.versions())
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base_url: str, timeout_s: float = STARTUP_TIMEOUT_S, process: subprocess.Popen | None = None,
                 ) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}:\n"
                               f"{process.stderr.read() if process.stderr else ''}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"no answer from {base_url}/health within {timeout_s} s")


@contextlib.contextmanager
def running_app(app, port: int | None = None) -> Iterator[str]:  # noqa: ANN001 - a FastAPI app
    """Serve ``app`` with uvicorn on a thread; yield its base URL; always stop it."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def serve_process(overrides: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None,
                  ) -> Iterator[tuple[subprocess.Popen, str]]:
    """``genloom serve OVERRIDES`` as a subprocess on a free loopback port; always stopped."""
    port = free_port()
    command = [sys.executable, "-m", "genloom", "serve", *overrides, f"serve.port={port}",
               "serve.host=127.0.0.1", f"hydra.run.dir={cwd / 'serve-run'}"]
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process=process)
        yield process, base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def chromium_page() -> Iterator[object]:
    """A headless Chromium page (Playwright) for the tests of the web page; skips without one."""
    import pytest

    if not CHROMIUM.exists():
        if os.environ.get("GENLOOM_REQUIRE_BROWSER") == "1":
            pytest.fail("GENLOOM_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing: "
                        "apt-get install chromium")
        pytest.skip("no /usr/bin/chromium (apt-get install chromium); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()
