"""Write a tiny Hugging Face model directory with random weights: for the debug preset and tests.

``pipeline=hf_text_debug`` needs a model directory, and genloom downloads nothing, so this
makes one on the spot::

    python -m genloom_hf.random_model models/tiny-gpt2              # GPT-2 family
    python -m genloom_hf.random_model models/tiny-llama --family llama

The directory is in the layout ``save_pretrained`` writes (``config.json``,
``model.safetensors``, ``generation_config.json``) plus a byte-level BPE ``tokenizer.json``
trained on the first part of the pydoc corpus, and ``tokenizer_config.json`` naming the
special tokens; ``transformers`` loads it as it loads a downloaded model. The weights are
random: it learns the way a real model does, it just knows nothing yet.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

FAMILIES = ("gpt2", "llama")
TRAINING_CHARACTERS = 100_000  # of the pydoc corpus, enough for a few hundred merges in a second
SPECIALS = {"gpt2": {"eos": "<|endoftext|>"}, "llama": {"unk": "<unk>", "bos": "<s>", "eos": "</s>"}}

log = logging.getLogger(__name__)


def write_random_model(
    directory: Path,
    *,
    family: str = "gpt2",
    vocab_size: int = 384,
    width: int = 32,
    layers: int = 2,
    context: int = 128,
    seed: int = 0,
) -> Path:
    """Write a random ``family`` model of ``layers`` x ``width`` and its tokenizer into ``directory``."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(family, vocab_size)
    ids = {name: tokenizer.token_to_id(token) for name, token in SPECIALS[family].items()}
    if family == "gpt2":
        # GPT-2 starts and ends with the same <|endoftext|> token.
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=context,
            n_embd=width,
            n_layer=layers,
            n_head=2,
            bos_token_id=ids["eos"],
            eos_token_id=ids["eos"],
        )
    else:
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=context,
            bos_token_id=ids["bos"],
            eos_token_id=ids["eos"],
            tie_word_embeddings=False,
        )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)  # safetensors
    tokenizer.save(str(directory / "tokenizer.json"))
    settings = {f"{name}_token": token for name, token in SPECIALS[family].items()}
    if family == "gpt2":
        settings["bos_token"] = SPECIALS["gpt2"]["eos"]
    settings.update(tokenizer_class="PreTrainedTokenizerFast", model_max_length=context)
    (directory / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))
    return directory


def _train_tokenizer(family: str, vocab_size: int) -> object:
    """A byte-level BPE of ``vocab_size`` ids (special tokens first) trained on pydoc's text."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = list(SPECIALS[family].values())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    text = "\n\n".join(topics[name] for name in sorted(topics))[:TRAINING_CHARACTERS]
    tokenizer.train_from_iterator([text], trainer=trainer)
    if family == "llama":  # Llama's tokenizer puts <s> before every text
        bos = SPECIALS["llama"]["bos"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m genloom_hf.random_model", description=__doc__.split("\n")[0]
    )
    parser.add_argument("directory", type=Path, help="where to write the model (created if missing)")
    parser.add_argument("--family", choices=FAMILIES, default="gpt2")
    parser.add_argument("--vocab-size", type=int, default=384)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = write_random_model(
        args.directory,
        family=args.family,
        vocab_size=args.vocab_size,
        width=args.width,
        layers=args.layers,
        context=args.context,
        seed=args.seed,
    )
    log.info(
        "wrote a random %s model to %s; train it with\n  genloom train pipeline=hf_text_debug "
        "trainer=debug generator.path=%s",
        args.family,
        written,
        written,
    )


if __name__ == "__main__":
    main()
