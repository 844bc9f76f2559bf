"""What ``loss.png`` costs a training run, and what ``genloom runs`` costs on many runs.

Part 1, the plot. ``genloom.losscurve`` is called on rank 0 after each evaluation: it reads
the whole ``metrics.jsonl`` and redraws. This times, side by side for runs of growing
length (``metrics.jsonl`` as the trainer writes it: a train record every ``log_every``
steps with loss, lr, throughput and grad_norm, a validation record every ``eval_every``
steps with val_loss and val_bits_per_byte), the read, the draw and atomic write, and the
total. The one-off imports (matplotlib with the Agg backend; Pillow for comparison, the
alternative of drawing axes by hand) are timed in fresh processes.

Part 2, a real run: ``genloom train pipeline=text_debug`` (1000 steps, 5 evaluations),
each of its draws timed inside the run, against the run's wall time.

Part 3, the listing. ``genloom runs`` over a tree of N copies of a real run directory
(written by a debug training run here), in a fresh process each time, start-up included.

    python benchmarks/loss_plot.py            # a few minutes on a shared 2-core CPU
    python benchmarks/loss_plot.py --quick    # seconds: a smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from genloom import losscurve

log = logging.getLogger("loss_plot")

# (steps, log_every, eval_every): a debug run, a day's run, a long one.
RUNS = [(1_000, 10, 200), (100_000, 10, 1_000), (1_000_000, 10, 5_000)]
QUICK_RUNS = [(1_000, 10, 200)]


def write_metrics(path: Path, steps: int, log_every: int, eval_every: int) -> None:
    rng = random.Random(0)
    with open(path, "w") as f:
        for step in range(log_every, steps + 1, log_every):
            loss = 2.0 + 4.0 * math.exp(-step / (steps / 10)) + rng.gauss(0, 0.05)
            f.write(json.dumps({"step": step, "split": "train", "loss": loss, "lr": 3e-4,
                                "throughput": 150000.0 + rng.gauss(0, 500), "grad_norm": 1.0 + rng.random()})
                    + "\n")
            if step % eval_every == 0:
                f.write(json.dumps({"step": step, "split": "val", "val_loss": loss + 0.05,
                                    "val_bits_per_byte": (loss + 0.05) / math.log(2)}) + "\n")


def import_seconds(statement: str, repeats: int) -> float:
    """Median seconds of ``statement`` in a fresh interpreter, the interpreter's start excluded."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True).stdout) for _ in range(repeats)]
    return statistics.median(times)


def time_plot(metrics: Path, repeats: int) -> tuple[float, float]:
    """Median seconds to read ``metrics`` alone, and to read, draw and write ``loss.png``."""
    reads, draws = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        losscurve.read_series(metrics)
        reads.append(time.perf_counter() - start)
        start = time.perf_counter()
        losscurve.write_loss_plot(metrics, metrics.parent / losscurve.FILE, title="benchmark")
        draws.append(time.perf_counter() - start)
    return statistics.median(reads), statistics.median(draws)


def first_draw(where: Path) -> float:
    """Seconds of a run's first loss.png (a debug run's metrics), in a fresh process."""
    metrics = where / "first.jsonl"
    write_metrics(metrics, *QUICK_RUNS[0])
    code = ("import sys, time; from pathlib import Path; from genloom import losscurve\n"
            "t = time.perf_counter(); path = Path(sys.argv[1])\n"
            "losscurve.write_loss_plot(path, path.with_suffix('.png'), title='first')\n"
            "print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code, str(metrics)], capture_output=True, text=True,
                                check=True).stdout)


def real_run(where: Path) -> Path:
    """A real (debug) training run directory to copy."""
    run = where / "run"
    subprocess.run([sys.executable, "-m", "genloom", "train", "pipeline=text_debug", "trainer.max_steps=200",
                    "trainer.progress=false", f"hydra.run.dir={run}"], check=True, capture_output=True)
    return run


