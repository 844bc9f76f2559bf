"""A genloom text Transformer as a Hugging Face model directory, for servers that load one.

``transformers serve`` (and any tool that calls ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` on a path) needs the weights, a tokenizer and a generation
config on disk. The text plugin's ``Transformer.export(format="hf")`` writes all three
(:mod:`genloom_text.gpt2`, what ``genloom export format=hf`` runs): the weights as a
``GPT2LMHeadModel`` with genloom's exact GELU, a byte-level tokenizer whose ids are
genloom's, and a generation config without end-of-sequence token (a request runs to its
``max_tokens``), greedy by default.

    python benchmarks/hf_export.py          # export a briefly trained model and check it

The check encodes a few prompts, non-ASCII ones too, with both tokenizers and compares
the ids, then compares HF's greedy ``generate`` from the exported directory with genloom's
greedy sampling, token for token.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
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


def main() -> None:
    from text_sample import SIZES, trained_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, help="keep the model directory here (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = trained_model(SIZES[args.size], block_size=64 + args.new_tokens)
    with tempfile.TemporaryDirectory(prefix="genloom-hf-export-") as tmp:
        directory = args.out or Path(tmp) / "hf"
        export(model, directory)
        check(model, directory, args.new_tokens)


if __name__ == "__main__":
    main()
