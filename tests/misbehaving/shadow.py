"""Ships ``pipeline/counting.yaml``, an option the fake plugin ships too (and one of its own)."""

from genloom import hookimpl


@hookimpl
def genloom_register_config(register):
    register("misbehaving.shadow_conf")
