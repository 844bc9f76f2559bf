"""What the per-step training event costs a step, used and unused.

``genloom_optimizer_step`` is the one event called after every optimizer step. The trainer
looks up once per run whether any plugin implements it; unused, a step pays one boolean
test. This script times, per step, with the installed plugins:

* ``unused``: that test, what the trainer does when no plugin implements the event or
  every one declined it for the run (the built-in EMA does, without ``trainer.ema.decay``);
* ``relay, installed plugins``: calling the event relay anyway (what the look-up avoids);
* ``relay, 1 no-op plugin``: the event with one plugin, loaded alone, that does nothing;

beside one training step of a small real pipeline (``image_debug``, batch 4, through
:class:`genloom.trainer.Trainer`), so each cost reads as a share of a step. Each figure is
the best of several repeats (the least disturbed by other work on the machine).

    python benchmarks/hook_overhead.py
"""

from __future__ import annotations

import logging
import statistics
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from text_train import cpu_name  # noqa: E402
from trainer_timing import LOG_EVERY, trainer_rate  # noqa: E402

log = logging.getLogger(__name__)
CALLS = 20_000
REPEATS = 5


def per_call_us(statement, number: int = CALLS) -> float:  # noqa: ANN001 - a callable
    return min(timeit.repeat(statement, number=number, repeat=REPEATS)) / number * 1e6


def main() -> None:
    import torch
    from genloom import hookimpl
    from genloom.plugins import PluginSource, active, load_plugins

    torch.set_num_threads(1)

    class NoOp:
        @hookimpl
        def genloom_optimizer_step(self, run):  # noqa: ANN001, ANN202
            pass

    installed = active()
    # The relay only sets .plugin on the run. The built-in EMA implements the event and
    # declines it for a run without trainer.ema.decay, as every plugin here does by default.
    implementers = installed.manager.hook.genloom_optimizer_step.get_hookimpls()
    declined = {installed.events._name(impl.plugin_name) for impl in implementers}
    run = type("Run", (), {"plugin": "", "declined": {"genloom_optimizer_step": declined}})()
    without = installed.events
    with_one = load_plugins([PluginSource("noop", NoOp, "noop")], strict=True, disabled=[]).events
    step_hooked = without.implemented("genloom_optimizer_step", run)
    assert not step_hooked and with_one.implemented("genloom_optimizer_step")

    def unused() -> None:
        if step_hooked:
            without.genloom_optimizer_step(run=run)

    costs = {
        "unused (the trainer's check)": per_call_us(unused),
        "relay, installed plugins": per_call_us(lambda: without.genloom_optimizer_step(run=run), CALLS // 10),
        "relay, 1 no-op plugin": per_call_us(lambda: with_one.genloom_optimizer_step(run=run), CALLS // 10),
    }
    overrides = ["pipeline=image_debug", "trainer=default", "trainer.batch_size=4", "trainer.progress=false"]
    rates = [trainer_rate(overrides, warmup=LOG_EVERY, steps=2 * LOG_EVERY) for _ in range(3)]
    step_us = 4 / statistics.median(rates) * 1e6

    print(f"per-step event cost, {cpu_name()} (shared machine, other work running; 1 torch thread)")
    print(f"{'per step':<32} {'µs':>10} {'share of a step':>16}")
    for name, us in costs.items():
        print(f"{name:<32} {us:>10.3f} {us / step_us:>15.4%}")
    print(f"{'one step, image_debug batch 4':<32} {step_us:>10.0f} {'100%':>16}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