def time_training(where: Path, steps: int) -> tuple[float, list[float]]:
    """Wall seconds of a text_debug run in this process, and of each loss.png draw within it.

    The draws are timed inside the run rather than by a run without them: on a shared
    machine two runs' walls differ by more than the draws cost.
    """
    from genloom import cli

    real_plot, draws = losscurve.write_loss_plot, []

    def timed(*args: object, **kwargs: object) -> bool:
        start = time.perf_counter()
        wrote = real_plot(*args, **kwargs)
        draws.append(time.perf_counter() - start)
        return wrote

    losscurve.write_loss_plot = timed
    try:
        start = time.perf_counter()
        status = cli.main(["train", "pipeline=text_debug", "trainer.progress=false",
                           f"trainer.max_steps={steps}", f"hydra.run.dir={where / 'train'}"])
        wall = time.perf_counter() - start
    finally:
        losscurve.write_loss_plot = real_plot
    assert status == 0, f"genloom train failed ({status})"
    return wall, draws


def time_listing(run: Path, counts: list[int], where: Path) -> list[tuple[int, float]]:
    rows = []
    tree = where / "outputs"
    made = 0
    for count in counts:
        for k in range(made, count):
            target = tree / "train" / f"day{k // 100}" / f"run{k:04d}"
            target.mkdir(parents=True)
            for name in ("train.log", "metrics.jsonl"):
                shutil.copy(run / name, target / name)
            shutil.copytree(run / ".hydra", target / ".hydra")
            shutil.copytree(run / "checkpoints", target / "checkpoints",
                            ignore=shutil.ignore_patterns("*.safetensors", "trainer.json"))
            (target / "checkpoints" / "step_000200" / "model.safetensors").touch()
        made = count
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "genloom", "runs", str(tree), "--sort", "val_loss"],
                           check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        rows.append((count, statistics.median(times)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short run, one repeat: a smoke test")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    repeats = 1 if args.quick else 5

    import_mpl = import_seconds(
        "import matplotlib; matplotlib.use('Agg'); from matplotlib.figure import Figure", repeats)
    import_pil = import_seconds("from PIL import Image, ImageDraw, ImageFont", repeats)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        wall, draws = time_training(where, 200 if args.quick else 1000)  # first: matplotlib not yet imported
        plot_rows = []
        first = first_draw(where)
        for steps, log_every, eval_every in QUICK_RUNS if args.quick else RUNS:
            metrics = where / f"metrics-{steps}.jsonl"
            write_metrics(metrics, steps, log_every, eval_every)
            n_records = len(metrics.read_text().splitlines())
            read, total = time_plot(metrics, repeats)
            plot_rows.append((steps, log_every, eval_every, n_records, metrics.stat().st_size, read, total))
        run = real_run(where)
        listing = time_listing(run, [10] if args.quick else [10, 100, 500], where)

    print(f"\nloss.png: one redraw after an evaluation (median of {repeats}; the run's first draw: "
          f"{first * 1e3:.0f} ms, matplotlib's import and font set-up included)")
    print(f"{'steps':>9} {'log/eval every':>15} {'records':>8} {'metrics.jsonl':>14} {'read (ms)':>10} "
          f"{'read+draw+write (ms)':>21} {'per eval interval':>18}")
    for steps, log_every, eval_every, n, size, read, total in plot_rows:
        print(f"{steps:>9,} {f'{log_every}/{eval_every}':>15} {n:>8,} {f'{size / 1e6:.2f} MB':>14} "
              f"{read * 1e3:>10.0f} {total * 1e3:>21.0f} {f'once / {eval_every} steps':>18}")
    print(f"\none-off import, fresh process (median of {repeats}): "
          f"matplotlib + Agg {import_mpl * 1e3:.0f} ms, "
          f"Pillow (Image, ImageDraw, ImageFont) {import_pil * 1e3:.0f} ms")
    print("\ngenloom train pipeline=text_debug (the first draw imports matplotlib)")
    print(f"{'run wall (s)':>13} {'draws':>6} {'each draw (ms)':>30} {'all draws (s)':>14} {'share':>7}")
    each = ", ".join(f"{d * 1e3:.0f}" for d in draws)
    print(f"{wall:>13.2f} {len(draws):>6} {each:>30} {sum(draws):>14.2f} {sum(draws) / wall:>7.1%}")
    print("\ngenloom runs DIR --sort val_loss, fresh process, start-up included (median of 3)")
    print(f"{'run directories':>16} {'seconds':>8}")
    for count, seconds in listing:
        print(f"{count:>16} {seconds:>8.2f}")


if __name__ == "__main__":
    main()
