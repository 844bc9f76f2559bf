"""Where a text training step's time goes, eager against ``torch.compile``d, by torch.profiler.

The step is :mod:`text_train`'s bare loop (genloom's Transformer, byte windows of the pydoc
corpus, fused AdamW, gradient clipping) at one of its sizes; ``--compiled`` compiles the
loss call as ``trainer.compile=true`` does. After warmup steps (compilation among them),
``--steps`` steps are profiled and the operators that took the most self CPU time are
printed, one table per variant, with the step's wall milliseconds; the matrix products
(``addmm``, ``mm``, ``bmm``) are summed apart, since they are the arithmetic neither
variant can avoid.

    python benchmarks/text_profile.py --size large
    python benchmarks/text_profile.py --quick          # tiny size, 2 steps (smoke test)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from text_train import BETAS, LR, SIZES, WEIGHT_DECAY, build_model, pydoc_bytes  # noqa: E402

MATMULS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear")


def profile(size_name: str, *, compiled: bool, warmup: int, steps: int, top: int) -> None:
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    size = SIZES[size_name]
    torch.manual_seed(0)
    model = build_model("bare", size)
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
         {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}],
        lr=LR, betas=BETAS, fused=True,
    )
    data, window = pydoc_bytes(), size.block_size + 1

    def loss_of(tokens: torch.Tensor) -> torch.Tensor:  # (B, T + 1) -> ()
        logits = model(tokens[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())

    if compiled:
        from genloom.compiling import compile_step

        loss_of = compile_step(loss_of, torch.device("cpu"))  # trainer.compile=true's options

    def step() -> None:
        starts = torch.randint(len(data) - window, (size.batch_size,)).tolist()
        loss = loss_of(torch.stack([data[s : s + window] for s in starts]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - start) / steps * 1e3
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / steps / 1e3
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / steps / 1e3
    variant = "compiled" if compiled else "eager"
    print(f"\n{variant}, {size_name}: {wall:.1f} ms a step (profiled), self CPU {total:.1f} ms, "
          f"of which matrix products {matmul:.1f} ms ({matmul / total:.0%})")
    print(f"{'operator':48} {'ms/step':>8} {'calls/step':>10}")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        print(f"{e.key[:48]:48} {e.self_cpu_time_total / steps / 1e3:8.2f} {e.count / steps:10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--eager-only", action="store_true", help="skip the compiled variant")
    parser.add_argument("--quick", action="store_true", help="tiny size, eager only, 2 steps")
    args = parser.parse_args()
    if args.quick:
        args.size, args.steps, args.warmup, args.eager_only = "tiny", 2, 1, True
    import torch

    torch.set_num_threads(1)  # the machine is shared: one thread keeps the profile stable
    from genloom import allocator

    allocator.keep_freed_memory()  # the malloc settings the Trainer runs with
    for compiled in (False,) if args.eager_only else (False, True):
        profile(args.size, compiled=compiled, warmup=args.warmup, steps=args.steps, top=args.top)


if __name__ == "__main__":
    main()
