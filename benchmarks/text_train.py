"""Text training throughput: genloom against Hugging Face's GPT-2, and against itself bare.

Three contenders train the same shape of model (layers, heads, width, context, vocabulary
256, no dropout, biases) on byte windows of the pydoc corpus with the same batch and
optimizer (fused AdamW, decay on weight matrices only, betas (0.9, 0.95), the same
warmup-cosine learning rate, gradients clipped to norm 1):

* ``trainer``: genloom's Transformer built from the composed config by the registry and
  trained by :class:`genloom.trainer.Trainer`, exactly as ``genloom train`` does;
* ``bare``: the same model in a plain PyTorch loop (nanoGPT-style ``get_batch``);
* ``hf``: ``transformers.GPT2LMHeadModel`` (SDPA attention) in that same loop, with
  GPT-2's own ``gelu_new`` activation, and ``hf-gelu`` with the exact GELU genloom uses;
* ``trainer-compiled``: the Trainer with ``trainer.compile=true`` (inductor compiles the
  loss call, forward and backward);
* ``hf-compiled``: HF GPT-2 in the plain loop with the same scope compiled: ``torch.compile``
  of the forward and the cross entropy.

Compilation happens in the untimed warmup steps (``benchmarks/compile_cost.py`` measures
what it costs).

Every run is a fresh process, so its peak resident memory (``ru_maxrss``) is its own. Every
contender runs with the glibc malloc settings the Trainer sets (:mod:`genloom.allocator`):
without them a process's speed depended on what it had allocated before (up to 8%).
Repetitions interleave the contenders (A B C A B C ...) so that load from other processes
on the machine hits all of them alike; the table shows medians and ratios of medians.
Throughput is timed between two host syncs after ``--warmup`` steps.

    python benchmarks/text_train.py                  # small and large, 5 repetitions
    python benchmarks/text_train.py --sizes large --reps 3
    python benchmarks/text_train.py --threads 1     # one torch thread a run (a shared machine)
    python benchmarks/text_train.py --quick          # tiny, 1 repetition (smoke test)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from trainer_timing import LOG_EVERY, peak_rss_mb, trainer_rate  # noqa: E402

CONTENDERS = ("trainer", "bare", "trainer-compiled", "hf", "hf-compiled", "hf-gelu")
PEERS = ("hf", "hf-compiled", "hf-gelu")


@dataclass(frozen=True)
class Size:
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int
    steps: int  # timed steps per repetition (a multiple of LOG_EVERY)


SIZES = {
    "small": Size(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, steps=150),
    "large": Size(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=16, steps=30),
    "tiny": Size(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, steps=10),
}
LR, BETAS, WEIGHT_DECAY, WARMUP = 3e-3, (0.9, 0.95), 0.1, 50  # conf/trainer/default.yaml


# -- one contender, in its own process ---------------------------------------------------


def run_trainer(size: Size, warmup: int, compiled: bool) -> float:
    """Tokens/s of genloom's Trainer, on the path ``genloom train pipeline=text`` takes."""
    overrides = [
        f"trainer.compile={str(compiled).lower()}",
        "pipeline=text",
        f"generator.n_layer={size.n_layer}",
        f"generator.n_head={size.n_head}",
        f"generator.n_embd={size.n_embd}",
        f"generator.block_size={size.block_size}",
        "generator.bias=true",
        f"trainer.batch_size={size.batch_size}",
    ]
    return trainer_rate(overrides, warmup=warmup, steps=size.steps) * size.block_size


def run_bare(contender: str, size: Size, warmup: int) -> float:
    """Tokens/s of the model in a plain loop: get_batch, forward, loss, backward, clip, step."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build_model(contender, size)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
        betas=BETAS,
        fused=True,
    )
    data = pydoc_bytes()
    window = size.block_size + 1

    def get_batch() -> torch.Tensor:
        starts = torch.randint(len(data) - window, (size.batch_size,)).tolist()
        return torch.stack([data[s : s + window] for s in starts])  # (B, T + 1)

    hf = contender in PEERS

    def loss_of(tokens: torch.Tensor) -> torch.Tensor:
        logits = model(tokens[:, :-1]).logits if hf else model(tokens[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())

    if contender == "hf-compiled":
        loss_of = torch.compile(loss_of)
    loss = torch.zeros(())
    for step in range(warmup + size.steps):
        if step == warmup:
            loss.item()
            start = time.perf_counter()
        lr = LR * min(1.0, (step + 1) / WARMUP)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_of(get_batch())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    loss.item()
    return size.steps * size.batch_size * size.block_size / (time.perf_counter() - start)


def build_model(contender: str, size: Size):  # noqa: ANN201
    from genloom_text.model import Transformer

    genloom_model = Transformer(
        n_layer=size.n_layer, n_head=size.n_head, n_embd=size.n_embd, block_size=size.block_size, bias=True
    )
    if contender == "bare":
        return genloom_model
    from genloom_text.gpt2 import gpt2_like

    return gpt2_like(genloom_model, activation="gelu" if contender == "hf-gelu" else "gelu_new")


def pydoc_bytes():  # noqa: ANN201
    """The pydoc corpus as byte ids, as genloom's bytes encoder gives them."""
    from pydoc_data.topics import topics

    import torch

    text = "\n\n".join(topics[key] for key in sorted(topics))
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def worker(contender: str, size: Size, warmup: int, threads: int | None) -> None:
    from genloom import allocator

    # Every contender on the malloc settings genloom's Trainer uses (genloom.allocator), so
    # that no ratio below comes from glibc's history-dependent thresholds.
    allocator.keep_freed_memory()
    if threads:
        import torch

        torch.set_num_threads(threads)
    if contender.startswith("trainer"):
        rate = run_trainer(size, warmup, compiled=contender == "trainer-compiled")
    else:
        rate = run_bare(contender, size, warmup)
    print(json.dumps({"tokens_per_s": rate, "peak_rss_mb": peak_rss_mb()}))


