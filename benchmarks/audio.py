"""Audio benchmark: do pitch-conditioned samples sound at the pitch that was asked for?

Trains (or takes) a pitch-conditioned mel VAE on the synthesised `notes`, then asks it for
N samples of every pitch, turns each into sound with the pipeline's Griffin-Lim decoder,
and measures the sound's pitch with YIN (`genloom_audio.pitch`; torchaudio's
`detect_pitch_frequency` misreads clean synthetic tones by an octave or more). Reports
the share of samples whose median pitch lies within one semitone of the requested note,
the mel-spectrogram L1 of reconstructions on the validation split, the Griffin-Lim
decoder's real-time factor on this machine (decode time / audio duration), and the
training throughput.

    python benchmarks/audio.py                       # trains pipeline=notes first
    python benchmarks/audio.py --checkpoint outputs/train/DATE/TIME
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from genloom import checkpoint, pipeline, plugins, sampler
from genloom.distributed import Placement
from genloom.trainer import evaluate
from genloom_audio.pitch import median_pitch, semitones
from genloom_audio.synth import midi_hz, note_name


def train_notes(run_dir: Path, overrides: list[str]) -> None:
    command = [
        sys.executable, "-m", "genloom", "train", "pipeline=notes", "trainer.progress=false",
        f"hydra.run.dir={run_dir}", *overrides,
    ]
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="a trained notes run; default: train one now")
    parser.add_argument("--samples-per-pitch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the training run")
    args = parser.parse_args()

    run_dir = Path(args.checkpoint) if args.checkpoint else Path(tempfile.mkdtemp(prefix="genloom-bench-"))
    if not args.checkpoint:
        train_notes(run_dir, args.overrides)
    plugin_set = plugins.active()
    model = sampler.load(run_dir, plugin_set, device="cpu")
    ckpt = checkpoint.read(run_dir)
    built = pipeline.build(ckpt.config, plugin_set.registry)
    start = time.perf_counter()
    train = built.dataset.split("train", built.encoder, built.condition_encoder)
    synthesis_rate = len(train) / (time.perf_counter() - start)
    val = built.dataset.split("val", built.encoder, built.condition_encoder)
    generator, decoder = model.pipeline.generator, model.pipeline.decoder
    low, pitches = int(ckpt.config.dataset.low), int(ckpt.config.generator.num_classes)
    rate = int(ckpt.config.encoder.sample_rate)

    rng = torch.Generator().manual_seed(args.seed)
    errors, decode_seconds, audio_seconds = [], 0.0, 0.0
    with torch.inference_mode():
        for label in range(pitches):
            mels = generator.generate(args.samples_per_pitch, condition=torch.tensor(label), rng=rng)
            start = time.perf_counter()
            waveforms = torch.stack([decoder.decode(mel) for mel in mels])
            decode_seconds += time.perf_counter() - start
            audio_seconds += waveforms.numel() / rate
            f0 = median_pitch(waveforms, rate)
            errors.append(semitones(f0, midi_hz(low + label)).abs())  # NaN: no pitch found
    errors = torch.stack(errors)  # (pitches, samples)
    hits = (errors <= 1.0).float()  # NaN compares False: a sample without a pitch is a miss
    per_pitch = hits.mean(1)
    worst = int(per_pitch.argmin())
    unpitched = int(errors.isnan().sum())

    scores = evaluate(
        generator, val, batch_size=128, max_batches=None, placement=Placement(torch.device("cpu"))
    )
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    throughput = statistics.median(m["throughput"] for m in metrics if m["split"] == "train")

    rows = [
        ("pitch-conditioned samples within 1 semitone", f"{hits.mean().item():.1%}", "> 80%"),
        ("  worst pitch", f"{per_pitch[worst].item():.0%} ({note_name(low + worst)})", ""),
        ("  median error (semitones)", f"{errors.nanmedian().item():.2f}", ""),
        ("  samples with no pitch found", f"{unpitched} of {errors.numel()}", ""),
        ("mel L1 of reconstructions, validation", f"{scores['mel_l1']:.4f}", "normalised (1 = 80 dB)"),
        ("ELBO, validation (nats/clip)", f"{scores['elbo']:.1f}", ""),
        ("Griffin-Lim real-time factor (CPU)", f"{decode_seconds / audio_seconds:.3f}", "well under 1"),
        ("training throughput (clips/s, median)", f"{throughput:.0f}", ""),
        ("synthesis + log-mel of the training split (clips/s)", f"{synthesis_rate:.0f}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\naudio benchmark: {run_dir} (step {ckpt.step}), {time.strftime('%Y-%m-%d')}, "
          f"{args.samples_per_pitch} samples x {pitches} pitches, threads={torch.get_num_threads()}")
    print(f"{'measure':<{width}}  {'genloom':>22}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>22}  {target}")


if __name__ == "__main__":
    main()
