"""The screenshot of docs/tracking.md: TensorBoard's scalars page for a real genloom run.

    python docs/images/tensorboard_screenshot.py [--run RUN] [--out docs/images/tensorboard_scalars.png]

Without ``--run`` it first trains ``genloom train pipeline=text_debug logger=tensorboard``
(1,000 steps of the tiny text model, seconds on a CPU) in a temporary directory. Then it
starts ``tensorboard --logdir RUN/tensorboard`` on a free loopback port, opens the scalars
page in headless Chromium (Debian's ``/usr/bin/chromium``, through Playwright, which
downloads nothing), waits until every chart has drawn its lines and saves the page. The
server is stopped at the end. TensorBoard's page needs nothing from the network: its
scripts, styles and fonts are served by TensorBoard itself.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serve_screenshots import CHROMIUM, CHROMIUM_ARGS, free_port, start  # noqa: E402 - the same set-up

CHARTS = 6  # train/loss, lr, throughput, grad_norm; val/loss, bits_per_byte


def train(run: Path) -> None:
    command = [sys.executable, "-m", "genloom", "train", "pipeline=text_debug", "logger=tensorboard",
               "trainer.progress=false", f"hydra.run.dir={run}"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def tensorboard(name: str, logdir: Path, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "tensorboard.main", "--logdir_spec", f"{name}:{logdir}",
               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "0"]
    return start(command, f"http://127.0.0.1:{port}/data/runs", log, what="tensorboard", limit=120)


def shoot(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Tall enough for both groups of charts: the dashboard scrolls inside the page.
            page = browser.new_page(viewport={"width": 1400, "height": 1150})
            page.set_default_timeout(120_000)
            page.goto(url)
            # Whole curves: the validation loss starts far above where it ends.
            page.get_by_text("Ignore outliers in chart scaling").click()
            # Every chart has drawn its line (Playwright's selectors see into the charts' shadow DOM).
            page.locator("vz-line-chart2 path.line").nth(CHARTS - 1).wait_for(state="attached")
            page.wait_for_timeout(1000)  # the last frame of the charts' transitions
            page.screenshot(path=str(out))
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run trained with logger=tensorboard (default: train one)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tensorboard_scalars.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genloom-tensorboard-") as tmp:
        run = args.run or Path(tmp) / "text_debug"
        if args.run is None:
            train(run)
        port = free_port()
        process = tensorboard(run.name, run / "tensorboard", port, Path(tmp) / "tensorboard.log")
        try:
            shoot(f"http://127.0.0.1:{port}/#scalars&_smoothingWeight=0", args.out)  # the values as logged
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(args.out)


if __name__ == "__main__":
    main()
