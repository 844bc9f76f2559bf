"""The genloom hooks of the loggers plugin.

``genloom plugins`` imports this module, so it imports neither TensorBoard nor MLflow: a
run without ``logger=...`` costs one attribute check per event. Only rank 0 logs (the
per-rank events return at once elsewhere); a logger that fails warns once and is left out
(:mod:`genloom_loggers.session`), and a hook here never raises for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genloom.hookspecs import hookimpl

if TYPE_CHECKING:
    from genloom_loggers.session import LoggingSession

_session: LoggingSession | None = None  # the run in progress in this process, when it logs


@hookimpl
def genloom_register_config(register: Callable[[str], None]) -> None:
    register("genloom_loggers.conf")  # logger/tensorboard.yaml, logger/mlflow.yaml


@hookimpl
def genloom_train_start(run: Any) -> None:
    """Open the loggers ``logger=...`` names, on rank 0; a resumed run continues its MLflow run."""
    global _session
    if _session is not None:  # an earlier run in this process failed before its end
        _session.close("failed")
        _session = None
    if run.is_main and run.config.get("logger"):
        from genloom_loggers.session import LoggingSession

        _session = LoggingSession.start(run)


@hookimpl
def genloom_train_step_end(step: int, metrics: Mapping[str, float]) -> None:
    if _session is not None:
        _session.log_metrics("train", step, metrics)


@hookimpl
def genloom_evaluated(step: int, metrics: Mapping[str, float], run: Any) -> None:
    if _session is not None:
        _session.evaluated(step, metrics, run)


@hookimpl
def genloom_checkpoint_saved(step: int, path: Path) -> None:
    if _session is not None:
        _session.checkpoint_saved(step, path)


@hookimpl
def genloom_train_end(reason: str) -> None:
    global _session
    if _session is not None:
        _session.close(reason)
        _session = None
