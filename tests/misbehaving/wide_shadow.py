"""Ships ``generator/bigram_wide.yaml``, an option the fake plugin ships too."""

from genloom import hookimpl


@hookimpl
def genloom_register_config(register):
    register("misbehaving.wide_shadow_conf")
