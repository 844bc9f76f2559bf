"""A plugin that asks for a stop from one rank only: the distributed tests' stop request.

``FAKE_STOP_AT=<rank>:<step>`` says where; every rank records how its training ended in
``<run_dir>/ended_rank<N>.json`` so the test can see that all of them stopped together.
"""

import json
import os

from genloom import hookimpl


@hookimpl
def genloom_optimizer_step(run):
    rank, step = (int(part) for part in os.environ["FAKE_STOP_AT"].split(":"))
    if run.rank == rank and run.step == step:
        run.request_stop(f"asked at step {step}")


@hookimpl
def genloom_train_end(run, reason):
    ended = {"step": run.step, "reason": reason, "stop_reason": run.stop_reason}
    (run.run_dir / f"ended_rank{run.rank}.json").write_text(json.dumps(ended))
