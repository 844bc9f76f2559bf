"""The genloom hooks of the blocks plugin: what it registers, by import path only.

``genloom plugins`` imports this module, so it must not import torch or model code.
"""

from __future__ import annotations

from collections.abc import Callable

from genloom.hookspecs import hookimpl


@hookimpl
def genloom_register_components(register: Callable[..., None]) -> None:
    """The blocks that are whole components; the layers are imported by the plugins that build on them."""
    register(
        "encoder",
        "caption_words",
        "genloom_blocks.captions:CaptionWords",
        summary="a caption -> hashed word ids ('a red star', 'a plucked C#4'); no vocabulary file",
    )


@hookimpl
def genloom_register_config(register: Callable[[str], None]) -> None:
    register("genloom_blocks.conf")
