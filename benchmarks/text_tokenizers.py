"""Bytes against trained BPE tokenizers at equal training time: bits per byte, speed, samples.

For each corpus (the pydoc documentation, prose; and the Python standard library's own
``.py`` source, code: both ship with Python, nothing is downloaded) and each tokenizer
(``bytes``, and ``bpe`` with 512 / 2048 / 8192 ids), one run:

* the corpus is cut into pieces of text, one in ten held out (``TextSplits.pieces``, as
  ``genloom train`` cuts it for a fitted encoder); every tokenizer sees the same pieces, so
  every model is scored on the same held-out text, which no tokenizer and no model saw;
* a BPE is fitted on the training pieces (``BpeTokenizer.fit``, as ``genloom train`` does);
* genloom's Transformer (the ``pipeline=text`` shape: 2 layers, width 128, 4 heads, a
  context of 128 tokens) trains for the same ``--seconds`` of CPU time on one torch thread,
  batches of 32 windows, AdamW at 3e-3 with a 50-step warm-up and a cosine decay over the
  time budget (to 0.1x), gradients clipped at 1;
* every held-out window is scored: bits per byte is the total bits of all target tokens over
  the total UTF-8 bytes they cover, so tokenizers compare; training speed is tokens and
  bytes (tokens times the bytes each covers) per CPU second; a sample of ``--sample-bytes``
  bytes (temperature 0.8, from a newline, seed 0) shows what each model writes.

The budget is the process's CPU time (``time.process_time``), not the wall clock: on a
machine shared with other work, a wall-clock budget would hand whichever run met the least
load more training. With one torch thread a CPU second is one core busy for a second.

    python benchmarks/text_tokenizers.py                # 60 CPU s per run, 8 runs: 10 minutes on an idle core
    python benchmarks/text_tokenizers.py --seconds 30   # quicker, noisier
    python benchmarks/text_tokenizers.py --tiny         # seconds (smoke test)
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# This script is named after what it measures, which is also the name of the library it
# measures: drop its folder from the import path so `import tokenizers` finds the library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
from genloom_text.bpe import BpeDecoder, BpeTokenizer  # noqa: E402
from genloom_text.corpus import TextSplits  # noqa: E402
from genloom_text.model import Transformer  # noqa: E402
from genloom_text.tokenizer import ByteDecoder, ByteTokenizer  # noqa: E402

TOKENIZERS = ("bytes", "bpe-512", "bpe-2048", "bpe-8192")
LR, MIN_LR_RATIO, WARMUP, BETAS, CLIP = 3e-3, 0.1, 50, (0.9, 0.95), 1.0  # conf/trainer/default.yaml


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int


FULL = Shape(n_layer=2, n_head=4, n_embd=128, block_size=128, batch_size=32)  # pipeline=text
TINY = Shape(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4)


@dataclass
class Result:
    corpus: str
    tokenizer: str
    vocab: int
    bytes_per_token: float
    steps: int
    tokens_per_s: float
    bytes_per_s: float
    bits_per_byte: float
    sample: str


def corpora(limit: int) -> dict[str, str]:
    """pydoc's documentation text and the standard library's top-level modules, each cut to ``limit``."""
    from pydoc_data.topics import topics

    pydoc = "\n\n".join(topics[name] for name in sorted(topics))
    stdlib = Path(os.__file__).parent
    code = "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py")))
    return {"pydoc": pydoc[:limit], "stdlib .py": code[:limit]}


def encoders(name: str, train_text: list[str]) -> tuple[object, object]:
    """The encoder (fitted on ``train_text`` for a BPE) and its decoder."""
    if name == "bytes":
        return ByteTokenizer(), ByteDecoder()
    encoder = BpeTokenizer(vocab_size=int(name.split("-")[1]))
    encoder.fit(train_text)
    decoder = BpeDecoder()
    decoder.load_fitted(encoder.fitted_state())
    return encoder, decoder


def run(corpus: str, text: str, tokenizer: str, shape: Shape, seconds: float, sample_bytes: int) -> Result:
    torch.manual_seed(0)
    splits = TextSplits(text, source=corpus, block_size=shape.block_size, val_fraction=0.1)
    encoder, decoder = encoders(tokenizer, splits.pieces()["train"])
    windows = splits.cut_pieces(encoder)
    byte_ids = isinstance(encoder, ByteTokenizer)
    lengths = torch.ones(256, dtype=torch.long) if byte_ids else encoder.token_bytes()  # (vocab,) bytes
    vocab = int(len(lengths))
    model = Transformer(vocab_size=vocab, block_size=shape.block_size, n_layer=shape.n_layer,
                        n_head=shape.n_head, n_embd=shape.n_embd)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=0.1)
    train = windows["train"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    steps = tokens = covered = 0
    start = time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        progress = elapsed / seconds
        decay = MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))
        lr = LR * min(1.0, (steps + 1) / WARMUP) * decay
        for group in optimizer.param_groups:
            group["lr"] = lr
        picks = [order[(steps * shape.batch_size + i) % len(order)] for i in range(shape.batch_size)]
        batch = torch.stack([train[int(i)]["tokens"] for i in picks])  # (B, T + 1)
        loss = model.loss({"tokens": batch})["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        steps += 1
        tokens += batch[:, 1:].numel()
        covered += int(lengths[batch[:, 1:]].sum())
    elapsed = time.process_time() - start
    model.eval()
    bits, held_out = 0.0, 0
    val = windows["val"]
    with torch.no_grad():
        for first in range(0, len(val), 64):
            batch = torch.stack([val[i]["tokens"] for i in range(first, min(first + 64, len(val)))])
            logits = model(batch[:, :-1])  # (B, T, vocab)
            targets = batch[:, 1:].flatten()
            nats = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets, reduction="sum")
            bits += float(nats) / math.log(2)
            held_out += int(lengths[batch[:, 1:]].sum())
        per_token = covered / tokens
        new_tokens = min(shape.block_size - 1, math.ceil(sample_bytes / per_token))
        sampled = model.generate(1, rng=torch.Generator().manual_seed(0), temperature=0.8,
                                 max_new_tokens=new_tokens)
    return Result(corpus, tokenizer, vocab, per_token, steps, tokens / elapsed, covered / elapsed,
                  bits / held_out, decoder.decode(sampled[0]))


def table(results: list[Result]) -> str:
    rows = ["| corpus | tokenizer | vocab | bytes/token | steps | tokens/CPU s | bytes/CPU s "
            "| held-out bits/byte |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {r.corpus} | {r.tokenizer} | {r.vocab} | {r.bytes_per_token:.2f} | {r.steps} | "
             f"{r.tokens_per_s:,.0f} | {r.bytes_per_s:,.0f} | {r.bits_per_byte:.3f} |" for r in results]
    rows += ["", "| corpus | tokenizer | sample (temperature 0.8; newlines as ⏎) |", "|---|---|---|"]
    rows += [f"| {r.corpus} | {r.tokenizer} | `{_one_line(r.sample)}` |" for r in results]
    return "\n".join(rows)


def _one_line(text: str) -> str:
    return text.replace("\n", "⏎").replace("|", "\\|").replace("`", "'")[:120]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training CPU time per run")
    parser.add_argument("--tokenizers", nargs="+", default=list(TOKENIZERS), choices=TOKENIZERS)
    parser.add_argument("--limit", type=int, default=1_000_000, help="characters kept of each corpus")
    parser.add_argument("--sample-bytes", type=int, default=200)
    parser.add_argument("--tiny", action="store_true", help="a tiny model for 2 s on 60 K characters")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = TINY if args.tiny else FULL
    seconds, limit = (2.0, 60_000) if args.tiny else (args.seconds, args.limit)
    results = []
    for corpus, text in corpora(limit).items():
        for tokenizer in args.tokenizers:
            result = run(corpus, text, tokenizer, shape, seconds, min(args.sample_bytes, 40) if args.tiny
                         else args.sample_bytes)
            print(f"{corpus} {tokenizer}: {result.bits_per_byte:.3f} bits/byte, {result.steps} steps",
                  file=sys.stderr, flush=True)
            results.append(result)
    print(f"# tokenizers at equal training time: {seconds:g} CPU s each, torch threads 1, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared with other work)")
    print(table(results))


if __name__ == "__main__":
    main()
