"""A genloom text Transformer as a Hugging Face model directory, for servers that load one.

``transformers serve`` (and any tool that calls ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` on a path) needs the weights, a tokenizer and a generation
config on disk. :func:`export` writes all three:

* the weights as a ``GPT2LMHeadModel`` (``hf_gpt2.py``: exact GELU, the function genloom uses);
* a byte-level tokenizer whose ids are genloom's: the UTF-8 bytes of the text, 0-255, no
  special tokens. It is built with the ``tokenizers`` library: the ByteLevel pre-tokenizer
  (without the regex split and without a prefix space) spells each byte as one printable
  character, a BPE model without merges maps that character to the byte's value, and the
  ByteLevel decoder turns the characters back into bytes. No normaliser: nothing changes a
  byte. Bytes that are not valid UTF-8 decode to U+FFFD, as genloom's ``ByteDecoder`` does;
* a generation config without end-of-sequence token (genloom's text models have none, so a
  request runs to its ``max_tokens``), greedy by default.

    python benchmarks/hf_export.py          # export a briefly trained model and check it

The check encodes a few prompts, non-ASCII ones too, with both tokenizers and compares
the ids, then compares HF's greedy ``generate`` from the exported directory with genloom's
greedy sampling, token for token.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from hf_gpt2 import copy_weights, gpt2_like  # noqa: E402

log = logging.getLogger(__name__)

CHECK_PROMPTS = ["The with statement ", "naïve café — 東京 🙂 ", "def f(x):\n\treturn x\n", " two  spaces"]


def byte_characters() -> dict[int, str]:
    """GPT-2's byte -> printable character table, the one the ByteLevel pre-tokenizer applies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_tokenizer(model_max_length: int):  # noqa: ANN201 - transformers is imported lazily
    """A ``PreTrainedTokenizerFast``: ids are the text's UTF-8 bytes, as genloom's ``ByteTokenizer`` gives."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: byte for byte, char in byte_characters().items()}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    # An alphabet the pre-tokenizer produces must be the one the vocabulary holds.
    assert set(pre_tokenizers.ByteLevel.alphabet()) == set(vocab), "ByteLevel's byte alphabet changed"
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=model_max_length, clean_up_tokenization_spaces=False
    )


def export(genloom_model: nn.Module, directory: Path) -> nn.Module:
    """Write ``genloom_model`` as a HF model directory (weights, tokenizer, generation config).

    Returns the ``GPT2LMHeadModel`` that was saved (in eval mode), for offline contenders.
    """
    from transformers import GenerationConfig

    hf_model = gpt2_like(genloom_model, activation="gelu")
    with torch.no_grad():
        copy_weights(genloom_model, hf_model)
    hf_model.eval()
    hf_model.generation_config = GenerationConfig(
        do_sample=False, eos_token_id=None, bos_token_id=None, pad_token_id=0
    )
    hf_model.save_pretrained(directory)
    byte_tokenizer(genloom_model.block_size).save_pretrained(directory)
    return hf_model


def check(genloom_model: nn.Module, directory: Path, new_tokens: int) -> None:
    """Assert that the exported directory tokenizes and greedily generates exactly as genloom does."""
    from genloom_text.tokenizer import ByteDecoder, ByteTokenizer
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
