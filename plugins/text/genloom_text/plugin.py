"""The genloom hooks of the text plugin: what it registers, by import path only.

``genloom plugins`` imports this module, so it must not import torch or model code; each
component is imported the first time a pipeline builds it.
"""

from __future__ import annotations

from collections.abc import Callable

from genloom.hookspecs import hookimpl


@hookimpl
def genloom_register_components(register: Callable[..., None]) -> None:
    register(
        "encoder",
        "bytes",
        "genloom_text.tokenizer:ByteTokenizer",
        summary="text as its UTF-8 bytes: token ids 0-255, lossless",
    )
    register(
        "decoder",
        "bytes",
        "genloom_text.tokenizer:ByteDecoder",
        summary="byte ids back to text; writes .txt files and a samples.md gallery",
    )
    register(
        "encoder",
        "bpe",
        "genloom_text.bpe:BpeTokenizer",
        summary="a byte-level BPE fitted on the training split (tokenizers); lossless",
    )
    register(
        "decoder",
        "bpe",
        "genloom_text.bpe:BpeDecoder",
        summary="BPE ids back to text through the fitted vocabulary; streams whole characters",
    )
    register(
        "encoder",
        "prefix_bytes",
        "genloom_text.prefix:PrefixBytes",
        summary="a caption -> its UTF-8 bytes, padded to a fixed length: a token prior's prefix",
    )
    register(
        "generator",
        "transformer",
        "genloom_text.model:Transformer",
        summary="decoder-only Transformer over token ids, KV-cache sampling",
    )
    register(
        "dataset",
        "pydoc",
        "genloom_text.corpus:PydocCorpus",
        summary="the CPython documentation that ships with Python (no download)",
    )
    register(
        "dataset",
        "text_files",
        "genloom_text.corpus:TextFiles",
        summary="your text: a file, a folder of .txt/.md/.rst files, or a glob",
    )


@hookimpl
def genloom_register_config(register: Callable[[str], None]) -> None:
    register("genloom_text.conf")
