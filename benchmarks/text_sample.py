"""Text sampling throughput: genloom's KV-cache sampler against Hugging Face's ``generate``.

One genloom Transformer (``bias=True``) is trained briefly on pydoc bytes, so that its
next-token logits are decided rather than near-ties, and its weights are copied into a
``GPT2LMHeadModel`` configured with the exact GELU genloom uses (``activation_function=
"gelu"``; GPT-2's default ``gelu_new`` is a different function). Then each contender
greedily continues the same prompt by ``--new-tokens`` tokens, at each batch size:

* ``genloom``: ``Transformer.generate(temperature=0)``, the sampler's KV-cache path;
* ``compiled``: the same with ``compile=True`` (the decode step under ``torch.compile``);
  its one-off compile is timed apart and printed below the table;
* ``HF``: ``GPT2LMHeadModel.generate(do_sample=False, use_cache=True)``;
* ``no cache``: genloom recomputing the whole context for every token.

The benchmark asserts that all of them produce identical tokens. Repetitions interleave
the contenders; the table shows median tokens/s (new tokens of all rows per second).
The recomputing path is slow, so it is timed once.

Then two more tables:

* **Continuous batching** (``--cb-batches``): B requests of *different* prompts (pydoc
  windows of 8 to 40 bytes), each its own request to ``genloom.serve``'s
  ``ContinuousEngine`` (the engine ``genloom serve`` runs: rows in the model's
  ``SlotBatch``, text decoded incrementally, events to an asyncio loop), all submitted at
  once, against HF ``generate`` on the same prompts left-padded into one batch. Greedy
  tokens are asserted identical row for row.
* **Scaling** (``--scaling``): the time of one decode step (eager cache and compiled)
  against the context length it attends over and the batch, on the small shape with a
  context of 1024 (random weights: only time is measured).

    python benchmarks/text_sample.py --scaling        # everything: a few minutes a size
    python benchmarks/text_sample.py --quick          # tiny, few tokens, no compile (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from genloom.serve.engine import ContinuousEngine, RowSpec, TokenStream
from genloom.serve.metrics import Metrics
from genloom_text.gpt2 import copy_to_gpt2, gpt2_like
from genloom_text.model import Transformer
from genloom_text.tokenizer import ByteDecoder
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


def hf_twin(model: Transformer):  # noqa: ANN201
    """``GPT2LMHeadModel`` with ``model``'s weights and exact GELU, or None without transformers."""
    try:
        hf_model = gpt2_like(model).eval()  # the model's own (exact) GELU
    except ImportError:
        print("transformers is not installed (pip install -e '.[bench]'): genloom only")
        return None
    copy_to_gpt2(model, hf_model)
    return hf_model


def contenders(
    model: Transformer, hf_model, prompt: Tensor, new_tokens: int, compile: bool  # noqa: ANN001
) -> dict[str, Callable[[int], Tensor]]:
    """Greedy continuations ``(batch, new_tokens)`` of ``prompt``, by each contender."""

    def genloom(batch: int, use_cache: bool = True, compile: bool = False) -> Tensor:
        rows = model.generate(batch, condition=prompt, max_new_tokens=new_tokens, temperature=0.0,
                              use_cache=use_cache, compile=compile)
        return torch.stack(rows)

    runs = {"genloom": genloom}
    if compile:
        runs["compiled"] = lambda batch: genloom(batch, compile=True)
    if hf_model is not None:

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

        runs["HF"] = hf
    runs["no cache"] = lambda batch: genloom(batch, use_cache=False)
    return runs


def greedy_rows(
    model: Transformer, hf_model, prompt: Tensor, name: str, batches: list[int], new_tokens: int,  # noqa: ANN001
    reps: int, compile: bool,
) -> tuple[list[tuple[str, int, dict[str, float]]], dict[int, float]]:
    """Median tokens/s of every contender at each batch, and the compile seconds by batch."""
    runs = contenders(model, hf_model, prompt, new_tokens, compile)
    rows, compile_seconds = [], {}
    for batch in batches:
        start = time.perf_counter()
        reference = runs["genloom"](batch)
        eager_seconds = time.perf_counter() - start
        outputs = {}
        if compile:
            start = time.perf_counter()
            outputs["compiled"] = runs["compiled"](batch)  # the first call compiles this batch size
            compile_seconds[batch] = time.perf_counter() - start - eager_seconds
        outputs.update((c, run(batch)) for c, run in runs.items() if c not in outputs)
        for contender, out in outputs.items():
            if not torch.equal(out, reference):
                raise SystemExit(f"{name}, batch {batch}: {contender}'s greedy tokens differ from genloom's")
        seconds: dict[str, list[float]] = {c: [] for c in runs}
        for rep in range(reps):
            for contender, run in runs.items():
                if contender == "no cache" and rep:
                    continue  # quadratic and slow: timed once (its equality check above warmed it)
                start = time.perf_counter()
                run(batch)
                seconds[contender].append(time.perf_counter() - start)
        rows.append((name, batch, {c: batch * new_tokens / statistics.median(s) for c, s in seconds.items()}))
    return rows, compile_seconds


