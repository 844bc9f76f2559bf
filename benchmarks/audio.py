"""Audio benchmark: do conditioned samples sound at the pitch asked for? Approaches side by side.

Two tasks on the synthesised `notes`, both judged by YIN (`genloom_audio.pitch`; torchaudio's
`detect_pitch_frequency` misreads clean synthetic tones by an octave or more), which
learns nothing and shares no code with any generator. A sample counts when its median
pitch lies within one semitone of the note asked for; a sample with no pitch is a miss.

* ``notes``: pitch-conditioned (``label=12`` is the note an octave above ``dataset.low``);
  every pitch is asked for.
* ``notes_caption``: caption-prompted; one prompt per pitch, the timbres in turn
  ("a sine C4", "a square C#4", ...).

Each approach (`quality.py`: ``vae``, the single-stage preset; ``tokens``, stage 1 then
stage 2) is trained here or reused, sampled the same number of times per condition with
the same seed through the sampler's path (the pipeline's decoder turns each sample into
sound), and judged alike. The tables give per-condition accuracy, the overall mean, the
worst condition, the median pitch error, the decoder's real-time factor on this machine
(decode time / audio duration) and the training wall time; the results also go to a JSON
file.

    python benchmarks/audio.py                                   # both tasks, both approaches
    python benchmarks/audio.py --tasks notes --approaches vae --checkpoint notes=outputs/train/DATE/TIME
    python benchmarks/audio.py --quick --approaches vae          # debug presets: a smoke test
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import quality
import torch
from genloom import plugins
from genloom_audio.pitch import median_pitch, semitones
from genloom_audio.synth import midi_hz, note_name
from quality import Presets, Task

log = logging.getLogger("benchmarks.audio")

NOTES = Task(
    "notes",
    Presets("notes", "notes_vq", "notes_tokens"),
    Presets("audio_debug", "notes_vq_debug", "notes_tokens_debug"),
    samples_per_condition=8,
)
NOTES_CAPTION = Task(
    "notes_caption",
    Presets("notes_caption", "notes_vq", "notes_caption_tokens", "notes_caption_minilm"),
    Presets("audio_caption_debug", "notes_vq_debug", "notes_caption_tokens_debug"),
    samples_per_condition=8,
)
TASKS = {t.name: t for t in (NOTES, NOTES_CAPTION)}
DATA_KEYS = ("sample_rate", "duration", "low", "high", "timbres")  # the approaches must share these


def conditions(task: str, options: dict[str, Any]) -> list[tuple[str, dict[str, Any], int]]:
    """``(name, sampler condition, MIDI note asked for)`` for every condition of ``task``."""
    low, high, timbres = int(options["low"]), int(options["high"]), list(options["timbres"])
    if task == "notes":
        return [(note_name(m), {"label": m - low}, m) for m in range(low, high + 1)]
    prompts = [f"a {timbres[i % len(timbres)]} {note_name(m)}" for i, m in enumerate(range(low, high + 1))]
    return [(p, {"prompt": p}, m) for p, m in zip(prompts, range(low, high + 1), strict=True)]


def judge(
    model, asked: list[tuple[str, dict[str, Any], int]], rate: int, n: int, seed: int
) -> dict[str, Any]:
    """Draw ``n`` sounds per condition; how many YIN hears within a semitone of the asked note."""
    rng = torch.Generator().manual_seed(seed)
    per_condition, errors, decode_seconds, audio_seconds = {}, [], 0.0, 0.0
    for name, condition, midi in asked:
        start = time.perf_counter()
        waveforms = torch.stack(quality.draw(model, n, rng, **condition))  # decode included, as sample does
        decode_seconds += time.perf_counter() - start
        audio_seconds += waveforms.numel() / rate
        error = semitones(median_pitch(waveforms, rate), midi_hz(midi)).abs()  # NaN: no pitch found
        per_condition[name] = (error <= 1.0).float().mean().item()  # NaN compares False: a miss
        errors.append(error)
    errors = torch.cat(errors)
    median = errors.nanmedian().item()  # NaN when no sample had a pitch
    return {
        "per_condition": per_condition,
        **quality.summary(per_condition),
        "median_error_semitones": None if median != median else median,
        "unpitched": int(errors.isnan().sum()),
        "samples": errors.numel(),
        "sampling_real_time_factor": decode_seconds / audio_seconds,
    }


def run_task(
    task: Task, names: list[str], runs: quality.Runs, args: argparse.Namespace, plugin_set: plugins.PluginSet
) -> dict[str, Any]:
    presets = task.quick if args.quick else task.full
    n = args.samples_per_condition or (2 if args.quick else task.samples_per_condition)
    approaches = [quality.approach(name, presets, runs) for name in names]
    sampling = quality.sampling_options(args.sampling, [a.name for a in approaches])
    models = {a.name: quality.load(a.run, plugin_set, sampling[a.name], args.use_ema) for a in approaches}
    reference = quality.dataset_spec(models[names[0]])
    for model in models.values():
        quality.check_same_data(reference, model, DATA_KEYS, task.name)
    options = reference[1]
    asked = conditions(task.name, options)
    results = {"judge": "YIN median pitch within 1 semitone", "samples_per_condition": n, "approaches": {}}
    for a in approaches:
        log.info("%s: judging %s (%s)", task.name, a.name, a.run)
        model = models[a.name]
        results["approaches"][a.name] = {
            "run": str(a.run),
            "step": model.checkpoint.step,
            "train_seconds": a.seconds,
            "sampling": models[a.name].options,
            "weights": models[a.name].weights,
            "train_time_from": a.timed_by,
            **judge(model, asked, int(options["sample_rate"]), n, args.seed),
            "validation": quality.validation_scores(model),
        }
    return results


def table(task: str, results: dict[str, Any]) -> str:
    approaches = list(results["approaches"])
    got = [results["approaches"][a] for a in approaches]
    rows = [(name, [f"{g['per_condition'][name]:.0%}" for g in got]) for name in got[0]["per_condition"]]
    rows += [
        ("overall: within 1 semitone", [f"{g['overall']:.1%}" for g in got]),
        ("worst condition", [f"{g['worst']['accuracy']:.0%} {g['worst']['condition']}" for g in got]),
        ("median error (semitones)", [quality.number(g["median_error_semitones"], ".2f") for g in got]),
        ("samples with no pitch found", [f"{g['unpitched']} of {g['samples']}" for g in got]),
        ("sample + decode real-time factor", [f"{g['sampling_real_time_factor']:.3f}" for g in got]),
    ]
    metrics = sorted({k for g in got for k in g["validation"]})
    rows += [
        (f"validation {k}", [f"{g['validation'][k]:.4g}" if k in g["validation"] else "-" for g in got])
        for k in metrics
    ]
    rows.append(("sampling options", [", ".join(f"{k}={v}" for k, v in g["sampling"].items()) or "defaults"
                                      for g in got]))
    rows.append(("weights (--use-ema)", [g["weights"] for g in got]))
    rows.append(("training wall time", [quality.train_time(g["train_seconds"]) for g in got]))
    rows.append(("step", [str(g["step"]) for g in got]))
    what = "pitch-conditioned" if task == "notes" else "caption-prompted"
    title = f"{task}: {what}, {results['samples_per_condition']} samples per condition, judged by YIN"
    return quality.side_by_side(title, rows, approaches)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    quality.add_arguments(parser, list(TASKS.values()))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tasks = quality.chosen(args.tasks, list(TASKS), "--tasks")
    names = quality.chosen(args.approaches, quality.APPROACHES, "--approaches")
    runs = quality.Runs(quality.reused_runs(args.checkpoint), args.workdir, args.overrides, args.quick)
    plugin_set = plugins.active()
    results = {name: run_task(TASKS[name], names, runs, args, plugin_set) for name in tasks}
    for name, result in results.items():
        print(f"\n{table(name, result)}")
    print(f"\nresults: {quality.write_json(args.json, 'audio', results)}")


if __name__ == "__main__":
    main()
