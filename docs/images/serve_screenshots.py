"""The screenshots of docs/serving.md: the web page serving `make demo`'s three checkpoints.

    python docs/images/serve_screenshots.py TEXT_RUN IMAGE_RUN AUDIO_RUN [--out docs/images]

Starts `genloom serve 'models={story: TEXT_RUN, digits: IMAGE_RUN, notes: AUDIO_RUN}'` on a
free loopback port, drives the page in headless Chromium (Debian's `/usr/bin/chromium`,
through Playwright, which downloads nothing) and saves what a user sees: a story streaming
in and finished (`serve_text.png`), sixteen 7s (`serve_image.png`) and four C5 notes with
their spectrograms (`serve_audio.png`). The server is stopped with SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], ready: str, log: Path, *, what: str, limit: float) -> subprocess.Popen:
    """Start ``command`` (output to ``log``) and wait up to ``limit`` s for ``ready`` to answer 200."""
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(ready, timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"{what} did not answer within {limit:.0f} s:\n{log.read_text()[-3000:]}")


def serve(runs: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    models = "{" + ", ".join(f"{name}: {path}" for name, path in runs.items()) + "}"
    command = [sys.executable, "-m", "genloom", "serve", f"models={models}", f"serve.port={port}",
               f"hydra.run.dir={log.parent / 'serve'}"]
    return start(command, f"http://127.0.0.1:{port}/health", log, what="genloom serve", limit=300)


def shoot(base: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.set_default_timeout(120_000)
            page.goto(base)
            page.wait_for_selector("#model option[value=story]", state="attached")

            # What to fill in for each model, and when its result is on the page.
            shots = [
                ("story", {"#prompt": "The ", "input[name=max_new_tokens]": "400",
                           "input[name=temperature]": "0.8", "#seed": "3"},
                 "!document.querySelector('#generate').disabled", "serve_text.png"),
                ("digits", {"#prompt": "", "#label": "7", "#n": "16", "#seed": "0"},
                 "document.querySelectorAll('#outputs .grid img').length === 16", "serve_image.png"),
                ("notes", {"#label": "12", "#n": "4"},
                 "document.querySelectorAll('#outputs .gallery img').length > 0"
                 " && document.querySelectorAll('#outputs audio').length === 4", "serve_audio.png"),
            ]
            for model, fields, done, name in shots:
                page.select_option("#model", model)
                for selector, value in fields.items():
                    page.fill(selector, value)
                page.click("#generate")
                page.wait_for_function(done)
                page.screenshot(path=str(out / name), full_page=True)
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text_run")
    parser.add_argument("image_run")
    parser.add_argument("audio_run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    runs = {"story": args.text_run, "digits": args.image_run, "notes": args.audio_run}
    with tempfile.TemporaryDirectory(prefix="genloom-screenshots-") as tmp:
        port = free_port()
        process = serve(runs, port, Path(tmp) / "serve.log")
        try:
            shoot(f"http://127.0.0.1:{port}", args.out)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    for name in ("serve_text.png", "serve_image.png", "serve_audio.png"):
        print(args.out / name)


if __name__ == "__main__":
    main()
