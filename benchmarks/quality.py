"""What `image.py` and `audio.py` share: the approaches they compare, side by side.

An approach is a way to get a conditioned generator out of genloom presets:

* ``vae``: one preset, the single-stage VAE (``glyphs``, ``shapes``, ``notes``, ...);
* ``tokens``: two presets, stage 1 (a tokenizer, ``glyphs_vq``) and then stage 2 (a token
  prior, ``glyphs_tokens``) pointed at the trained stage 1 by :func:`stage2_overrides`;
* ``vae_minilm``: the VAE with its captions read by a pretrained sentence encoder
  (``shapes_minilm``: all-MiniLM-L6-v2 from genloom-hf) instead of hashed words; only for
  the caption tasks that name such a preset, and only when asked for (``--approaches``).

:class:`Runs` trains each preset at most once per invocation (``genloom train`` in a
fresh process, timed from start to exit) or reuses a run given as ``--checkpoint
PRESET=DIR``, whose training time is then read from its ``train.log`` (first to last
line: without the process start and the data preparation before the first line).
Samples are drawn through the sampler's own path, `genloom.sampler`: the condition a
``label=`` or ``prompt=`` makes, ``generator.generate``, then ``decoder.decode``, so
each approach is judged on the media a user gets from ``genloom sample``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from genloom import checkpoint, pipeline, sampler
from genloom.distributed import Placement
from genloom.plugins import PluginSet
from genloom.trainer import evaluate

log = logging.getLogger(__name__)

APPROACHES = ("vae", "tokens", "vae_minilm")
DEFAULT_APPROACHES = ("vae", "tokens")
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", re.MULTILINE)


def stage2_overrides(stage1_run: Path) -> list[str]:
    """The overrides that point a stage-2 preset at its trained stage 1.

    The one place that spells it: change it here if the two-stage presets take their
    stage 1 under another key.
    """
    return [f"encoder.checkpoint={stage1_run}"]


@dataclass(frozen=True)
class Presets:
    """The presets of one benchmark task: the VAE's, the two stages of ``tokens``, and the VAE
    with sentence-encoder captions (None where the task has no captions)."""

    vae: str
    stage1: str
    tokens: str
    minilm: str | None = None


@dataclass(frozen=True)
class Task:
    """A benchmark task: its presets for a real run, and the debug ones ``--quick`` trains."""

    name: str
    full: Presets
    quick: Presets
    samples_per_condition: int  # the default of --samples-per-condition


@dataclass
class Trained:
    run: Path
    seconds: float | None  # training wall time; None when it is not known
    timed_by: str  # "trained here" or where the time was read from


@dataclass
class Approach:
    """One approach's trained pipeline for a task, and how long it took to train."""

    name: str
    run: Path
    seconds: float | None  # stage 1 + stage 2 for tokens
    timed_by: str


def add_arguments(parser: argparse.ArgumentParser, tasks: Sequence[Task]) -> None:
    """The options every quality benchmark takes."""
    names = ",".join(t.name for t in tasks)
    parser.add_argument("--tasks", default=names, help=f"comma-separated subset of {names} (default: all)")
    parser.add_argument(
        "--approaches",
        default=",".join(DEFAULT_APPROACHES),
        help="comma-separated: vae (the single-stage preset), tokens (stage 1 + stage 2), vae_minilm "
        "(the VAE with MiniLM caption embeddings, caption tasks only); default vae,tokens",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="PRESET=DIR",
        help="reuse a trained run of PRESET instead of training it (repeatable), e.g. "
        "--checkpoint glyphs=outputs/train/DATE/TIME --checkpoint glyphs_vq=...",
    )
    parser.add_argument(
        "--samples-per-condition",
        type=int,
        default=None,
        help="samples drawn per label or prompt, for every approach alike (default: per task)",
    )
    parser.add_argument(
        "--sampling",
        action="append",
        default=[],
        metavar="APPROACH:KEY=VALUE",
        help="a sampling option of one approach's generator (repeatable), e.g. tokens:guidance=3; "
        "the table names every option used",
    )
    parser.add_argument(
        "--use-ema",
        choices=("auto", "true", "false"),
        default="auto",
        help="which weights are sampled and scored, as genloom sample's use_ema: auto (default) the "
        "EMA where a run kept one (trainer.ema.decay=...), false the raw weights; the table names them",
    )
    parser.add_argument("--quick", action="store_true", help="debug presets and a tiny judge: a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="where new runs go (default: a temp dir)")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default: outputs/benchmarks/<benchmark>.json)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every training run")


