"""Time genloom's Trainer from the outside, on the path ``genloom train`` takes.

The config is composed by Hydra with every plugin's config package on the search path, the
pipeline is built by the registry, and :class:`genloom.trainer.Trainer` runs ``fit``. The
Trainer reports (one host sync) every ``trainer.log_every`` steps and calls the
``genloom_train_step_end`` hook there; the time between two such reports is pure training.
"""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG_EVERY = 10  # the trainer's default report interval


def compose_train_config(overrides: list[str]):  # noqa: ANN201 - omegaconf is imported lazily
    """``genloom train OVERRIDES``'s config, composed as the CLI composes it."""
    from genloom.config import PluginConfigSearchPath
    from hydra import compose, initialize_config_module
    from hydra.core.plugins import Plugins

    Plugins.instance().register(PluginConfigSearchPath)
    with initialize_config_module("genloom.conf", version_base=None):
        return compose("train", overrides=overrides)


@dataclass(frozen=True)
class TimedFit:
    """What :func:`timed_fit` measured."""

    rate: float  # examples per second over the timed steps
    startup_s: float  # building the pipeline, the splits and the Trainer (not composing the config)
    at_end: Any  # what ``at_last_report()`` returned, called right after the last timed report


def timed_fit(overrides: list[str], *, warmup: int, steps: int,
              at_last_report: Callable[[], Any] | None = None) -> TimedFit:
    """``Trainer.fit`` timed over ``steps`` steps after ``warmup`` steps, between two reports.

    Both counts must be multiples of :data:`LOG_EVERY`. Evaluation and the checkpoint
    come after the last timed report, so they are not counted; nor is ``at_last_report``
    (something to measure once the timed steps are done, such as workers' memory).
    """
    from genloom.plugins import active

    total = warmup + steps
    cfg = compose_train_config(
        [
            *overrides,
            f"trainer.max_steps={total}",
            f"trainer.log_every={LOG_EVERY}",
            f"trainer.eval_every={total}",
            f"trainer.checkpoint_every={total}",
            "trainer.eval_batches=1",
        ]
    )
    plugin_set = active()
    reported: dict[int, float] = {}
    at_end: list[Any] = []

    class ReportTimes:
        """The plugins' hooks, plus the time of each report."""

        def __getattr__(self, name: str) -> Callable:
            return getattr(plugin_set.events, name)

        def genloom_train_step_end(self, *, step: int, **kwargs: object) -> None:
            reported[step] = time.perf_counter()
            if step == total and at_last_report is not None:
                at_end.append(at_last_report())
            plugin_set.events.genloom_train_step_end(step=step, **kwargs)

    with tempfile.TemporaryDirectory(prefix="genloom-bench-") as run_dir:
        start = time.perf_counter()
        trainer = build_trainer(cfg, Path(run_dir), hooks=ReportTimes())
        startup = time.perf_counter() - start
        trainer.fit()
    rate = steps * cfg.trainer.batch_size / (reported[total] - reported[warmup])
    return TimedFit(rate, startup, at_end[0] if at_end else None)


def trainer_rate(overrides: list[str], *, warmup: int, steps: int) -> float:
    """Examples per second of ``Trainer.fit`` over ``steps`` steps after ``warmup`` (:func:`timed_fit`)."""
    return timed_fit(overrides, warmup=warmup, steps=steps).rate


def build_trainer(cfg, run_dir: Path, hooks: object | None = None):  # noqa: ANN001, ANN201 - lazy imports
    """The :class:`genloom.trainer.Trainer` that ``genloom train`` builds for ``cfg``, on the CPU."""
    import torch
    from genloom import pipeline
    from genloom.distributed import Placement
    from genloom.plugins import active
    from genloom.trainer import Trainer, TrainerSettings
    from omegaconf import OmegaConf

    plugin_set = active()
    torch.manual_seed(cfg.seed)
    built = pipeline.build(cfg, plugin_set.registry)
    split = {
        name: built.dataset.split(name, built.encoder, built.condition_encoder) for name in ("train", "val")
    }
    return Trainer(
        built.generator,
        train_data=split["train"],
        val_data=split["val"],
        settings=TrainerSettings(**OmegaConf.to_container(cfg.trainer)),
        placement=Placement(torch.device("cpu")),
        run_dir=run_dir,
        config=cfg,
        plugin_versions=plugin_set.versions(),
        hooks=hooks if hooks is not None else plugin_set.events,
        unit=built.dataset.unit,
        units_per_example=built.dataset.units_per_example,
        seed=cfg.seed,
    )


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
