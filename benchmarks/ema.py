"""EMA of the weights: the validation metrics of the raw and the averaged weights of one run, step by step.

An EMA only reads the weights, so it does not change training: one run with
``trainer.ema.decay`` set holds, in each checkpoint, the raw weights and their average at
the same step. Each debug pipeline (the image and audio ones on a larger dataset than their
debug default, which they would overfit in a few hundred steps) is trained once per
learning-rate schedule (``genloom train``, its own process): ``cosine``, the trainer's
default decay to 10% of the peak, and ``constant`` (``trainer.min_lr_ratio=1``), where an
average has more noise to remove. A checkpoint is kept every ``--every`` steps; each is
loaded twice through the loader that ``genloom eval`` uses (``use_ema=false``, then
``true``) and scored on the same validation batches by the trainer's own ``evaluate``.
The tables give both and their difference (EMA - raw).

    python benchmarks/ema.py                                      # 3 pipelines x 2 schedules, 1000 steps
    python benchmarks/ema.py --pipelines text_debug --schedules constant --steps 2000 --decay 0.999
    python benchmarks/ema.py --reuse                              # score the runs in --workdir again
    python benchmarks/ema.py --update-cost outputs/train/DATE/TIME  # one update of that run's generator

Training and scoring run on one torch thread; the runs go to ``--workdir`` and the figures
to ``--json`` too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from genloom import checkpoint, plugins, sampler
from genloom.builtin import ema
from genloom.distributed import Placement
from genloom.trainer import evaluate

log = logging.getLogger("benchmarks.ema")

# Each pipeline with the data it is scored on (the debug datasets hold 48 examples).
PIPELINES = {
    "text_debug": [],
    "image_debug": ["dataset.size=2048"],
    "audio_debug": ["dataset.size=1024"],
}
SCHEDULES = {"cosine": [], "constant": ["trainer.min_lr_ratio=1.0"]}
METRICS = ("loss", "bits_per_byte", "psnr", "mel_l1")  # shown where the generator reports them (all: --json)


def train(pipeline: str, schedule: str, run: Path, args: argparse.Namespace) -> float:
    """``genloom train`` with the EMA on, a checkpoint every ``--every`` steps, all kept; its wall time."""
    command = [
        sys.executable, "-m", "genloom", "train", f"pipeline={pipeline}", "trainer=default",
        f"trainer.max_steps={args.steps}", f"trainer.checkpoint_every={args.every}",
        f"trainer.eval_every={args.steps}", f"trainer.keep_checkpoints={args.steps // args.every + 1}",
        f"trainer.ema.decay={args.decay}", "trainer.progress=false", "device=cpu", f"seed={args.seed}",
        f"hydra.run.dir={run}", *PIPELINES[pipeline], *SCHEDULES[schedule], *args.overrides,
    ]
    log.info("training: %s", " ".join(command[2:]))
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"`genloom train pipeline={pipeline}` failed (exit {done.returncode}); its log: "
                         f"{run / 'train.log'}")
    return time.perf_counter() - start


def score(
    step_dir: Path, plugin_set: plugins.PluginSet, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """``{"raw": metrics, "ema": metrics}`` of one checkpoint, on the same validation batches."""
    scores = {}
    for weights, use_ema in (("raw", False), ("ema", True)):
        model = sampler.load(step_dir, plugin_set, "cpu", with_dataset=True, use_ema=use_ema)
        built = model.pipeline
        val = built.dataset.split("val", built.encoder, built.condition_encoder)
        scores[weights] = evaluate(built.generator, val, batch_size=32, max_batches=args.eval_batches,
                                   placement=Placement(torch.device("cpu")))
    return scores


def update_microseconds(step_dir: Path, plugin_set: plugins.PluginSet) -> float:
    """One EMA update of this generator (what ``genloom_optimizer_step`` does), best of 5 x 100."""
    generator = sampler.load(step_dir, plugin_set, "cpu", use_ema=False).pipeline.generator
    weights = list(ema.averaged_tensors(generator).values())
    averages = [w.to(torch.float32, copy=True) for w in weights]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(100):
            torch._foreach_lerp_(averages, weights, 0.01)
        best = min(best, (time.perf_counter() - start) / 100)
    return best * 1e6


def update_cost(run: Path, plugin_set: plugins.PluginSet) -> str:
    """One EMA update of ``run``'s generator beside its training step (from its logged throughput)."""
    step_dir = checkpoint.resolve(run)
    update = update_microseconds(step_dir, plugin_set)
    config = checkpoint.read(step_dir).config
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    throughputs = sorted(r["throughput"] for r in records if r["split"] == "train")
    built = sampler.load(step_dir, plugin_set, "cpu", with_dataset=True, use_ema=False).pipeline
    units = config.trainer.batch_size * config.trainer.grad_accum * built.dataset.units_per_example
    step = units / throughputs[len(throughputs) // 2] * 1e6
    values = sum(t.numel() for t in ema.averaged_tensors(built.generator).values())
    return (f"{run}: one EMA update of {values:,} values: {update:.0f} µs; its median training step "
            f"(batch {config.trainer.batch_size}): {step:.0f} µs; the update is {100 * update / step:.2f}% "
            "of it")


def table(name: str, rows: list[dict[str, Any]], seconds: float | None, decay: float) -> str:
    metrics = [m for m in METRICS if m in rows[0]["raw"]]
    header = "| step | " + " | ".join(f"{m} raw | {m} EMA | EMA - raw" for m in metrics) + " |"
    lines = [f"{name}, trainer.ema.decay={decay}"
             + (f", trained in {seconds:.0f} s" if seconds is not None else ""),
             "", header, "|---:|" + "---:|---:|---:|" * len(metrics)]
    for row in rows:
        raw, ema = row["raw"], row["ema"]
        cells = [f"{raw[m]:.4f} | {ema[m]:.4f} | {ema[m] - raw[m]:+.4f}" for m in metrics]
        lines.append(f"| {row['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chosen(given: str, known: dict[str, Any]) -> list[str]:
    names = given.split(",")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {unknown[0]!r}; choose from {', '.join(known)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help="comma-separated")
    parser.add_argument("--schedules", default=",".join(SCHEDULES), help="comma-separated")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250, help="steps between the checkpoints scored")
    parser.add_argument("--decay", type=float, default=0.99)
    parser.add_argument("--eval-batches", type=int, default=20, help="validation batches of 32 per score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("outputs/benchmarks/ema"))
    parser.add_argument("--reuse", action="store_true", help="score the runs already in --workdir")
    parser.add_argument("--json", type=Path, default=None, help="default: WORKDIR/ema.json")
    parser.add_argument("--update-cost", type=Path, default=None, metavar="RUN",
                        help="only time one EMA update of RUN's generator beside its logged step time")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every training run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    plugin_set = plugins.active()
    if args.update_cost is not None:
        print(update_cost(args.update_cost, plugin_set))
        return
    results: dict[str, Any] = {}
    runs = [(p, s) for p in chosen(args.pipelines, PIPELINES) for s in chosen(args.schedules, SCHEDULES)]
    for pipeline, schedule in runs:
        name = f"{pipeline}, {schedule} lr"
        run = args.workdir / f"{pipeline}-{schedule}"
        seconds = None if args.reuse else train(pipeline, schedule, run, args)
        step_dirs = sorted(d for d in (run / "checkpoints").glob("step_*") if d.is_dir())
        if not step_dirs:
            raise SystemExit(f"{run / 'checkpoints'} holds no checkpoint: train it (leave out --reuse)")
        rows = [{"step": checkpoint.read(d).step, **score(d, plugin_set, args)} for d in step_dirs]
        decay = float(checkpoint.read(step_dirs[-1]).config.trainer.ema.decay)  # a reused run's own
        update = update_microseconds(step_dirs[-1], plugin_set)
        results[name] = {"seconds": seconds, "decay": decay, "update_us": update, "rows": rows}
        print(f"\n{table(name, rows, seconds, decay)}\n", flush=True)
        per_step = f"; the run took {1e6 * seconds / args.steps:.0f} µs a step, all in" if seconds else ""
        print(f"one EMA update: {update:.1f} µs{per_step}\n", flush=True)
    path = args.json or args.workdir / "ema.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
