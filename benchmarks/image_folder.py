"""Image folders of 1k, 10k and 100k PNGs: start-up, peak memory and training speed, held vs lazy.

Generates folders of 32 x 32 RGB PNGs (deterministic: a colour gradient per image plus
seeded noise; 100 per subfolder, as a photo dump is laid out), then trains
``pipeline=image_folder`` (the 32 x 32 VAE, batch 32) on each, three ways, each in a
fresh process, interleaved round by round:

* ``held``: ``dataset.lazy=false``, the whole folder decoded into memory at start-up
  (what genloom did before, and what a user of a small folder gets by default);
* ``lazy``: ``dataset.lazy=true``, headers checked at start-up and each image decoded
  when the trainer asks for it, in the main process;
* ``lazy/2w``: the same with ``trainer.num_workers=2`` DataLoader workers;
* ``cached`` and ``cached/2w``: ``lazy`` and ``lazy/2w`` with ``dataset.cache_decoded=true``,
  on a later run: the decoded cache is filled once before the rounds (every file of both
  splits, timed apart as "cache fill"), so these runs read each example from its entry and
  decode nothing (checked: no entry is added while they run).

For each: the start-up time (building the pipeline, which checks or decodes the folder);
the "RSS gain", the process's peak resident memory (``ru_maxrss``) above what it held
after its imports; the workers' proportional set size (PSS: their own pages plus their
share of the pages they still share with the main process since the fork, from
``/proc``), summed at the last step; and training images/s over timed steps after
warm-up steps (the trainer's own reports; evaluation and the checkpoint come after).
Medians over rounds; the files are in the page cache (the folder was just written), so
cold-disk reads are not measured.

    python benchmarks/image_folder.py                    # 1k, 10k, 100k files; 3 rounds
    python benchmarks/image_folder.py --sizes 1000 --rounds 1
    python benchmarks/image_folder.py --quick            # 64 files, the debug VAE, a few steps: a smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("benchmarks.image_folder")

WAYS = {  # name -> overrides
    "held": ["dataset.lazy=false", "trainer.num_workers=0"],
    "lazy": ["dataset.lazy=true", "trainer.num_workers=0"],
    "lazy/2w": ["dataset.lazy=true", "trainer.num_workers=2"],
    "cached": ["dataset.lazy=true", "dataset.cache_decoded=true", "trainer.num_workers=0"],
    "cached/2w": ["dataset.lazy=true", "dataset.cache_decoded=true", "trainer.num_workers=2"],
}
PER_FOLDER = 100  # files per subfolder
RESOLUTION = 32


def make_folder(root: Path, n: int) -> float:
    """Write ``n`` deterministic PNGs under ``root``; returns the bytes written, in MB."""
    from PIL import Image

    generator = np.random.default_rng(n)
    ramp = np.linspace(0, 1, RESOLUTION, dtype=np.float32)
    total = 0
    for i in range(n):
        start, end = generator.integers(0, 256, (2, 3))
        pixels = start + (end - start) * ramp[:, None, None]  # (R, 1, 3): a vertical gradient
        pixels = pixels + generator.normal(0, 12, (RESOLUTION, RESOLUTION, 3))
        folder = root / f"{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True)
        path = folder / f"{i:06d}.png"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
        total += path.stat().st_size
    return total / 1e6


def child(folder: str, way: str, warmup: int, steps: int, pipeline: str) -> None:
    """One measurement in this fresh process; prints one JSON line."""
    import torch
    from trainer_timing import timed_fit

    torch.set_num_threads(1)
    from genloom.plugins import active  # the plugins' imports belong to the baseline

    active()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    overrides = [f"pipeline={pipeline}", f"dataset.path={folder}", f"dataset.cache_dir={cache_dir(folder)}",
                 *WAYS[way], "trainer.progress=false"]
    # The workers' memory is read after the last timed report: reading /proc costs time.
    timed = timed_fit(overrides, warmup=warmup, steps=steps, at_last_report=workers_pss_mb)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"startup_s": timed.startup_s, "rss_mb": peak - baseline, "workers_mb": timed.at_end,
                      "images_per_s": timed.rate}))


def cache_dir(folder: str | Path) -> str:
    return f"{folder}.decoded"


def fill_cache(folder: str, pipeline: str) -> None:
    """Decode every file of both splits into the decoded cache, as a first run would; then time
    reading the training split (one epoch, no training) decoded and from the cache, interleaved,
    and print the medians per example as one JSON line."""
    import torch
    from genloom_image.folder import ImageFolder
    from genloom_image.pixels import Pixels
    from trainer_timing import compose_train_config

    cfg = compose_train_config([f"pipeline={pipeline}", f"dataset.path={folder}"])
    encoder = Pixels(resolution=cfg.encoder.resolution, channels=cfg.encoder.channels)
    dataset = ImageFolder(path=folder, val_fraction=cfg.dataset.val_fraction, lazy=True,
                          cache_decoded=True, cache_dir=cache_dir(folder))
    torch.set_num_threads(1)
    for split in ("train", "val"):
        examples = dataset.split(split, encoder)
        for i in range(len(examples)):
            examples[i]
    ways = {"decode_us": ImageFolder(path=folder, val_fraction=cfg.dataset.val_fraction, lazy=True),
            "cached_us": dataset}
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(3):
        for way, data in ways.items():
            examples = data.split("train", encoder)
            start = time.perf_counter()
            for i in range(len(examples)):
                examples[i]
            times[way].append((time.perf_counter() - start) / len(examples) * 1e6)
    print(json.dumps({way: statistics.median(t) for way, t in times.items()}))


def entries(folder: Path) -> int:
    return sum(1 for _ in Path(cache_dir(folder)).rglob("*.safetensors"))


def workers_pss_mb() -> float:
    """The summed PSS of this process's children (the DataLoader workers), in MiB; Linux only."""
    me = os.getpid()
    children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
    total_kb = 0
    for pid in children:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        total_kb += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
    return total_kb / 1024


