"""A logger plugin whose step-end hook calls ``sys.exit(3)`` in the middle of training."""

import sys

from genloom import hookimpl


@hookimpl
def genloom_train_step_end(step, metrics):
    sys.exit(3)
