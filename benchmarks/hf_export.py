"""A genloom text Transformer as a Hugging Face model directory, for servers that load one.

``transformers serve`` (and any tool that calls ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` on a path) needs the weights, a tokenizer and a generation
config on disk. The text plugin's ``Transformer.export(format="hf")`` writes all three
(:mod:`genloom_text.gpt2`, what ``genloom export format=hf`` runs): the weights as a
``GPT2LMHeadModel`` with genloom's exact GELU, a byte-level tokenizer whose ids are
genloom's, and a generation config without end-of-sequence token (a request runs to its
``max_tokens``), greedy by default.

    python benchmarks/hf_export.py                  # small, large and GPT-2 small's shape
    python benchmarks/hf_export.py --sizes tiny     # seconds

For each model it prints export and load times, the largest logit difference between
genloom and transformers, how many greedy tokens agree, the time ``init_from`` takes to
read the directory back and whether that gives the same weights. The check encodes a few
prompts, non-ASCII ones too, with both tokenizers and compares
the ids, then compares HF's greedy ``generate`` from the exported directory with genloom's
greedy sampling, token for token.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch
from genloom_text.model import Transformer
from genloom_text.tokenizer import ByteDecoder, ByteTokenizer
from torch import nn

log = logging.getLogger(__name__)

CHECK_PROMPTS = ["The with statement ", "naïve café — 東京 🙂 ", "def f(x):\n\treturn x\n", " two  spaces"]


def export(genloom_model: Transformer, directory: Path) -> nn.Module:
    """Write ``genloom_model`` as a HF model directory; return it loaded by transformers (eval mode)."""
    from transformers import AutoModelForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    genloom_model.export(directory, format="hf", encoder=ByteTokenizer())
    return AutoModelForCausalLM.from_pretrained(directory).eval()


def check(genloom_model: nn.Module, directory: Path, new_tokens: int) -> None:
    """Assert that the exported directory tokenizes and greedily generates exactly as genloom does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    hf_model = AutoModelForCausalLM.from_pretrained(directory).eval()
    ours, decoder = ByteTokenizer(), ByteDecoder()
    for prompt in CHECK_PROMPTS:
        ids = ours.encode(prompt)
        theirs = tokenizer(prompt)["input_ids"]
        assert theirs == ids.tolist(), f"{prompt!r}: HF ids {theirs} != genloom ids {ids.tolist()}"
        assert tokenizer.decode(theirs) == prompt, f"{prompt!r}: HF decodes {tokenizer.decode(theirs)!r}"
        expected = genloom_model.generate(1, condition=ids, max_new_tokens=new_tokens, temperature=0.0)[0]
        with torch.inference_mode():
            out = hf_model.generate(torch.tensor([theirs]), max_new_tokens=new_tokens,
                                    min_new_tokens=new_tokens)
        got = out[0, len(theirs):]
        assert got.tolist() == expected.tolist(), f"{prompt!r}: HF greedy {got} != genloom {expected}"
        assert tokenizer.decode(got.tolist()) == decoder.decode(expected), f"{prompt!r}: decoded texts differ"
    # Invalid UTF-8 (an undertrained model's output) becomes U+FFFD in both.
    for junk in ([0xC3], [0xFF, 0x41], [0xE6, 0x9D, 0x41], [0xF0, 0x9F, 0x99]):
        assert tokenizer.decode(junk) == decoder.decode(torch.tensor(junk)), f"bytes {junk}: decodings differ"
    log.info("%s: ids, decoding and %d greedy tokens match genloom on %d prompts",
             directory, new_tokens, len(CHECK_PROMPTS))


def measure(model: Transformer, options: dict, directory: Path, new_tokens: int, greedy: bool) -> list[str]:
    """One row: export and load times, logit and greedy agreement, and init_from back."""
    from transformers import AutoModelForCausalLM

    ids = ByteTokenizer().encode(CHECK_PROMPTS[0])[None]  # (1, T)
    start = time.perf_counter()
    directory.mkdir(parents=True)
    model.export(directory, format="hf", encoder=ByteTokenizer())
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    hf_model = AutoModelForCausalLM.from_pretrained(directory).eval()
    load_s = time.perf_counter() - start
    with torch.inference_mode():
        diff = (hf_model(ids).logits - model(ids)).abs().max().item()
    agree = "-"
    if greedy:
        ours = model.generate(1, condition=ids[0], max_new_tokens=new_tokens, temperature=0.0)[0]
        with torch.inference_mode():
            out = hf_model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        theirs = out[0, ids.shape[1]:]
        agree = f"{int((ours == theirs).sum())}/{new_tokens}"
    back = Transformer(**options, init_from=str(directory))  # built (random init) before the clock
    start = time.perf_counter()
    back.load_pretrained()
    init_s = time.perf_counter() - start
    exact = all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values(),
                                                  strict=True))
    params = sum(p.numel() for p in model.parameters())
    return [f"{params / 1e6:.2f}M", f"{export_s:.2f}", f"{load_s:.2f}", f"{diff:.1e}", agree, f"{init_s:.2f}",
            "exact" if exact else "DIFFERS"]


def main() -> None:
    from text_sample import SIZES, trained_model
    from text_train import cpu_name

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "large", "gpt2"],
                        choices=[*sorted(SIZES), "gpt2"],
                        help="gpt2: GPT-2 small's shape (124M, vocab 50257) with random weights")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    from transformers import GPT2LMHeadModel  # noqa: F401 - imported before any clock starts
    rows = []
    with tempfile.TemporaryDirectory(prefix="genloom-hf-export-") as tmp:
        for name in args.sizes:
            if name == "gpt2":  # random weights: logits compare, greedy choices are near-ties
                options = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                               bias=True, activation="gelu_tanh")
                torch.manual_seed(0)
                model, label = Transformer(**options).eval(), "GPT-2 small shape (random)"
            else:
                size = SIZES[name]
                options = dict(n_layer=size.n_layer, n_head=size.n_head, n_embd=size.n_embd,
                               block_size=64 + args.new_tokens, bias=True)
                model = trained_model(size, block_size=options["block_size"])
                label = f"{name} {size.n_layer}L/{size.n_head}H/{size.n_embd} (trained)"
            rows.append([label, *measure(model, options, Path(tmp) / name, args.new_tokens, name != "gpt2")])
            if name != "gpt2":
                check(model, Path(tmp) / name, args.new_tokens)
            shutil.rmtree(Path(tmp) / name)
    print(f"\ngenloom export format=hf and init_from back, {time.strftime('%Y-%m-%d')}, {cpu_name()}, "
          f"1 thread, fp32; greedy: tokens of {args.new_tokens} equal to genloom's")
    header = ["model", "params", "export s", "from_pretrained s", "max |logit diff|", "greedy equal",
              "init_from s", "round trip"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = enumerate(zip(row, widths, strict=True))
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in cells))


if __name__ == "__main__":
    main()
