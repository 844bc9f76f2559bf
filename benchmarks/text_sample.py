"""Text sampling throughput: genloom's KV-cache sampler against Hugging Face's ``generate``.

One genloom Transformer (``bias=True``) is trained briefly on pydoc bytes, so that its
next-token logits are decided rather than near-ties, and its weights are copied into a
``GPT2LMHeadModel`` configured with the exact GELU genloom uses (``activation_function=
"gelu"``; GPT-2's default ``gelu_new`` is a different function). Then each contender
greedily continues the same prompt by ``--new-tokens`` tokens, at each batch size:

* ``genloom``: ``Transformer.generate(temperature=0)``, the sampler's KV-cache path;
* ``HF``: ``GPT2LMHeadModel.generate(do_sample=False, use_cache=True)``;
* ``no cache``: genloom recomputing the whole context for every token.

The benchmark asserts that all three produce identical tokens. Repetitions interleave
the contenders; the table shows median tokens/s (new tokens of all rows per second).
The recomputing path is slow, so it is timed once.

    python benchmarks/text_sample.py                  # small and large, batch 1 and 8
    python benchmarks/text_sample.py --quick          # tiny, few tokens (smoke test)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from genloom_text.gpt2 import copy_to_gpt2, gpt2_like
from genloom_text.model import Transformer
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from text_train import cpu_name, pydoc_bytes  # noqa: E402

PROMPT = "The with statement"


@dataclass(frozen=True)
class Size:
    n_layer: int
    n_head: int
    n_embd: int
    train_steps: int  # brief training so that greedy choices are not near-ties


SIZES = {
    "small": Size(n_layer=4, n_head=4, n_embd=128, train_steps=150),
    "large": Size(n_layer=6, n_head=6, n_embd=384, train_steps=60),
    "tiny": Size(n_layer=1, n_head=2, n_embd=32, train_steps=20),
}


def trained_model(size: Size, block_size: int) -> Transformer:
    """A genloom Transformer trained for ``size.train_steps`` on pydoc windows of up to 64 bytes."""
    torch.manual_seed(0)
    model = Transformer(
        n_layer=size.n_layer, n_head=size.n_head, n_embd=size.n_embd, block_size=block_size, bias=True
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    data = pydoc_bytes()
    window = min(64, block_size) + 1
    for _ in range(size.train_steps):
        starts = torch.randint(len(data) - window, (16,)).tolist()
        tokens = torch.stack([data[s : s + window] for s in starts])
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model.eval()


def contenders(model: Transformer, prompt: Tensor, new_tokens: int) -> dict[str, Callable[[int], Tensor]]:
    """Greedy continuations ``(batch, new_tokens)`` of ``prompt``, by each contender."""

    def genloom(batch: int, use_cache: bool = True) -> Tensor:
        rows = model.generate(
            batch, condition=prompt, max_new_tokens=new_tokens, temperature=0.0, use_cache=use_cache
        )
        return torch.stack(rows)

    runs = {"genloom": genloom, "no cache": lambda batch: genloom(batch, use_cache=False)}
    try:
        hf_model = gpt2_like(model).eval()  # the model's own (exact) GELU
    except ImportError:
        print("transformers is not installed (pip install -e '.[bench]'): genloom only")
        return runs
    copy_to_gpt2(model, hf_model)

    @torch.inference_mode()
    def hf(batch: int) -> Tensor:
        ids = prompt.expand(batch, -1)
        out = hf_model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )
        return out[:, ids.shape[1] :]

    return {"genloom": genloom, "HF": hf, "no cache": runs["no cache"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["small", "large"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny model, 16 tokens, 1 repetition")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.new_tokens, args.reps = ["tiny"], 16, 1
    prompt = torch.tensor(list(PROMPT.encode()), dtype=torch.long)
    block_size = len(prompt) + args.new_tokens  # no context overflow: HF cannot slide its window

    rows = []
    for name in args.sizes:
        size = SIZES[name]
        model = trained_model(size, block_size)
        runs = contenders(model, prompt, args.new_tokens)
        for batch in args.batches:
            reference = runs["genloom"](batch)
            for contender, run in runs.items():
                if not torch.equal(run(batch), reference):
                    raise SystemExit(
                        f"{name}, batch {batch}: {contender}'s greedy tokens differ from genloom's"
                    )
            seconds: dict[str, list[float]] = {c: [] for c in runs}
            for rep in range(args.reps):
                for contender, run in runs.items():
                    if contender == "no cache" and rep:
                        continue  # quadratic and slow: timed once (its equality check above warmed it)
                    start = time.perf_counter()
                    run(batch)
                    seconds[contender].append(time.perf_counter() - start)
            rate = {c: batch * args.new_tokens / statistics.median(s) for c, s in seconds.items()}
            rows.append((f"{name} {size.n_layer}L/{size.n_head}H/{size.n_embd}", batch, rate))

    print(
        f"\ntext sampling, {time.strftime('%Y-%m-%d')}, {cpu_name()}, greedy, {args.new_tokens} new tokens "
        f"after a {len(prompt)}-token prompt, median of {args.reps} interleaved repetitions (tokens/s); "
        "outputs identical token for token"
    )
    names = list(rows[0][2])
    header = ["model", "batch", *names, *(f"genloom/{n}" for n in names if n != "genloom")]
    table = [
        [
            model,
            str(batch),
            *(f"{rate[n]:,.0f}" for n in names),
            *(f"{rate['genloom'] / rate[n]:.2f}x" for n in names if n != "genloom"),
        ]
        for model, batch, rate in rows
    ]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        cells = zip(row, widths, strict=True)
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
    print("target: genloom/HF >= 2x at batch 1 and 8")


if __name__ == "__main__":
    main()
