"""``logger=mlflow``: one MLflow run per genloom run, through MLflow's tracking client.

What is logged (docs/tracking.md, "MLflow"):

* parameters: the resolved config, flattened to dotted keys (``trainer.lr``);
* metrics at their steps, named as ``metrics.jsonl`` names them (``loss``, ``val_loss``...);
* artifacts: the resolved config (``config/start_step_<step>.yaml`` at each start), the
  drawn samples (``samples/step_<step>/``) and checkpoints (``checkpoints/step_<step>/``);
* tags: ``genloom.run_dir`` and ``genloom.pipeline``.

The MLflow run's id is kept in the plugin's checkpointed state (``run.state``), so a
resumed genloom run continues the same MLflow run: its metric history goes on from the
resumed step. Parameters in MLflow cannot change, so a resumed run adds only the keys the
run does not have yet; the config it resumed with is its ``config/start_step_<step>.yaml``.
Metrics are sent in batches (at most every :data:`SEND_SECONDS`, and at each evaluation,
checkpoint and the end), so a run that logs every step does not wait for a database
write per step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genloom import pipeline
from genloom.settings import SettingsError, check_types
from genloom.trainer import DrawnSamples
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

SQLITE = "sqlite:///"
CHECKPOINTS = ("last", "all", "none")
SEND_SECONDS = 10.0
MAX_PARAMS_PER_BATCH = 100  # MLflow's limits: parameters per log_batch call,
MAX_PARAM_LENGTH = 6000  # characters of a parameter's value,
MAX_METRICS_PER_BATCH = 1000  # metrics per call
END_STATUS = {"max_steps": "FINISHED", "stopped": "FINISHED", "signal": "KILLED", "failed": "FAILED"}
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
# MLflow creates a SQLite store through some fifty Alembic migrations, one INFO line each.
QUIET_LOGGERS = ("alembic", "mlflow.store.db.utils")


@dataclass(frozen=True)
class Settings:
    """``logger.mlflow`` (genloom_loggers/conf/logger/mlflow.yaml documents each key)."""

    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    experiment: str | None = None
    run_name: str | None = None
    artifact_location: str | None = None
    samples: int = 4
    checkpoints: str = "last"

    def __post_init__(self) -> None:
        check_types(self, where="logger.mlflow")
        if self.samples < 0:
            raise SettingsError(f"logger.mlflow.samples={self.samples} must be at least 0 (0: no samples)")
        if self.checkpoints not in CHECKPOINTS:
            raise SettingsError(f"logger.mlflow.checkpoints={self.checkpoints!r}; use one of "
                                f"{', '.join(CHECKPOINTS)}")
        if not self.tracking_uri.strip():
            raise SettingsError("logger.mlflow.tracking_uri is empty; give a sqlite:///FILE or an MLflow URI")


class Logger:
    """One genloom run's MLflow run."""

    def __init__(self, settings: Settings, run: Any) -> None:
        self.samples = settings.samples
        self.checkpoints = settings.checkpoints
        self.run_dir = Path(run.run_dir)
        self.uri = absolute_uri(settings.tracking_uri)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.pending: list[Metric] = []
        self.last_sent = time.monotonic()
        self.last_checkpoint: Path | None = None
        state = run.state
        continued = state.get("mlflow_run_id") if state.get("mlflow_tracking_uri") == self.uri else None
        if continued is not None:
            self.run_id = continued
            self.client.update_run(continued, status="RUNNING")
            log.info("MLflow: continuing run %s in %s", continued, self.uri)
        else:
            if state.get("mlflow_run_id"):
                log.warning("MLflow: the checkpoint's run %s is in %s, not in %s; starting a new run",
                            state["mlflow_run_id"], state.get("mlflow_tracking_uri"), self.uri)
            experiment = self._experiment(settings, run)
            names = pipeline.component_names(run.config)
            created = self.client.create_run(
                experiment, run_name=settings.run_name or _shown_path(self.run_dir),
                tags={"genloom.run_dir": str(self.run_dir.resolve()),
                      "genloom.pipeline": "/".join(str(v) for v in names.values())},
            )
            self.run_id = created.info.run_id
            state["mlflow_run_id"], state["mlflow_tracking_uri"] = self.run_id, self.uri
            log.info("MLflow: run %s in %s", self.run_id, self.uri)
        config = OmegaConf.to_container(run.config, resolve=True)
        self._log_params(dict(flatten(config)))
        self.client.log_text(self.run_id, OmegaConf.to_yaml(config), f"config/start_step_{run.step:06d}.yaml")

    def _experiment(self, settings: Settings, run: Any) -> str:
        name = settings.experiment or str(OmegaConf.select(run.config, "pipeline.name") or "genloom")
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = settings.artifact_location
        if location is None and self.uri.startswith(SQLITE):  # beside the database, not in the cwd
            location = (Path(self.uri.removeprefix(SQLITE)).parent / "mlartifacts").as_uri()
        # Training runs, not traces: MLflow's UI then opens the experiment on its runs.
        return self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)

    def _log_params(self, params: dict[str, str]) -> None:
        logged = self.client.get_run(self.run_id).data.params
        changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
        if changed:
            log.info("MLflow keeps a run's first parameters; this start changed %s (its config is "
                     "config/start_step_*.yaml)", ", ".join(changed))
        new = [Param(k, v) for k, v in params.items() if k not in logged]
        for start in range(0, len(new), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new[start : start + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, split: str, step: int, metrics: Mapping[str, float]) -> None:
        prefix = "val_" if split == "val" else ""
        now = int(time.time() * 1000)
        self.pending += [Metric(prefix + key, float(value), now, step) for key, value in metrics.items()]
        if time.monotonic() - self.last_sent >= SEND_SECONDS:
            self.flush()

    def log_samples(self, step: int, drawn: DrawnSamples) -> None:
        self.client.log_artifacts(self.run_id, str(drawn.directory), f"samples/step_{step:06d}")

    def checkpoint_saved(self, step: int, path: Path) -> None:
        self.last_checkpoint = path
        self.flush()
        if self.checkpoints == "all":
            self.client.log_artifacts(self.run_id, str(path), f"checkpoints/{path.name}")

    def flush(self) -> None:
        for start in range(0, len(self.pending), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=self.pending[start : start + MAX_METRICS_PER_BATCH])
        self.pending = []
        self.last_sent = time.monotonic()

    def close(self, reason: str) -> None:
        self.flush()
        if self.checkpoints == "last" and self.last_checkpoint is not None and self.last_checkpoint.is_dir():
            self.client.log_artifacts(self.run_id, str(self.last_checkpoint),
                                      f"checkpoints/{self.last_checkpoint.name}")
        self.client.set_terminated(self.run_id, status=END_STATUS.get(reason, "FINISHED"))


def absolute_uri(uri: str) -> str:
    """``sqlite:///outputs/mlflow.db`` made absolute (against the working directory), its folder made.

    SQLite creates the file but not its folder; an absolute URI also names the same store
    from wherever the run's tag or a resumed run reads it. Other URIs are MLflow's to read.
    """
    if not uri.startswith(SQLITE):
        return uri
    path = Path(uri.removeprefix(SQLITE)).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLITE + str(path)


def flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``{"trainer": {"lr": 0.001}}`` -> ``("trainer.lr", "0.001")``.

    A list stays one value; values are cut to MLflow's limit.
    """
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from flatten(value, f"{prefix}{key}.")
    elif prefix:
        yield prefix[:-1], str(node)[:MAX_PARAM_LENGTH]


def _shown_path(path: Path) -> str:
    """The run directory as a user typed it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())