def beside_this_script() -> dict[str, object]:
    """A child process's folder and environment: it imports ``trainer_timing`` from here."""
    return {"cwd": Path(__file__).parent, "env": {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}}


def measure(folder: Path, way: str, warmup: int, steps: int, pipeline: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(folder), way, str(warmup), str(steps), pipeline],
        capture_output=True, text=True, **beside_this_script(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"{way} on {folder} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="numbers of files, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (a multiple of 10)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps (a multiple of 10)")
    parser.add_argument("--quick", action="store_true",
                        help="64 files, pipeline=image_folder_debug, 1 round, 10 + 10 steps")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--fill", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        fill_cache(*args.fill)
        return
    if args.child:
        folder, way, warmup, steps, pipeline = args.child
        child(folder, way, int(warmup), int(steps), pipeline)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = [64] if args.quick else [int(s) for s in args.sizes.split(",")]
    rounds, warmup, steps = (1, 10, 10) if args.quick else (args.rounds, args.warmup, args.steps)
    pipeline = "image_folder_debug" if args.quick else "image_folder"
    rows = []
    fills: list[tuple[int, float, int, dict[str, float]]] = []  # files, fill seconds, entries, read us
    with tempfile.TemporaryDirectory(prefix="genloom-image-folder-") as scratch:
        for n in sizes:
            folder = Path(scratch) / str(n)
            start = time.perf_counter()
            megabytes = make_folder(folder, n)
            log.info("%d PNGs (%.1f MB) written in %.1f s", n, megabytes, time.perf_counter() - start)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, __file__, "--fill", str(folder), pipeline], check=True,
                                  capture_output=True, text=True, **beside_this_script())
            fills.append((n, time.perf_counter() - start, entries(folder),
                          json.loads(done.stdout.strip().splitlines()[-1])))
            log.info("%d files: decoded cache filled in %.1f s", n, fills[-1][1])
            results: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
            for r in range(rounds):
                for way in WAYS:
                    results[way].append(measure(folder, way, warmup, steps, pipeline))
                    log.info("%d files, round %d, %s: %s", n, r + 1, way, results[way][-1])
            if entries(folder) != fills[-1][2]:
                raise RuntimeError(f"the cached runs decoded files: {entries(folder)} cache entries, "
                                   f"not the {fills[-1][2]} filled")
            shutil.rmtree(folder)  # disk is short: one folder at a time
            shutil.rmtree(cache_dir(folder))
            held_rate = statistics.median(m["images_per_s"] for m in results["held"])
            for way, runs in results.items():
                median = {key: statistics.median(m[key] for m in runs) for key in runs[0]}
                rows.append((n, way, median, median["images_per_s"] / held_rate))
    print(f"\nimage_folder, 32 x 32 PNGs, pipeline={pipeline}; medians of {rounds} "
          f"round(s), {steps} timed steps after {warmup}; torch threads 1; shared 2-core CPU")
    print(f"{'files':>7} {'way':<9} {'start-up s':>10} {'RSS gain MiB':>13} {'workers PSS':>12} "
          f"{'img/s':>7} {'vs held':>7}")
    for n, way, m, ratio in rows:
        workers = f"{m['workers_mb']:.0f}" if way.endswith("w") else "-"
        print(f"{n:>7} {way:<9} {m['startup_s']:>10.2f} {m['rss_mb']:>13.0f} {workers:>12} "
              f"{m['images_per_s']:>7.0f} {ratio:>6.2f}x")
    print("\ndecoded cache (dataset.cache_decoded=true), filled once before the cached runs; then one "
          "epoch of the training split read without training, median of 3 interleaved:")
    print(f"{'files':>7} {'entries':>8} {'fill s':>7} {'decode us/img':>14} {'cached us/img':>14} "
          f"{'speed-up':>9}")
    for n, seconds, count, read in fills:
        print(f"{n:>7} {count:>8} {seconds:>7.1f} {read['decode_us']:>14.0f} {read['cached_us']:>14.0f} "
              f"{read['decode_us'] / read['cached_us']:>8.2f}x")


if __name__ == "__main__":
    main()
