"""One training run's loggers: opened at train start from ``logger=...``, fed by the events, then closed.

Every logger fails alone. The first error one raises (a full disk, a locked database, an
unreachable tracking server) is one warning line naming the logger and the error, and
that logger is left out for the rest of the run; training and the other loggers go on.
The loggers' own modules (and TensorBoard or MLflow with them) are imported here, when a
run asks for them.

Samples: at each evaluation the run draws ``max(samples)`` of the loggers that want any,
once, through :meth:`genloom.trainer.TrainingRun.draw_samples`, and every such logger gets
that same set.
"""

from __future__ import annotations

import atexit
import importlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from genloom.settings import SettingsError, from_mapping, unknown_key_message
from genloom.trainer import DrawnSamples
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# logger=<name> -> the module holding its ``Settings`` and ``Logger``.
LOGGERS = {"tensorboard": "genloom_loggers.tensorboard_logger", "mlflow": "genloom_loggers.mlflow_logger"}


class Logger(Protocol):
    """What a session asks of one logger (each raises whatever its backend raises)."""

    samples: int  # samples it wants at each evaluation; 0: none

    def log_metrics(self, split: str, step: int, metrics: Mapping[str, float]) -> None:
        """``split`` is ``"train"`` or ``"val"``; ``metrics`` as genloom names them (``loss``...)."""

    def log_samples(self, step: int, drawn: DrawnSamples) -> None: ...

    def checkpoint_saved(self, step: int, path: Path) -> None: ...

    def flush(self) -> None:
        """Make what was logged so far visible (called after each evaluation)."""

    def close(self, reason: str) -> None:
        """``reason``: the trainer's (``max_steps``, ``stopped``, ``signal``), or ``failed``."""


class LoggingSession:
    """The loggers of one run, on rank 0."""

    def __init__(self, loggers: dict[str, Logger], run: Any) -> None:
        self.loggers = loggers
        self.run = run
        self.drawing = True  # until drawing samples fails once
        atexit.register(self.close, "failed")  # a run that raises never reaches train_end

    @classmethod
    def start(cls, run: Any) -> LoggingSession:
        """Open every logger ``run.config.logger`` names; one that cannot start warns and is left out.

        A wrong setting (``logger.tensorboard.samples=-1``) raises :class:`SettingsError`.
        """
        chosen = OmegaConf.to_container(run.config.logger, resolve=True)
        if not isinstance(chosen, dict):
            raise SettingsError(f"logger must be chosen from the logger group (logger=tensorboard, "
                                f"logger=[tensorboard,mlflow]), got {chosen!r}")
        unknown = sorted(set(chosen) - set(LOGGERS))
        if unknown:
            raise SettingsError(unknown_key_message("logger", unknown[0], list(LOGGERS)))
        configured = []
        for name, node in chosen.items():
            module = importlib.import_module(LOGGERS[name])
            settings = from_mapping(module.Settings, node or {}, where=f"logger.{name}")
            configured.append((name, module, settings))
        loggers: dict[str, Logger] = {}
        for name, module, settings in configured:
            try:
                loggers[name] = module.Logger(settings, run)
            except Exception as err:  # noqa: BLE001 - a logger never costs the run
                log.warning("%s logger could not start (%s); training goes on without it", name, _said(err))
        return cls(loggers, run)

    def log_metrics(self, split: str, step: int, metrics: Mapping[str, float]) -> None:
        for name in list(self.loggers):
            self._call(name, "logging metrics", "log_metrics", split, step, metrics)

    def evaluated(self, step: int, metrics: Mapping[str, float], run: Any) -> None:
        self.log_metrics("val", step, metrics)
        wanted = max((logger.samples for logger in self.loggers.values()), default=0)
        if wanted and self.drawing:
            try:
                drawn = run.draw_samples(wanted)
            except Exception as err:  # noqa: BLE001 - no samples is no reason to stop training
                self.drawing = False
                log.warning("could not draw samples for the loggers (%s); they log no more samples in "
                            "this run", _said(err))
            else:
                for name, logger in list(self.loggers.items()):
                    if logger.samples:
                        self._call(name, "logging samples", "log_samples", step, drawn)
        for name in list(self.loggers):
            self._call(name, "writing", "flush")

    def checkpoint_saved(self, step: int, path: Path) -> None:
        for name in list(self.loggers):
            self._call(name, "logging a checkpoint", "checkpoint_saved", step, path)

    def close(self, reason: str) -> None:
        atexit.unregister(self.close)
        for name in list(self.loggers):
            self._call(name, "closing", "close", reason)
        self.loggers.clear()

    def _call(self, name: str, doing: str, method: str, *args: Any) -> None:
        logger = self.loggers[name]
        try:
            getattr(logger, method)(*args)
        except Exception as err:  # noqa: BLE001 - a logger never costs the run
            del self.loggers[name]
            log.warning("%s logger failed while %s (%s); training goes on without it",
                        name, doing, _said(err))
            if method != "close":
                try:
                    logger.close("failed")
                except Exception:  # noqa: BLE001 - it has failed already; said once
                    log.debug("closing the failed %s logger failed too", name, exc_info=True)


def _said(err: BaseException) -> str:
    """An error in one line: ``OperationalError: database is locked``."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"
