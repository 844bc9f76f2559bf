"""What ``trainer.compile=true`` costs up front, per built-in generator, and what it pays back.

For each generator kind, ``genloom train`` runs three times, each a fresh process, one
after another (eager, compiled cold, compiled warm):

* ``eager``: ``trainer.compile=false``;
* ``cold``: ``trainer.compile=true`` with an empty inductor cache (``GENLOOM_CACHE_DIR`` is a
  new directory): what a first run on a machine pays;
* ``warm``: the same again, the cache now holding the first run's kernels (inductor's FX
  graph and AOTAutograd caches): what every later run of the same model and batch shape pays.

Columns: the first step's seconds (the trainer logs it when compiling: compilation is
inside it), the whole process's wall seconds (50 steps, start-up, data, evaluation and the
checkpoint included), and the steady rate compiled against eager: the median of the four
10-step windows after the first (steps 11-50), so that one disturbed window does not
decide it. The two-stage prior first trains its FSQ stage 1 (eager, not timed).

    python benchmarks/compile_cost.py              # every generator kind, debug presets and text small
    python benchmarks/compile_cost.py --only text_debug
    python benchmarks/compile_cost.py --quick      # text_debug alone (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from text_train import cpu_name  # noqa: E402

STEPS = ["trainer.max_steps=50", "trainer.log_every=10", "trainer.eval_every=50",
         "trainer.checkpoint_every=50", "trainer.eval_batches=1", "trainer.progress=false"]
STEADY = (20, 30, 40, 50)  # the logged windows after the first (which compiles): steps 11-50
TEXT_SMALL = ["generator.n_layer=4", "generator.n_head=4", "generator.n_embd=128", "generator.block_size=64",
              "generator.bias=true", "trainer.batch_size=12"]  # text_train.py's small size
GENERATORS = {  # label -> (overrides, needs a stage 1)
    "text_debug": (["pipeline=text_debug", "trainer.batch_size=8"], False),
    "text small": (["pipeline=text", *TEXT_SMALL], False),
    "image VAE": (["pipeline=image_debug"], False),
    "audio VAE": (["pipeline=audio_debug"], False),
    "token prior": (["pipeline=glyphs_tokens_debug"], True),
}
FIRST_STEP = re.compile(r"first compiled step took ([0-9.]+) s")


def genloom_train(overrides: list[str], run_dir: Path, cache: Path) -> dict[str, float]:
    """One ``genloom train`` process: wall seconds, the first compiled step's, steps 11-50's median rate."""
    env = {**os.environ, "GENLOOM_CACHE_DIR": str(cache)}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    command = [sys.executable, "-m", "genloom", "train", *overrides, *STEPS, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [r["throughput"] for r in records if r["split"] == "train" and r["step"] in STEADY]
    first = FIRST_STEP.search(done.stderr + done.stdout)
    return {"wall": wall, "first_step": float(first.group(1)) if first else float("nan"),
            "rate": statistics.median(steady)}  # in the dataset's units: only compared within a preset


def measure(label: str, root: Path) -> dict[str, dict[str, float]]:
    overrides, staged = GENERATORS[label]
    work = root / label.replace(" ", "_")
    if staged:
        stage_1 = work / "stage_1"
        genloom_train(["pipeline=glyphs_vq_debug"], stage_1, work / "cache-stage-1")
        overrides = [*overrides, f"encoder.checkpoint={stage_1}"]
    cache = work / "cache"  # empty for the cold run, then reused by the warm one
    return {
        "eager": genloom_train(overrides, work / "eager", work / "cache-eager"),
        "cold": genloom_train([*overrides, "trainer.compile=true"], work / "cold", cache),
        "warm": genloom_train([*overrides, "trainer.compile=true"], work / "warm", cache),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=sorted(GENERATORS), help="default: every generator kind")
    parser.add_argument("--quick", action="store_true", help="text_debug alone: checks the script runs")
    args = parser.parse_args()
    labels = ["text_debug"] if args.quick else args.only or list(GENERATORS)
    with tempfile.TemporaryDirectory(prefix="genloom-compile-cost-") as root:
        results = {label: measure(label, Path(root)) for label in labels}
    print(f"\ntrainer.compile=true, {time.strftime('%Y-%m-%d')}, {cpu_name()}: first step and process "
          "wall seconds (50 steps); steady rate compiled (warm) over eager, the median of the "
          "10-step windows of steps 11-50")
    header = ["generator", "eager wall", "cold 1st step", "cold wall", "warm 1st step", "warm wall",
              "steady compiled/eager"]
    rows = [header]
    for label, by in results.items():
        rows.append([
            label, f"{by['eager']['wall']:.1f}",
            f"{by['cold']['first_step']:.1f}", f"{by['cold']['wall']:.1f}",
            f"{by['warm']['first_step']:.1f}", f"{by['warm']['wall']:.1f}",
            f"{by['warm']['rate'] / by['eager']['rate']:.2f}x",
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        cells = enumerate(zip(row, widths, strict=True))
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in cells))


if __name__ == "__main__":
    main()
