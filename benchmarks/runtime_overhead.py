"""The runtime's overhead on the image and audio generators, and Griffin-Lim's speed.

For each pipeline preset (``glyphs``: the label-conditioned image VAE; ``notes``: the
pitch-conditioned mel VAE), the same generator is trained two ways with the same batch
size and optimizer (fused AdamW, decay on weight matrices only, gradients clipped to 1):

* ``trainer``: :class:`genloom.trainer.Trainer` on the path ``genloom train`` takes;
* ``bare``: a plain PyTorch loop over the train split stacked into tensors, calling
  ``generator.loss`` directly.

Every run is a fresh process; repetitions interleave the two; the table shows median
examples/s and the trainer's overhead. Then the ``notes`` pipeline's Griffin-Lim decoder
turns validation mels into sound, and its real-time factor (decode time / audio
duration, below 1 is faster than real time) is reported.

    python benchmarks/runtime_overhead.py
    python benchmarks/runtime_overhead.py --quick     # debug presets, 1 repetition, batch 4 (smoke test)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from text_train import cpu_name  # noqa: E402
from trainer_timing import LOG_EVERY, compose_train_config, peak_rss_mb, trainer_rate  # noqa: E402

PRESETS = {"image": "glyphs", "audio": "notes"}
QUICK_PRESETS = {"image": "image_debug", "audio": "audio_debug"}


def bare_rate(overrides: list[str], *, warmup: int, steps: int) -> float:
    """Examples/s of the generator in a plain loop: index a batch, loss, backward, clip, step."""
    import torch
    from genloom import allocator, pipeline
    from genloom.plugins import active

    allocator.keep_freed_memory()  # as the Trainer does: the comparison is of the work, not of malloc
    cfg = compose_train_config(overrides)
    torch.manual_seed(cfg.seed)
    built = pipeline.build(cfg, active().registry)
    generator = built.generator.train()
    train = built.dataset.split("train", built.encoder, built.condition_encoder)
    examples = [train[i] for i in range(len(train))]
    data = {key: torch.stack([e[key] for e in examples]) for key in examples[0]}
    decay = [p for p in generator.parameters() if p.dim() >= 2]
    no_decay = [p for p in generator.parameters() if p.dim() < 2]
    s = cfg.trainer
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr,
        betas=tuple(s.betas),
        fused=True,
    )
    loss = torch.zeros(())
    for step in range(warmup + steps):
        if step == warmup:
            loss.item()
            start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = s.lr * min(1.0, (step + 1) / s.warmup_steps)
        index = torch.randint(len(train), (s.batch_size,))
        loss = generator.loss({key: value[index] for key, value in data.items()})["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(generator.parameters(), s.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    loss.item()
    return steps * s.batch_size / (time.perf_counter() - start)


def griffin_lim_rtf(preset: str, clips: int) -> tuple[float, float]:
    """(real-time factor, seconds of audio decoded) of the preset's decoder on validation mels."""
    import torch
    from genloom import pipeline
    from genloom.plugins import active

    cfg = compose_train_config([f"pipeline={preset}"])
    built = pipeline.build(cfg, active().registry)
    val = built.dataset.split("val", built.encoder, built.condition_encoder)
    key = next(iter(val[0]))  # the encoded clip: the mel spectrogram
    mels = [val[i][key] for i in range(min(clips, len(val)))]
    built.decoder.decode(mels[0])  # warm-up
    start = time.perf_counter()
    with torch.inference_mode():
        samples = sum(built.decoder.decode(mel).numel() for mel in mels)
    seconds = time.perf_counter() - start
    audio = samples / int(cfg.encoder.sample_rate)
    return seconds / audio, audio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run (multiple of 10)")
    parser.add_argument("--warmup", type=int, default=LOG_EVERY)
    parser.add_argument("--clips", type=int, default=32, help="clips Griffin-Lim decodes")
    parser.add_argument("--batch-size", type=int, help="trainer.batch_size (default: trainer=default's)")
    parser.add_argument("--quick", action="store_true",
                        help="debug presets, 1 repetition, 10 steps of batch 4: checks the script runs")
    parser.add_argument("--worker", choices=("trainer", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = trainer_rate if args.worker == "trainer" else bare_rate
        overrides = [f"pipeline={args.preset}", "trainer=default"]
        if args.batch_size:
            overrides.append(f"trainer.batch_size={args.batch_size}")
        rate = run(overrides, warmup=args.warmup, steps=args.steps)
        print(json.dumps({"rate": rate, "peak_rss_mb": peak_rss_mb()}))
        return
    presets = QUICK_PRESETS if args.quick else PRESETS
    if args.quick:
        args.reps, args.steps, args.clips, args.batch_size = 1, LOG_EVERY, 2, args.batch_size or 4

    rows = []
    for modality, preset in presets.items():
        runs: dict[str, list[dict]] = {"trainer": [], "bare": []}
        for _ in range(args.reps):
            for contender in runs:
                command = [
                    sys.executable,
                    __file__,
                    "--worker",
                    contender,
                    "--preset",
                    preset,
                    "--steps",
                    str(args.steps),
                    "--warmup",
                    str(args.warmup),
                    *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
                ]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{preset} {contender} failed:\n{done.stderr[-3000:]}")
                runs[contender].append(json.loads(done.stdout.strip().splitlines()[-1]))
        median = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in runs.items()}
        rows.append((modality, preset, median))
    rtf, audio = griffin_lim_rtf(presets["audio"], args.clips)

    print(
        f"\nruntime overhead, {time.strftime('%Y-%m-%d')}, {cpu_name()}, median of {args.reps} interleaved "
        f"repetitions of {args.steps} steps (examples/s; peak RSS MiB)"
    )
    print(f"{'generator':<18}  {'genloom trainer':>16}  {'bare loop':>16}  trainer overhead")
    for modality, preset, m in rows:
        overhead = m["bare"]["rate"] / m["trainer"]["rate"] - 1
        print(
            f"{modality + ' (' + preset + ')':<18}  "
            + "  ".join(f"{m[c]['rate']:>9,.0f} ({m[c]['peak_rss_mb']:>4.0f})" for c in ("trainer", "bare"))
            + f"  {overhead:>+15.1%}"
        )
    print(
        f"Griffin-Lim ({presets['audio']}): real-time factor {rtf:.3f} over {audio:.1f} s of audio "
        "(decode time / audio duration)"
    )
    print("target: trainer overhead <= 3%")


if __name__ == "__main__":
    main()
