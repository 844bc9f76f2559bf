"""A plugin that holds training at one step until the process is signalled: the kill tests' pacer.

``FAKE_PAUSE_AT=<step>``: after that optimizer step every rank waits (at most two minutes)
for SIGTERM or SIGINT, which the trainer's own handler then turns into a save and a stop.
So a signal sent once the run has got going lands mid-run however fast the machine steps.
"""

import os
import signal
import threading

from genloom import hookimpl

_signalled = threading.Event()


@hookimpl
def genloom_train_start(run):
    # After the trainer installed its handlers: note the signal, then let the trainer's act.
    for signum in (signal.SIGTERM, signal.SIGINT):
        trainers = signal.getsignal(signum)

        def noted(number, frame, trainers=trainers):
            _signalled.set()
            trainers(number, frame)

        signal.signal(signum, noted)


@hookimpl
def genloom_optimizer_step(run):
    if run.step == int(os.environ["FAKE_PAUSE_AT"]):
        _signalled.wait(timeout=120)