def chosen(value: str, allowed: Sequence[str], flag: str) -> list[str]:
    """The comma-separated choices of ``flag``, each checked against ``allowed``."""
    picks = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [p for p in picks if p not in allowed]
    if unknown or not picks:
        raise SystemExit(f"{flag} {value!r}: choose from {', '.join(allowed)} (comma-separated)")
    return picks


def reused_runs(pairs: Sequence[str]) -> dict[str, Path]:
    """``--checkpoint PRESET=DIR`` pairs as ``{preset: run}``, each checked to hold a checkpoint."""
    runs = {}
    for pair in pairs:
        preset, sep, directory = pair.partition("=")
        if not sep or not preset or not directory:
            raise SystemExit(
                f"--checkpoint {pair!r}: expected PRESET=DIR, e.g. glyphs=outputs/train/DATE/TIME"
            )
        try:
            checkpoint.resolve(directory)
        except (checkpoint.CheckpointError, OSError) as err:
            raise SystemExit(f"--checkpoint {pair!r}: {err}") from None
        runs[preset] = Path(directory)
    return runs


class Runs:
    """Trained runs by preset: each trained at most once per invocation, or reused."""

    def __init__(
        self, reuse: dict[str, Path], workdir: Path | None, overrides: Sequence[str], quick: bool
    ) -> None:
        self.reuse = reuse
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="genloom-bench-"))
        loose = [o for o in overrides if "=" not in o]
        if loose:  # `--tasks notes notes_caption` would otherwise pass notes_caption to Hydra unseen
            raise SystemExit(f"{' '.join(loose)}: not a Hydra override (KEY=VALUE); "
                             "several --tasks or --approaches are comma-separated")
        self.overrides = [*(["trainer=debug"] if quick else []), *overrides]
        self.done: dict[str, Trained] = {}

    def get(self, preset: str, extra: Sequence[str] = ()) -> Trained:
        if preset not in self.done:
            if preset in self.reuse:
                run = self.reuse[preset]
                self.done[preset] = Trained(run, logged_seconds(run), f"{run / 'train.log'}")
            else:
                self.done[preset] = self.train(preset, extra)
        return self.done[preset]

    def known(self, preset: str) -> Trained | None:
        """The run of ``preset`` if it was given or trained already; nothing is trained."""
        if preset in self.done:
            return self.done[preset]
        return self.get(preset) if preset in self.reuse else None

    def train(self, preset: str, extra: Sequence[str]) -> Trained:
        run = self.workdir / preset
        command = [
            sys.executable,
            "-m",
            "genloom",
            "train",
            f"pipeline={preset}",
            "trainer.progress=false",
            f"hydra.run.dir={run}",
            *extra,
            *self.overrides,
        ]
        log.info("training: %s", " ".join(command[2:]))
        start = time.perf_counter()
        done = subprocess.run(command)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(
                f"`genloom train pipeline={preset}` failed (exit {done.returncode}); its output is above"
                f" and its log in {run / 'train.log'}. If the preset is unknown, its plugin is not installed"
                " (or, for *_vq and *_tokens presets, the two-stage pipelines are not there yet): "
                "leave its approach out with --approaches"
            )
        return Trained(run, seconds, "trained here")


def approach(name: str, presets: Presets, runs: Runs) -> Approach:
    """Train (or reuse) what approach ``name`` needs; its run to sample and its training time."""
    if name in ("vae", "vae_minilm"):
        preset = presets.vae if name == "vae" else presets.minilm
        if preset is None:
            raise SystemExit(
                f"--approaches {name}: this task has no preset with sentence-encoder captions "
                f"(it is not caption-conditioned); leave {name} out"
            )
        vae = runs.get(preset)
        return Approach(name, vae.run, vae.seconds, vae.timed_by)
    stage1 = runs.known(presets.stage1)
    if presets.tokens in runs.reuse:  # stage 2 given: its stage 1 only counts when given too
        stage2 = runs.get(presets.tokens)
    else:
        stage1 = runs.get(presets.stage1)
        stage2 = runs.get(presets.tokens, stage2_overrides(stage1.run))
    if stage1 is None or stage1.seconds is None or stage2.seconds is None:
        missing = f"pass --checkpoint {presets.stage1}=DIR" if stage1 is None else "no train.log"
        return Approach(name, stage2.run, None, f"stage 1 + stage 2 unknown ({missing})")
    return Approach(
        name,
        stage2.run,
        stage1.seconds + stage2.seconds,
        f"stage 1: {stage1.timed_by}; stage 2: {stage2.timed_by}",
    )


