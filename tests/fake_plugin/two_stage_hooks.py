"""A second fake plugin beside the first: a Tokenizing stage 1 (vectors <-> codes) and the
presets of a two-stage pipeline (``pipeline=waves``, then ``pipeline=wave_tokens``).

Kept apart from the counting plugin so that tests of that one (its listings, its contract)
are not changed by it; ``tests/test_frozen.py`` loads both and genloom's built-in plugin.
"""

from genloom import hookimpl


@hookimpl
def genloom_register_components(register):
    register("encoder", "floats", "fake_plugin.quantiser:FloatsEncoder", summary="'0.5 1' -> floats")
    register("decoder", "floats", "fake_plugin.quantiser:FloatsDecoder", summary="floats -> '0.500 1.000'")
    register("generator", "quantiser", "fake_plugin.quantiser:Quantiser", summary="vectors <-> codes")
    register("dataset", "waves", "fake_plugin.quantiser:Waves", summary="sine-wave vectors")


@hookimpl
def genloom_register_config(register):
    register("fake_plugin.two_stage_conf")
