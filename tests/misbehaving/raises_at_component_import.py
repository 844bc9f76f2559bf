"""A plugin whose component module raises RuntimeError when imported (not ImportError)."""

from genloom import hookimpl


@hookimpl
def genloom_register_components(register):
    register("generator", "fragile", "misbehaving.fragile_components:Fragile")
