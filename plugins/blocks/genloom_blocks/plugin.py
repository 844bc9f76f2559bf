"""The genloom hooks of the blocks plugin: what it registers, by import path only.

``genloom plugins`` imports this module, so it must not import torch or model code.
"""

from __future__ import annotations

from collections.abc import Callable

from genloom.hookspecs import hookimpl


@hookimpl
def genloom_register_components(register: Callable[..., None]) -> None:
    """Nothing yet: the blocks are imported by the plugins that build on them."""
