"""Ships ``trainer/typo.yaml``, a trainer option with a mistyped key (``max_step``)."""

from genloom import hookimpl


@hookimpl
def genloom_register_config(register):
    register("misbehaving.typo_conf")
