"""A hook module whose registration hook calls ``sys.exit(3)``."""

import sys

from genloom import hookimpl


@hookimpl
def genloom_register_components(register):
    register("generator", "exiting", "fake_plugin.components:Bigram")
    sys.exit(3)
