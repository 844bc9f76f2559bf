"""The fake plugin's hook module: registers its components and its config package."""

from genloom import hookimpl


@hookimpl
def genloom_register_components(register):
    register("encoder", "digits", "fake_plugin.components:DigitEncoder", summary="'3 1 4' -> ids")
    register("decoder", "digits", "fake_plugin.components:DigitDecoder", summary="ids -> '3 1 4'")
    register("generator", "bigram", "fake_plugin.components:Bigram", summary="bigram model")
    register("dataset", "counting", "fake_plugin.components:Counting", summary="counting mod n")


@hookimpl
def genloom_register_config(register):
    register("fake_plugin.conf")
