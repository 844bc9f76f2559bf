"""``genloom serve``: read the config, load the checkpoints, run uvicorn until SIGTERM.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and lets the requests in
flight finish for up to ``serve.grace_period_s``; then the engines finish what they hold
and the process exits with status 0.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from genloom.plugins import active
from genloom.registry import RegistryError
from genloom.serve.app import Limits, ServeOptions, create_app
from genloom.serve.models import ServedModel

log = logging.getLogger("genloom")

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def model_paths(cfg: DictConfig) -> dict[str, str]:
    """``{name: checkpoint}`` from ``checkpoint=DIR`` or ``models={name: DIR, ...}``."""
    node = cfg.get("models")
    models = {} if node is None else OmegaConf.to_container(node, resolve=True)
    if not isinstance(models, dict):
        raise RegistryError(f"models must be a mapping {{name: checkpoint}}, got {models!r}")
    if cfg.get("checkpoint") is not None:
        if models:
            raise RegistryError("give checkpoint=DIR or models={name: DIR, ...}, not both")
        models = {default_name(str(cfg.checkpoint)): str(cfg.checkpoint)}
    if not models:
        raise RegistryError(
            "nothing to serve: give checkpoint=DIR, or several as 'models={story: DIR1, digits: DIR2}'"
        )
    for name, path in models.items():
        if not MODEL_NAME.match(str(name)):
            raise RegistryError(
                f"models.{name}: a model name holds letters, digits, '.', '_' and '-' only"
            )
        if not isinstance(path, str):
            raise RegistryError(f"models.{name} must be a checkpoint directory, got {path!r}")
    return {str(k): v for k, v in models.items()}


def default_name(checkpoint: str) -> str:
    """The run directory's name: ``outputs/train/2026-01-01/12-00-00/checkpoints/latest`` -> ``12-00-00``."""
    path = Path(checkpoint).resolve()
    while path.name in ("checkpoints", "latest") or re.match(r"^step_\d+$", path.name):
        path = path.parent
    name = re.sub(r"[^A-Za-z0-9._-]", "-", path.name).lstrip("-._") or "model"
    return name


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_options(settings: dict[str, Any]) -> ServeOptions:
    api_key = settings.get("api_key") or os.environ.get("GENLOOM_API_KEY") or None
    host = str(settings["host"])
    if not is_loopback(host) and not api_key:
        raise RegistryError(
            f"serve.host={host} is reachable from other machines: set an API key with "
            "serve.api_key=... or the environment variable GENLOOM_API_KEY (or bind serve.host=127.0.0.1)"
        )
    limit_keys = Limits.__dataclass_fields__
    unknown = sorted(set(settings) - set(limit_keys) - {"host", "port", "api_key", "cors_origins",
                                                        "grace_period_s", "threads"})
    if unknown:
        raise RegistryError(f"unknown serve settings {', '.join('serve.' + k for k in unknown)}; "
                            f"see conf/serve.yaml for the settings")
    limits = Limits(**{k: settings[k] for k in limit_keys if k in settings})
    for key, value in vars(limits).items():
        least = 0 if key == "batch_window_ms" else 1
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < least:
            raise RegistryError(f"serve.{key}={value!r} must be a positive number")
    serving_threads(settings.get("threads", "auto"))
    return ServeOptions(api_key=api_key, cors_origins=list(settings.get("cors_origins") or []), limits=limits)


def serving_threads(value: Any) -> int:
    """Torch's intra-op threads while serving: ``auto`` leaves one core to the event loop.

    The event loop (HTTP, JSON, one server-sent event per token) runs beside the decoding
    thread; when torch's workers take every core, each parallel operation waits for the worker
    the loop preempted. On 2 cores, one torch thread served the small benchmark model 1.4x
    (16 clients) to 2x (one client) faster than two (docs/benchmarks.md).
    """
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores - 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RegistryError(f"serve.threads={value!r} must be a number of threads (1 or more) or auto")
    return value


def run(cfg: DictConfig) -> None:
    import uvicorn

    settings = OmegaConf.to_container(cfg.serve, resolve=True)
    assert isinstance(settings, dict)
    options = serve_options(settings)
    plugins = active()
    use_ema = cfg.get("use_ema")
    if use_ema is not None and not isinstance(use_ema, bool):
        raise RegistryError(f"use_ema={use_ema!r} must be true, false or null (null: the EMA of the "
                            "weights where a checkpoint holds one)")
    models = {}
    for name, path in model_paths(cfg).items():
        models[name] = ServedModel(name, path, plugins, cfg.device, use_ema=use_ema)
        log.info("model %s: %s (step %d, %s, %s weights)", name, models[name].loaded.checkpoint.path,
                 models[name].loaded.checkpoint.step, models[name].media_type, models[name].loaded.weights)
    app = create_app(models, options)
    torch.set_num_threads(serving_threads(settings.get("threads", "auto")))
    config = uvicorn.Config(
        app, host=str(settings["host"]), port=int(settings["port"]), log_config=None,
        timeout_graceful_shutdown=int(settings["grace_period_s"]), access_log=False,
    )
    log.info("serving on http://%s:%d (Ctrl-C or SIGTERM stops it)", settings["host"], settings["port"])
    _GracefulServer(config).run()
    log.info("stopped")


def _graceful_server_class():  # noqa: ANN202 - uvicorn is imported only when serving
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn's server, but a signal that ended a graceful shutdown is not raised again.

        uvicorn re-raises SIGTERM once it has shut down, so the process would die of it; a
        drained server has done what SIGTERM asks, and exits with status 0.
        """

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return GracefulServer


def _GracefulServer(config: Any) -> Any:  # noqa: N802 - reads as the class it builds
    return _graceful_server_class()(config)