def different_prompts(count: int, seed: int = 0) -> list[Tensor]:
    """``count`` pydoc windows of 8 to 40 bytes, each from its own place in the corpus."""
    data = pydoc_bytes()
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 41, (count,), generator=generator).tolist()
    starts = torch.randint(len(data) - 41, (count,), generator=generator).tolist()
    return [data[s : s + n] for s, n in zip(starts, lengths, strict=True)]


class EngineClient:
    """Requests to ``genloom.serve``'s ContinuousEngine, as ``genloom serve`` makes them, minus HTTP."""

    def __init__(self, model: Transformer, max_batch: int) -> None:
        served = SimpleNamespace(name="bench", generator=model, device=torch.device("cpu"),
                                 decoder=ByteDecoder())
        self.engine = ContinuousEngine(served, max_batch=max_batch, max_queue=max_batch, metrics=Metrics())

    def generate(self, prompts: list[Tensor], new_tokens: int) -> list[Tensor]:
        """Each prompt's greedy tokens, every prompt its own request, submitted at once."""

        async def requests() -> list[Tensor]:
            loop = asyncio.get_running_loop()
            options = {"max_new_tokens": new_tokens, "temperature": 0.0}
            streams = [TokenStream(loop, [RowSpec(p, options, seed=0)]) for p in prompts]
            for stream in streams:
                self.engine.submit(stream)
            tokens = []
            for stream in streams:
                while True:
                    kind, _, value, _ = await stream.events.get()
                    if kind == "error":
                        raise value
                    if kind == "done":
                        tokens.append(value[1])
                        break
            return tokens

        return asyncio.run(requests())

    def close(self) -> None:
        self.engine.close()
        self.engine.thread.join()


def hf_padded(hf_model, prompts: list[Tensor], new_tokens: int) -> list[Tensor]:  # noqa: ANN001
    """HF ``generate`` of every prompt in one batch, left-padded (what a batch of requests gets)."""
    longest = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p) :] = p
        mask[i, longest - len(p) :] = 1
    with torch.inference_mode():
        out = hf_model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0)
    return list(out[:, longest:])


def continuous_rows(
    model: Transformer, hf_model, name: str, batches: list[int], new_tokens: int, reps: int  # noqa: ANN001
) -> list[tuple[str, int, dict[str, float]]]:
    """Median tokens/s of the continuous batching engine and of HF's padded batch, by batch."""
    rows = []
    for batch in batches:
        prompts = different_prompts(batch, seed=batch)
        client = EngineClient(model, batch)
        runs = {"engine": lambda client=client, prompts=prompts: client.generate(prompts, new_tokens)}
        if hf_model is not None:
            runs["HF padded"] = lambda prompts=prompts: hf_padded(hf_model, prompts, new_tokens)
        try:
            outputs = {c: run() for c, run in runs.items()}
            for contender, out in outputs.items():
                for i, (got, want) in enumerate(zip(out, outputs["engine"], strict=True)):
                    if not torch.equal(got, want):
                        raise SystemExit(f"{name}, batch {batch}, prompt {i}: {contender}'s greedy tokens "
                                         "differ from the engine's")
            seconds: dict[str, list[float]] = {c: [] for c in runs}
            for _ in range(reps):
                for contender, run in runs.items():
                    start = time.perf_counter()
                    run()
                    seconds[contender].append(time.perf_counter() - start)
        finally:
            client.close()
        rows.append((name, batch, {c: batch * new_tokens / statistics.median(s) for c, s in seconds.items()}))
    return rows


def decode_step_ms(
    model: Transformer, batch: int, context: int, steps: int, compile: bool
) -> dict[str, float]:
    """Median milliseconds of one decode step of ``batch`` rows attending over ``context`` positions,
    eager and (with ``compile``) compiled, their steps interleaved."""
    prompt = torch.randint(model.vocab_size, (batch, context - 1), generator=torch.Generator().manual_seed(0))
    runs = {"eager": (model.new_kv_cache(), None)}
    if compile:
        runs["compiled"] = (model.new_kv_cache(), model._compiled_decode_step())
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for cache, _ in runs.values():
            model(prompt, cache)  # the prefill
        token = prompt[:, -1:].clone(memory_format=torch.contiguous_format)  # (B, 1), as sampling gives it
        for _ in range(steps + 1):
            for name, (cache, step) in runs.items():
                start = time.perf_counter()
                if step is None:
                    model(token, cache)
                else:
                    step(token, cache)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t[1:]) for name, t in times.items()}  # the first compiles


