"""The genloom hooks of the Hugging Face plugin: what it registers, by import path only.

``genloom plugins`` imports this module, so it must not import torch, transformers or model
code; each component is imported the first time a pipeline builds it.
"""

from __future__ import annotations

from collections.abc import Callable

from genloom.hookspecs import hookimpl


@hookimpl
def genloom_register_components(register: Callable[..., None]) -> None:
    """The Hugging Face components: each wraps a local directory; none downloads anything."""
    # Causal LMs and their tokenizers (local directories: causal_lm.py, tokenizer.py).
    register(
        "generator",
        "hf_causal_lm",
        "genloom_hf.causal_lm:HFCausalLM",
        summary="a local Hugging Face causal LM (GPT-2, Llama...): fine-tune, sample, serve",
    )
    register(
        "encoder",
        "hf_tokenizer",
        "genloom_hf.tokenizer:hf_tokenizer",
        summary="text -> ids through a local tokenizer.json; its chat template for chat completions",
    )
    register(
        "decoder",
        "hf_tokenizer",
        "genloom_hf.tokenizer:HFTokenizerDecoder",
        summary="ids -> text through a local tokenizer.json; streams; writes .txt samples",
    )
    # A caption encoder (sentence.py).
    register(
        "encoder",
        "hf_sentence",
        "genloom_hf.sentence:SentenceEncoder",
        summary="a caption -> its sentence embedding from a local sentence-transformer (all-MiniLM-L6-v2)",
    )


@hookimpl
def genloom_register_config(register: Callable[[str], None]) -> None:
    register("genloom_hf.conf")
