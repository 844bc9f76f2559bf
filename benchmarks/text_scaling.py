"""How training cost grows with the text Transformer's size: tokens/s and peak memory, 0.4M to 25M.

Each size trains ``pipeline=text`` (byte vocabulary of 256, context 128, batch 8, fused
AdamW) through :class:`genloom.trainer.Trainer`, exactly as ``genloom train`` does, in a
fresh process with one torch thread; the sizes run interleaved round by round (small to
large, then again), and the table shows medians. For each size:

* tokens/s, timed between the trainer's reports after warm-up steps;
* achieved GFLOP/s: tokens/s x training FLOPs per token, ``6 * (N + 256 * d) + 12 * L * T * d``
  (N the block weights; the tied output head's matmul with its 256 x d weights; attention's
  scores and weighted sums over the T = 128 positions, forward and backward, counting
  the full square where the causal mask needs only half);
* peak resident memory of the process (``ru_maxrss``), and the part above what it held after
  its imports, next to ``16 B x parameters`` (fp32 weights, gradients, and AdamW's two
  moments): what the model itself must take, the rest being activations and allocator slack.

    python benchmarks/text_scaling.py              # six sizes, 2 rounds
    python benchmarks/text_scaling.py --rounds 1
    python benchmarks/text_scaling.py --quick      # one tiny size, a few steps: a smoke test
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from trainer_timing import trainer_rate  # noqa: E402

VOCAB, CONTEXT, BATCH = 256, 128, 8


@dataclass(frozen=True)
class Size:
    n_layer: int
    n_head: int
    n_embd: int
    steps: int  # timed steps (a multiple of 10), after 10 warm-up steps

    @property
    def block_params(self) -> int:
        """Weights in the blocks: attention (4 d^2) and MLP (8 d^2) per layer, biases and norms aside."""
        return 12 * self.n_layer * self.n_embd**2

    @property
    def flops_per_token(self) -> int:
        d = self.n_embd
        return 6 * (self.block_params + VOCAB * d) + 12 * self.n_layer * CONTEXT * d


SIZES = [
    Size(n_layer=2, n_head=4, n_embd=128, steps=60),
    Size(n_layer=4, n_head=4, n_embd=192, steps=40),
    Size(n_layer=4, n_head=4, n_embd=256, steps=30),
    Size(n_layer=8, n_head=4, n_embd=256, steps=20),
    Size(n_layer=6, n_head=6, n_embd=384, steps=10),
    Size(n_layer=8, n_head=8, n_embd=512, steps=10),
]
QUICK = [Size(n_layer=1, n_head=2, n_embd=32, steps=10)]


def child(size: Size) -> None:
    """One measurement in this fresh process; prints one JSON line."""
    import torch

    torch.set_num_threads(1)
    from genloom.plugins import active

    active()  # the plugins' imports belong to the baseline
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    overrides = [
        "pipeline=text", f"generator.n_layer={size.n_layer}", f"generator.n_head={size.n_head}",
        f"generator.n_embd={size.n_embd}", f"generator.block_size={CONTEXT}", f"trainer.batch_size={BATCH}",
        "trainer.progress=false",
    ]
    rate = trainer_rate(overrides, warmup=10, steps=size.steps) * CONTEXT
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens_per_s": rate, "peak_mb": peak, "above_mb": peak - baseline}))


def measure(size: Size) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(asdict(size))],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parameters(size: Size) -> int:
    """The model's parameter count, as built (embeddings, norms and biases included)."""
    from genloom_text.model import Transformer

    model = Transformer(vocab_size=VOCAB, block_size=CONTEXT, n_layer=size.n_layer, n_head=size.n_head,
                        n_embd=size.n_embd)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one tiny size, 1 round")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Size(**json.loads(args.child)))
        return
    sizes, rounds = (QUICK, 1) if args.quick else (SIZES, args.rounds)
    results: dict[Size, list[dict[str, float]]] = {size: [] for size in sizes}
    for _ in range(rounds):
        for size in sizes:
            results[size].append(measure(size))
            print(f"  {size}: {results[size][-1]}", file=sys.stderr)
    print(f"\ntext Transformer training vs size: vocab {VOCAB}, context {CONTEXT}, batch {BATCH}; "
          f"medians of {rounds} round(s); torch threads 1; shared 2-core CPU")
    print(f"{'params':>8} {'L':>2} {'d':>4} {'tokens/s':>9} {'GFLOP/s':>8} {'head+emb':>8} "
          f"{'attn T':>6} {'peak MiB':>9} {'above':>7} {'16 B/param':>10}")
    for size, runs in results.items():
        m = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        n = parameters(size)
        head = 6 * VOCAB * size.n_embd / size.flops_per_token  # share of the FLOPs in the 256-way head
        attention = 12 * size.n_layer * CONTEXT * size.n_embd / size.flops_per_token
        gflops = m["tokens_per_s"] * size.flops_per_token / 1e9
        print(f"{n / 1e6:>7.2f}M {size.n_layer:>2} {size.n_embd:>4} {m['tokens_per_s']:>9.0f} {gflops:>8.2f} "
              f"{100 * head:>7.0f}% {100 * attention:>5.0f}% {m['peak_mb']:>9.0f} {m['above_mb']:>7.0f} "
              f"{16 * n / 2**20:>10.0f}")


if __name__ == "__main__":
    main()