def scaling_table(contexts: list[int], batches: list[int], steps: int, compile: bool) -> list[list[str]]:
    """Decode tokens/s and ms per step (eager, and compiled with ``compile``) by context length and batch."""
    size = SIZES["small"]
    torch.manual_seed(0)
    model = Transformer(n_layer=size.n_layer, n_head=size.n_head, n_embd=size.n_embd,
                        block_size=max(contexts) + steps + 1, bias=True).eval()
    table = [["batch", "context", "eager ms/step", "eager tok/s"]]
    if compile:
        table[0] += ["compiled ms/step", "compiled tok/s", "compiled/eager"]
    for batch in batches:
        for context in contexts:
            ms = decode_step_ms(model, batch, context, steps, compile)
            eager = 1000 * batch / ms["eager"]
            table.append([str(batch), str(context), f"{ms['eager']:.2f}", f"{eager:,.0f}"])
            if compile:
                rate = 1000 * batch / ms["compiled"]
                table[-1] += [f"{ms['compiled']:.2f}", f"{rate:,.0f}", f"{ms['eager'] / ms['compiled']:.2f}x"]
    return table


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = zip(row, widths, strict=True)
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))


def ratio_table(rows: list[tuple[str, int, dict[str, float]]], over: list[str]) -> list[list[str]]:
    """Rows of tokens/s by contender, then each of ``over`` against every other contender."""
    names = list(rows[0][2])
    pairs = [(a, b) for a in over for b in names if b != a and b not in over]
    header = ["model", "batch", *names, *(f"{a}/{b}" for a, b in pairs)]
    return [header] + [
        [model, str(batch), *(f"{rate[n]:,.0f}" for n in names),
         *(f"{rate[a] / rate[b]:.2f}x" for a, b in pairs)]
        for model, batch, rate in rows
    ]


def print_greedy(
    greedy: list[tuple[str, int, dict[str, float]]], compile_seconds: dict[str, dict[int, float]],
    machine: str, args: argparse.Namespace, prompt_tokens: int,
) -> None:
    print(
        f"\ntext sampling, {machine}, greedy, {args.new_tokens} new tokens after a {prompt_tokens}-token "
        f"prompt, median of {args.reps} interleaved repetitions (tokens/s); outputs identical token for token"
    )
    print_table(ratio_table(greedy, ["genloom", "compiled"] if args.compile else ["genloom"]))
    print("target: compiled/HF >= 2.5x small, >= 2x large, at batch 1 and 8")
    for label, by_batch in compile_seconds.items() if args.compile else ():
        costs = ", ".join(f"batch {b}: {s:.1f} s" for b, s in by_batch.items())
        print(f"compile=True's one-off compile, {label}: {costs}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["small", "large"])
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8],
                        help="batch sizes of the greedy table (none: skip it)")
    parser.add_argument("--cb-batches", nargs="*", type=int, default=[1, 8, 32],
                        help="continuous batching: requests of different prompts (none: skip the table)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--scaling", action="store_true", help="also the decode step by context and batch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="time compile=True too (default: yes, but not with --quick: it costs seconds)")
    parser.add_argument("--quick", action="store_true", help="tiny model, 16 tokens, 1 repetition")
    args = parser.parse_args()
    if args.compile is None:
        args.compile = not args.quick
    torch.set_num_threads(args.threads)
    contexts, scaling_batches, scaling_steps = [16, 128, 512, 992], [1, 8, 32], 31
    if args.quick:
        args.sizes, args.new_tokens, args.reps, args.cb_batches = ["tiny"], 16, 1, [1, 4]
        contexts, scaling_batches, scaling_steps = [16, 64], [1, 4], 4
    prompt = torch.tensor(list(PROMPT.encode()), dtype=torch.long)
    block_size = 40 + args.new_tokens  # no context overflow: HF cannot slide its window

    greedy, compile_seconds, continuous = [], {}, []
    for name in args.sizes:
        size = SIZES[name]
        model = trained_model(size, block_size)
        hf_model = hf_twin(model)
        label = f"{name} {size.n_layer}L/{size.n_head}H/{size.n_embd}"
        rows, compile_seconds[label] = greedy_rows(model, hf_model, prompt, label, args.batches,
                                                   args.new_tokens, args.reps, args.compile)
        greedy += rows
        if args.cb_batches:
            continuous += continuous_rows(model, hf_model, label, args.cb_batches, args.new_tokens, args.reps)

    machine = f"{time.strftime('%Y-%m-%d')}, {cpu_name()}, torch threads {args.threads}"
    if greedy:
        print_greedy(greedy, compile_seconds, machine, args, len(prompt))
    if continuous:
        print(
            f"\ncontinuous batching, {machine}: B requests of different prompts (8-40 bytes), greedy, "
            f"{args.new_tokens} new tokens each, median of {args.reps} interleaved repetitions (tokens/s); "
            "outputs identical token for token"
        )
        print_table(ratio_table(continuous, ["engine"]))
    if args.scaling:
        print(f"\ndecode step by context and batch, {machine}: small shape, median of {scaling_steps} "
              "interleaved steps")
        print_table(scaling_table(contexts, scaling_batches, scaling_steps, args.compile))


if __name__ == "__main__":
    main()