def logged_seconds(run: Path) -> float | None:
    """Seconds from the first to the last line of ``run/train.log``; None without one."""
    path = run / "train.log"
    if not path.is_file():
        return None
    stamps = LOG_TIME.findall(path.read_text(errors="replace"))
    if len(stamps) < 2:
        return None
    first, last = (datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


@dataclass
class Judged(sampler.LoadedModel):
    """A loaded model and the sampling options its approach is judged with."""

    options: dict[str, Any] = field(default_factory=dict)


def load(
    run: Path, plugin_set: PluginSet, options: dict[str, Any] | None = None, use_ema: str = "auto"
) -> Judged:
    """``run``'s model as ``genloom sample`` loads it; ``use_ema`` as ``--use-ema`` gives it."""
    ema = {"auto": None, "true": True, "false": False}[use_ema]
    model = sampler.load(run, plugin_set, device="cpu", with_dataset=True, use_ema=ema)
    return Judged(model.pipeline, model.checkpoint, model.device, model.weights, dict(options or {}))


def sampling_options(specs: Sequence[str], approaches: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["tokens:guidance=3"]`` -> ``{"tokens": {"guidance": 3.0}}`` (numbers parsed, else strings)."""
    chosen: dict[str, dict[str, Any]] = {name: {} for name in approaches}
    for spec in specs:
        name, _, option = spec.partition(":")
        key, _, value = option.partition("=")
        if name not in chosen or not key or not value:
            raise SystemExit(f"--sampling {spec!r}: expected APPROACH:KEY=VALUE with APPROACH one of "
                             f"{', '.join(approaches)}")
        try:
            chosen[name][key] = int(value)
        except ValueError:
            try:
                chosen[name][key] = float(value)
            except ValueError:
                chosen[name][key] = value
    return chosen


def draw(
    model: sampler.LoadedModel,
    n: int,
    rng: torch.Generator,
    *,
    label: int | None = None,
    prompt: str | None = None,
) -> list[Any]:
    """``n`` decoded samples for ``label=`` or ``prompt=``, as ``genloom sample`` makes them."""
    condition = sampler.Sampler(model, hooks=None).condition(prompt, label)
    with torch.inference_mode():
        options = getattr(model, "options", {})
        outputs = model.pipeline.generator.generate(n, condition=condition, rng=rng, **options)
        return [model.pipeline.decoder.decode(out) for out in outputs]


def dataset_spec(model: sampler.LoadedModel) -> tuple[str, dict[str, Any]]:
    return pipeline.component_spec(model.checkpoint.config, "dataset")


def check_same_data(
    reference: tuple[str, dict[str, Any]], model: sampler.LoadedModel, keys: Sequence[str], what: str
) -> None:
    """Refuse to judge a run whose data differs from the judge's in ``keys``."""
    name, options = dataset_spec(model)
    ref_name, ref_options = reference
    differ = [k for k in keys if options.get(k) != ref_options.get(k)]
    if name != ref_name or differ:
        raise SystemExit(
            f"{model.checkpoint.path / 'config.yaml'}: dataset {name!r} "
            f"{ {k: options.get(k) for k in differ} } differs from the one {what} is judged on "
            f"({ref_name!r} { {k: ref_options.get(k) for k in differ} }); "
            "the approaches must be compared on the same data"
        )


def validation_scores(model: sampler.LoadedModel) -> dict[str, float]:
    """The generator's own validation metrics (``genloom eval``), over the whole split."""
    built = model.pipeline
    val = built.dataset.split("val", built.encoder, built.condition_encoder)
    return evaluate(
        built.generator, val, batch_size=128, max_batches=None, placement=Placement(torch.device("cpu"))
    )


def summary(per_condition: dict[str, float]) -> dict[str, Any]:
    """Overall (mean over conditions, each with the same number of samples) and the worst one."""
    worst = min(per_condition, key=per_condition.get)
    return {
        "overall": statistics.mean(per_condition.values()),
        "worst": {"condition": worst, "accuracy": per_condition[worst]},
    }


def number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def train_time(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.0f} s"


def side_by_side(title: str, rows: Sequence[tuple[str, Sequence[str]]], approaches: Sequence[str]) -> str:
    """A plain table: one row per measure, one column per approach."""
    width = max(len(name) for name, _ in rows)
    cells = max([len(c) for _, values in rows for c in values] + [len(a) for a in approaches])
    lines = [title, f"{'':<{width}}  " + "  ".join(f"{a:>{cells}}" for a in approaches)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{v:>{cells}}" for v in values) for name, values in rows]
    return "\n".join(lines)


def write_json(path: Path | None, benchmark: str, results: dict[str, Any]) -> Path:
    path = path or Path("outputs") / "benchmarks" / f"{benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "threads": torch.get_num_threads(),
        "tasks": results,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
