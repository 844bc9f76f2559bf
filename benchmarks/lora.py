"""LoRA against full fine-tuning of one GPT-2-shaped model, through genloom's Trainer.

A GPT-2-shaped model with random weights (about 14M parameters: 6 layers of width 384, a
8192-id vocabulary) is written with ``save_pretrained`` into a temporary directory, and
``generator=hf_causal_lm`` fine-tunes it on pydoc twice: every weight, and LoRA
(``generator.lora.r=8``, peft's default target for GPT-2, ``c_attn``). Both are built by
:class:`genloom.trainer.Trainer` (its optimizer: AdamW over the parameters that require
gradients, its loss module, its data order) and trained by its step: forward, backward,
gradient clipping, optimizer step. Steps alternate between the two (full, LoRA, LoRA, full,
...), so a load that comes and goes on a shared machine slows both alike; the step time is
the median after a warm-up.

Memory is each variant's peak resident set (``VmHWM``) in a process of its own while it
trains a few steps, the peak reset once the trainer is built, and how far that peak rose
above the RSS just before the first step (the model's own weights are in both; the rise is
gradients, AdamW's state, activations); beside it, the exact bytes of fp32 gradients and
AdamW's two moments, which are what LoRA saves. The checkpoint column is the
size of ``model.safetensors`` as genloom's checkpoint writes it.

    .venv/bin/python benchmarks/lora.py            # a few minutes on one thread
    .venv/bin/python benchmarks/lora.py --tiny     # seconds: the smoke test's
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trainer_timing import build_trainer, compose_train_config  # noqa: E402 (this folder)

VARIANTS = ("full", "lora")


@dataclass(frozen=True)
class Size:
    vocab: int
    width: int
    layers: int
    context: int
    block: int
    batch: int
    warmup: int
    steps: int
    memory_steps: int


SIZES = {
    "small": Size(vocab=8192, width=384, layers=6, context=256, block=128, batch=8, warmup=2, steps=20,
                  memory_steps=3),
    "tiny": Size(vocab=384, width=32, layers=2, context=64, block=16, batch=4, warmup=1, steps=3,
                 memory_steps=1),
}


def overrides(model_dir: Path, size: Size, variant: str, run_dir: Path) -> list[str]:
    lora = ["generator.lora.r=8"] if variant == "lora" else []
    return [
        "pipeline=hf_text",
        f"generator.path={model_dir}",
        f"generator.block_size={size.block}",
        f"trainer.batch_size={size.batch}",
        "trainer.lr=1e-4",
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
        *lora,
    ]


def trainer_for(model_dir: Path, size: Size, variant: str, run_dir: Path):  # noqa: ANN201 - lazy imports
    import torch

    torch.manual_seed(0)
    cfg = compose_train_config(overrides(model_dir, size, variant, run_dir))
    return build_trainer(cfg, run_dir)


def train_step(trainer, batches) -> float:  # noqa: ANN001 - a Trainer and its batch iterator
    """One optimizer step as :meth:`Trainer._train_step` takes it (no accumulation); its seconds."""
    import torch

    start = time.perf_counter()
    loss = trainer.model(next(batches))["loss"]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainer.generator.parameters(), trainer.settings.grad_clip)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def rss_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}: this measurement needs Linux")


def measure_memory(model_dir: Path, size_name: str, variant: str) -> dict[str, float]:
    """Run in a process of its own: peak RSS while ``variant`` trains a few steps.

    The peak is reset once the trainer is built (``/proc/self/clear_refs``), so building the
    dataset, whose transient peak is the same for both, does not hide what training takes.
    """
    import gc

    size = SIZES[size_name]
    with tempfile.TemporaryDirectory(prefix="genloom-lora-") as run:
        trainer = trainer_for(model_dir, size, variant, Path(run))
        batches = trainer._train_batches(0)  # the Trainer's own data order
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        start = rss_mb("VmRSS")
        for _ in range(size.memory_steps):
            train_step(trainer, batches)
        peak = rss_mb("VmHWM")
    return {"peak_mb": peak, "start_mb": start}


def compare(model_dir: Path, size_name: str) -> dict[str, dict[str, float]]:
    """Interleaved steps of both variants in this process; memory from one child process each."""
    from genloom import checkpoint

    size = SIZES[size_name]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="genloom-lora-") as tmp:
        trainers = {v: trainer_for(model_dir, size, v, Path(tmp) / v) for v in VARIANTS}
        batches = {v: trainers[v]._train_batches(0) for v in VARIANTS}
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for i in range(size.warmup + size.steps):
            order = VARIANTS if i % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                seconds = train_step(trainers[variant], batches[variant])
                if i >= size.warmup:
                    times[variant].append(seconds)
        for variant, trainer in trainers.items():
            params = list(trainer.generator.parameters())
            trainable = sum(p.numel() for p in params if p.requires_grad)
            saved = checkpoint.save(Path(tmp) / variant / "checkpoints", step=0, model=trainer.generator,
                                    config=trainer.config, plugins={})
            results[variant] = {
                "trainable": trainable,
                "total": sum(p.numel() for p in params),
                "step_ms": 1000 * statistics.median(times[variant]),
                "state_mb": 3 * 4 * trainable / 2**20,  # fp32 gradient + AdamW's two moments
                "checkpoint_mb": (saved / "model.safetensors").stat().st_size / 2**20,
            }
    for variant in VARIANTS:
        child = subprocess.run(
            [sys.executable, __file__, "--size", size_name, "--memory", variant, "--model", str(model_dir)],
            capture_output=True, text=True, check=True,
        )
        results[variant].update(json.loads(child.stdout.strip().splitlines()[-1]))
    return results


def table(results: dict[str, dict[str, float]], size: Size) -> str:
    rows = [
        f"model: GPT-2 shape, {size.layers} layers x {size.width}, vocabulary {size.vocab}, "
        f"{results['full']['total'] / 1e6:.2f}M parameters; batch {size.batch} x {size.block} tokens; "
        f"median of {size.steps} interleaved steps after {size.warmup}",
        "",
        "| fine-tuning | trainable parameters | step (ms, median) | peak RSS training (MiB) | rise (MiB) "
        "| gradients + AdamW (MiB) | checkpoint weights (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"full": "full (every weight)", "lora": "LoRA r=8 (c_attn)"}
    for variant in VARIANTS:
        r = results[variant]
        share = 100 * r["trainable"] / r["total"]
        rows.append(
            f"| {names[variant]} | {r['trainable']:,.0f} ({share:.2f}%) | {r['step_ms']:.0f} "
            f"| {r['peak_mb']:.0f} | {r['peak_mb'] - r['start_mb']:.0f} | {r['state_mb']:.1f} "
            f"| {r['checkpoint_mb']:.2f} |"
        )
    full, lora = results["full"], results["lora"]
    rows += ["", f"LoRA/full: step time {lora['step_ms'] / full['step_ms']:.2f}x, "
                 f"checkpoint {lora['checkpoint_mb'] / full['checkpoint_mb']:.3f}x"]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model and a few steps (the smoke test)")
    parser.add_argument("--size", choices=SIZES, help=argparse.SUPPRESS)
    parser.add_argument("--memory", choices=VARIANTS, help=argparse.SUPPRESS)  # the child's job
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch
    from genloom_hf.random_model import write_random_model

    torch.set_num_threads(1)
    if args.memory:
        print(json.dumps(measure_memory(args.model, args.size, args.memory)))
        return
    size_name = "tiny" if args.tiny else "small"
    size = SIZES[size_name]
    with tempfile.TemporaryDirectory(prefix="genloom-lora-model-") as tmp:
        model_dir = write_random_model(Path(tmp), family="gpt2", vocab_size=size.vocab, width=size.width,
                                       layers=size.layers, context=size.context)
        results = compare(model_dir, size_name)
    print(table(results, size))


if __name__ == "__main__":
    main()
