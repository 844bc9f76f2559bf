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
    # hf_sentence (caption encoder)
    register(
        "encoder",
        "hf_sentence",
        "genloom_hf.sentence:SentenceEncoder",
        summary="a caption -> its sentence embedding from a local sentence-transformer (all-MiniLM-L6-v2)",
    )


@hookimpl
def genloom_register_config(register: Callable[[str], None]) -> None:
    register("genloom_hf.conf")
