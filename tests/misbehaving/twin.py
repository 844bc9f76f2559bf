"""Registers ``generator: bigram``, a name the fake plugin also registers, and one of its own."""

from genloom import hookimpl


@hookimpl
def genloom_register_components(register):
    register("generator", "bigram", "fake_plugin.components:Bigram", summary="a second bigram")
    register("generator", "twin_only", "fake_plugin.components:Bigram", summary="only the twin has it")
