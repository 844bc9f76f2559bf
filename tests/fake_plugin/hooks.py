"""The fake plugin's hook module: registers its components and its config package."""

from genloom import hookimpl


@hookimpl
def genloom_register_components(register):
    register("encoder", "digits", "fake_plugin.components:DigitEncoder", summary="'3 1 4' -> ids")
    register("decoder", "digits", "fake_plugin.components:DigitDecoder", summary="ids -> '3 1 4'")
    register("generator", "bigram", "fake_plugin.components:Bigram", summary="bigram model")
    register("dataset", "counting", "fake_plugin.components:Counting", summary="counting mod n")
    # A Tokenizing stage 1 (vectors <-> codes), for two-stage pipelines.
    register("encoder", "floats", "fake_plugin.quantiser:FloatsEncoder", summary="'0.5 1' -> floats")
    register("decoder", "floats", "fake_plugin.quantiser:FloatsDecoder", summary="floats -> '0.500 1.000'")
    register("generator", "quantiser", "fake_plugin.quantiser:Quantiser", summary="vectors <-> codes")
    register("dataset", "waves", "fake_plugin.quantiser:Waves", summary="sine-wave vectors")


@hookimpl
def genloom_register_config(register):
    register("fake_plugin.conf")
