"""A plugin that prints to stdout in its hooks and in its component module."""

from genloom import hookimpl


@hookimpl
def genloom_register_components(register):
    print("chatty: registering my components")
    register("encoder", "chatty", "misbehaving.chatty_components:Chatty")
