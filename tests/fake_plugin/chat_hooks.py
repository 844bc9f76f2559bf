"""The fake chat plugin's hook module: the ``chat_bytes`` encoder and its config group."""

from genloom import hookimpl


@hookimpl
def genloom_register_components(register):
    register("encoder", "chat_bytes", "fake_plugin.chat:ChatBytes", summary="bytes; ChatML conversations")


@hookimpl
def genloom_register_config(register):
    register("fake_plugin.chat_conf")
