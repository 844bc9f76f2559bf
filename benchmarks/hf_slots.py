"""What continuous batching of ``hf_causal_lm`` costs: one forward pass per row, against a fused batch.

``HFSlotBatch`` (what ``genloom serve`` runs for a local HF model) advances each row with its
own forward pass, so that a row's tokens are exactly ``stream(n=1)``'s whatever shares the
batch. This measures what that choice gives up, in process (no HTTP), on one random model
directory written by ``genloom_hf.random_model`` (GPT-2 family; nothing downloaded):

* ``slots``: R rows with R different prompts in one ``HFSlotBatch``, stepped until all finish;
* ``one by one``: the same R rows, each with ``generate(1, ...)`` after the other;
* ``HF padded batch``: ``transformers``' ``generate`` on the R prompts left-padded into one
  batch (one fused forward pass per step), with how many rows' tokens equal ours.

Greedy, ``--new-tokens`` per row, a different prompt per row (pydoc lines); tokens per second
of all rows, median of ``--repeats``; torch on one thread.

    python benchmarks/hf_slots.py              # width 256, 4 layers, R = 1, 4, 16
    python benchmarks/hf_slots.py --quick      # a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from pydoc_data.topics import topics

import torch
from genloom_hf.causal_lm import HFCausalLM
from genloom_hf.random_model import write_random_model
from genloom_hf.tokenizer import HFTokenizer


def prompts(tokenizer: HFTokenizer, rows: int) -> list[torch.Tensor]:
    """``rows`` prompts of 8 to 24 tokens: different lengths, as real requests have."""
    lines = [line for name in sorted(topics) for line in topics[name].splitlines() if len(line) > 80]
    return [tokenizer.encode(lines[i])[: 8 + (i * 5) % 17] for i in range(rows)]


def slots(model: HFCausalLM, rows: list[torch.Tensor], new_tokens: int) -> list[list[int]]:
    batch = model.open_slots(len(rows))
    out: dict[int, list[int]] = {}
    for prompt in rows:
        out[batch.add(condition=prompt, temperature=0, max_new_tokens=new_tokens, stop_at_eos=False)] = []
    while batch.rows:
        for slot, step in batch.step().items():
            out[slot] += step.tokens.tolist()
    return [out[slot] for slot in sorted(out)]


def one_by_one(model: HFCausalLM, rows: list[torch.Tensor], new_tokens: int) -> list[list[int]]:
    return [
        model.generate(1, condition=p, temperature=0, max_new_tokens=new_tokens, stop_at_eos=False)[
            0
        ].tolist()
        for p in rows
    ]


@torch.inference_mode()
def padded_batch(model: HFCausalLM, rows: list[torch.Tensor], new_tokens: int) -> list[list[int]]:
    longest = max(len(p) for p in rows)
    ids = torch.zeros(len(rows), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, prompt in enumerate(rows):  # left padding, as batched generation needs
        ids[i, longest - len(prompt) :] = prompt
        mask[i, longest - len(prompt) :] = 1
    model.eval()
    out = model.model.generate(
        ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        eos_token_id=None,
        pad_token_id=0,
    )
    return out[:, longest:].tolist()


Contender = Callable[[HFCausalLM, list[torch.Tensor], int], list[list[int]]]


def timed(
    run: Contender, model: HFCausalLM, rows: list[torch.Tensor], new_tokens: int, repeats: int
) -> tuple[float, list[list[int]]]:
    times, tokens = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = run(model, rows, new_tokens)
        times.append(time.perf_counter() - start)
    return statistics.median(times), tokens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="width 64, 2 layers, R = 1 and 4, 8 tokens")
    args = parser.parse_args()
    if args.quick:
        args.width, args.layers, args.rows, args.new_tokens, args.repeats = 64, 2, [1, 4], 8, 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        directory = write_random_model(
            Path(tmp), family="gpt2", width=args.width, layers=args.layers, vocab_size=2048, context=256
        )
        model = HFCausalLM(path=str(directory)).eval()  # as genloom serve loads it
        tokenizer = HFTokenizer(path=str(directory))
    torch.manual_seed(0)
    with torch.no_grad():  # larger random weights, so greedy output varies with the prompt
        for param in model.model.parameters():
            param.normal_(0.0, 0.1)
    params = sum(p.numel() for p in model.model.parameters()) / 1e6
    print(
        f"hf_causal_lm, random GPT-2 {args.layers} x {args.width} ({params:.1f} M parameters), greedy, "
        f"{args.new_tokens} new tokens per row, 1 thread; tokens/s of all rows, median of {args.repeats}"
    )
    print(
        f"{'rows':>4}  {'slots':>8}  {'one by one':>10}  {'HF padded batch':>15}  {'HF rows equal ours':>18}"
    )
    for r in args.rows:
        rows = prompts(tokenizer, r)
        total = r * args.new_tokens
        t_slots, ours = timed(slots, model, rows, args.new_tokens, args.repeats)
        t_each, each = timed(one_by_one, model, rows, args.new_tokens, args.repeats)
        t_hf, theirs = timed(padded_batch, model, rows, args.new_tokens, args.repeats)
        assert ours == each, "slot rows differ from generate(1): the slot contract is broken"
        equal = sum(a == b for a, b in zip(ours, theirs, strict=True))
        print(
            f"{r:>4}  {total / t_slots:>8.0f}  {total / t_each:>10.0f}  {total / t_hf:>15.0f}  "
            f"{equal:>15}/{r:<2}"
        )


if __name__ == "__main__":
    main()