# -- the driver ----------------------------------------------------------------------------


def measure(contender: str, size: Size, warmup: int, threads: int | None) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        contender,
        "--size-json",
        json.dumps(asdict(size)),
        "--warmup",
        str(warmup),
        *(["--threads", str(threads)] if threads else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{contender} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def available_contenders() -> list[str]:
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("transformers is not installed (pip install -e '.[bench]'): comparing genloom with itself only")
        return ["trainer", "bare", "trainer-compiled"]
    return list(CONTENDERS)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["small", "large"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=LOG_EVERY, help="untimed steps first (multiple of 10)")
    parser.add_argument("--threads", type=int, help="torch threads a run (default: torch's; 1 when shared)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, help="default: all available")
    parser.add_argument(
        "--quick", action="store_true", help="tiny size, 1 repetition: checks the script runs"
    )
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--size-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Size(**json.loads(args.size_json)), args.warmup, args.threads)
        return
    if args.quick:
        args.sizes, args.reps = ["tiny"], 1
    contenders = args.contenders or available_contenders()

    results = {}
    for name in args.sizes:
        size = SIZES[name]
        runs: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
        for _ in range(args.reps):
            for contender in contenders:
                runs[contender].append(measure(contender, size, args.warmup, args.threads))
                print(f"{name} {contender}: {runs[contender][-1]}", file=sys.stderr, flush=True)
        results[name] = {
            c: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for c, rs in runs.items()
        }
    print_table(results, contenders, args.reps, args.threads)


def print_table(results: dict, contenders: list[str], reps: int, threads: int | None) -> None:
    print(
        f"\ntext training, {time.strftime('%Y-%m-%d')}, {cpu_name()}, "
        f"{threads or 'default'} torch thread(s), median of {reps} interleaved repetitions "
        "(tokens/s; peak RSS MiB)"
    )
    labels = {
        "trainer": "genloom trainer",
        "bare": "genloom bare",
        "trainer-compiled": "genloom compiled",
        "hf": "HF GPT-2",
        "hf-compiled": "HF compiled",
        "hf-gelu": "HF (exact gelu)",
    }
    # (numerator, denominator, column): each printed when both contenders ran.
    ratios = [
        ("trainer", "hf", "trainer/HF"),
        ("bare", "hf", "bare/HF"),
        ("trainer", "hf-gelu", "trainer/HF-gelu"),
        ("trainer-compiled", "hf", "compiled/HF"),
        ("trainer-compiled", "hf-compiled", "compiled/HF-compiled"),
    ]
    ratios = [r for r in ratios if r[0] in contenders and r[1] in contenders]
    header = ["size", *(labels[c] for c in contenders), *(column for *_, column in ratios)]
    overhead = {"trainer", "bare"} <= set(contenders)
    if overhead:
        header += ["trainer overhead"]
    rows = []
    for name, by in results.items():
        size = SIZES[name]
        label = f"{name} {size.n_layer}L/{size.n_head}H/{size.n_embd} T={size.block_size} B={size.batch_size}"
        row = [label, *(f"{by[c]['tokens_per_s']:,.0f} ({by[c]['peak_rss_mb']:.0f})" for c in contenders)]
        rate = {c: by[c]["tokens_per_s"] for c in contenders}
        row += [f"{rate[a] / rate[b]:.2f}x" for a, b, _ in ratios]
        if overhead:
            row += [f"{(rate['bare'] / rate['trainer'] - 1):+.1%}"]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = zip(row, widths, strict=True)
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
    print("targets (issue 17): compiled/HF >= 1.5x, compiled/HF-compiled >= 1.15x, trainer overhead <= 3%")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {_cores()}"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    main()
