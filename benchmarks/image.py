"""Image benchmark: do conditioned samples show the digit that was asked for?

Trains (or takes) a label-conditioned VAE on the embedded `glyphs` digits, trains a small
CNN classifier on the real glyph images, then asks the VAE for N samples of every digit
and reports the share the classifier reads as the requested digit. Also reports the
classifier's own accuracy on real validation images (the judge's ceiling), the VAE's
reconstruction PSNR and ELBO on the validation split, and its training throughput.

    python benchmarks/image.py                       # trains pipeline=glyphs first
    python benchmarks/image.py --checkpoint outputs/train/DATE/TIME
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
from torch import nn


class Judge(nn.Module):
    """A small CNN classifier for (C, R, R) images in [0, 1]."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def stack(data: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    examples = [data[i] for i in range(len(data))]
    return torch.stack([e["image"] for e in examples]), torch.stack([e["label"] for e in examples])


def train_judge(train, val, classes: int, epochs: int, seed: int) -> tuple[Judge, float]:
    torch.manual_seed(seed)
    images, labels = stack(train)
    judge = Judge(images.shape[1], classes)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(order), 128):
            idx = order[start : start + 128]
            loss = nn.functional.cross_entropy(judge(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    judge.eval()
    val_images, val_labels = stack(val)
    with torch.no_grad():
        accuracy = (judge(val_images).argmax(-1) == val_labels).float().mean().item()
    return judge, accuracy


def train_vae(run_dir: Path, overrides: list[str]) -> None:
    command = [
        sys.executable,
        "-m",
        "genloom",
        "train",
        "pipeline=glyphs",
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="a trained glyphs run; default: train one now")
    parser.add_argument("--samples-per-label", type=int, default=50)
    parser.add_argument("--judge-epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the training run")
    args = parser.parse_args()

    run_dir = Path(args.checkpoint) if args.checkpoint else Path(tempfile.mkdtemp(prefix="genloom-bench-"))
    if not args.checkpoint:
        train_vae(run_dir, args.overrides)
    plugin_set = plugins.active()
    model = sampler.load(run_dir, plugin_set, device="cpu")
    ckpt = checkpoint.read(run_dir)
    built = pipeline.build(ckpt.config, plugin_set.registry)
    train = built.dataset.split("train", built.encoder, built.condition_encoder)
    val = built.dataset.split("val", built.encoder, built.condition_encoder)
    classes = int(ckpt.config.generator.num_classes)

    judge, judge_accuracy = train_judge(train, val, classes, args.judge_epochs, args.seed)

    generator = model.pipeline.generator
    rng = torch.Generator().manual_seed(args.seed)
    per_label = []
    with torch.inference_mode():
        for label in range(classes):
            samples = generator.generate(args.samples_per_label, condition=torch.tensor(label), rng=rng)
            per_label.append((judge(samples).argmax(-1) == label).float().mean().item())
    hit_rate = statistics.mean(per_label)

    scores = evaluate(
        generator, val, batch_size=128, max_batches=None, placement=Placement(torch.device("cpu"))
    )
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    throughput = statistics.median(m["throughput"] for m in metrics if m["split"] == "train")

    rows = [
        ("conditioned samples read as the asked digit", f"{hit_rate:.1%}", "> 80%"),
        ("  worst digit", f"{min(per_label):.1%} (digit {per_label.index(min(per_label))})", ""),
        ("judge accuracy on real validation images", f"{judge_accuracy:.1%}", "ceiling"),
        ("reconstruction PSNR, validation (dB)", f"{scores['psnr']:.2f}", ""),
        ("ELBO, validation", f"{scores['elbo']:.2f}", ""),
        ("training throughput (images/s, median)", f"{throughput:.0f}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nimage benchmark: {run_dir} (step {ckpt.step}), {time.strftime('%Y-%m-%d')}")
    print(f"{'measure':<{width}}  {'genloom':>22}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>22}  {target}")


if __name__ == "__main__":
    main()
