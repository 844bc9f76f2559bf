"""What ``genloom train``, ``sample``, ``eval`` and ``serve`` do once Hydra has composed the config.

Each job is short: parse the config into typed settings, build the pipeline from the
registry, hand it to the runtime, report where the results are. Errors a user can fix
are reported as one message, without a traceback.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from genloom import checkpoint, distributed, pipeline, sampler
from genloom.interfaces import ComparisonDecoder, Reconstructing
from genloom.plugins import PluginSet, active
from genloom.registry import RegistryError
from genloom.trainer import (
    Trainer,
    TrainerSettings,
    TrainingError,
    TrainingInterrupted,
    collate,
    evaluate,
)

log = logging.getLogger("genloom")

# Errors that mean "the input or config is wrong": reported as a message, exit status 1.
USER_ERRORS = (
    RegistryError, TrainingError, checkpoint.CheckpointError, ValueError, FileNotFoundError,
    NotADirectoryError,
)
SAMPLING_OPTIONS = ("max_new_tokens", "temperature", "top_k", "top_p", "stop")


def run(command: str, cfg: DictConfig) -> float | None:
    try:
        jobs = {"train": train, "sample": sample, "eval": evaluate_checkpoint, "serve": serve}
        return jobs[command](cfg)
    except TrainingInterrupted as stop:
        log.warning("%s", stop)
        raise SystemExit(128 + stop.signum) from None
    except USER_ERRORS as err:
        log.error("%s", err)
        raise SystemExit(1) from None


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def train(cfg: DictConfig) -> float | None:
    plugins = active()
    if cfg.get("pipeline") is None and cfg.get("generator") is None:
        presets = sorted({o for p in plugins.plugins for o in p.config_groups.get("pipeline", [])})
        raise RegistryError(
            f"choose what to train: pipeline=<preset>; installed presets: "
            f"{', '.join(presets) or 'none (install a plugin such as genloom-text)'}"
        )
    placement = distributed.setup(cfg.device)
    try:
        torch.manual_seed(cfg.seed)
        built = pipeline.build(cfg, plugins.registry)
        with distributed.main_first(placement):
            train_data = built.dataset.split("train", built.encoder, built.condition_encoder)
            val_data = built.dataset.split("val", built.encoder, built.condition_encoder)
        settings = TrainerSettings(**_container(cfg.trainer))
        out = run_dir()
        if placement.is_main:
            _record_run(out, plugins)
            n_params = sum(p.numel() for p in built.generator.parameters())
            log.info(
                "pipeline %s on %s: %.2fM parameters, %d train / %d val examples of %d %s",
                pipeline.component_names(cfg), placement.device, n_params / 1e6,
                len(train_data), len(val_data), built.dataset.units_per_example, built.dataset.unit,
            )
        trainer = Trainer(
            built.generator,
            train_data=train_data,
            val_data=val_data,
            settings=settings,
            placement=placement,
            run_dir=out,
            config=cfg,
            plugin_versions=plugins.versions(),
            hooks=plugins.manager.hook,
            unit=built.dataset.unit,
            units_per_example=built.dataset.units_per_example,
            seed=cfg.seed,
        )
        result = trainer.fit()
    finally:
        distributed.teardown()
    if placement.is_main:
        log.info("final metrics: %s", json.dumps({k: round(v, 4) for k, v in result.metrics.items()}))
        log.info("checkpoint: %s", result.checkpoint)
        log.info("sample it:  genloom sample checkpoint=%s", out)
    return result.metrics.get("val_loss")


def sample(cfg: DictConfig) -> None:
    plugins = active()
    model = sampler.load(cfg.checkpoint, plugins, cfg.device)
    log.info("loaded %s (step %d)", model.checkpoint.path, model.checkpoint.step)
    out = run_dir()
    _record_run(out, plugins)
    paths = sampler.Sampler(model, hooks=plugins.manager.hook).run(
        n=cfg.n,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        out_dir=out / "samples",
        prompt=None if cfg.prompt is None else str(cfg.prompt),  # prompt=42 is text too
        label=cfg.label,
        stream=cfg.stream,
        options={key: cfg[key] for key in SAMPLING_OPTIONS},
    )
    log.info("wrote %d files to %s", len(paths), out / "samples")


def serve(cfg: DictConfig) -> None:
    """Load every checkpoint named, then answer HTTP until SIGTERM or Ctrl-C (exit status 0)."""
    try:
        from genloom.serve import server
    except ImportError as err:
        raise RegistryError(
            f"genloom serve needs the serve extra ({err.name} is missing): pip install 'genloom[serve]'"
        ) from None
    server.run(cfg)


def evaluate_checkpoint(cfg: DictConfig) -> float:
    plugins = active()
    ckpt = checkpoint.read(cfg.checkpoint)
    built = pipeline.build(ckpt.config, plugins.registry)
    placement = distributed.Placement(distributed.select_device(cfg.device))
    checkpoint.load_weights(built.generator, ckpt.path, placement.device)
    built.generator.to(placement.device)
    val_data = built.dataset.split("val", built.encoder, built.condition_encoder)
    metrics = evaluate(
        built.generator, val_data, batch_size=cfg.batch_size, max_batches=cfg.max_batches,
        placement=placement,
    )
    out = run_dir()
    _record_run(out, plugins)
    _write_comparison(built, val_data, cfg.batch_size, placement.device, out / "reconstructions")
    (out / "eval.json").write_text(
        json.dumps({"checkpoint": str(ckpt.path), "step": ckpt.step, **metrics}, indent=2)
    )
    log.info("%s at step %d: %s", ckpt.path, ckpt.step,
             ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics["loss"]


def _write_comparison(
    built: pipeline.Pipeline, data: torch.utils.data.Dataset, count: int, device: torch.device,
    directory: Path,
) -> None:
    """Originals beside reconstructions, when the generator and decoder can show them."""
    if not isinstance(built.generator, Reconstructing) or not isinstance(built.decoder, ComparisonDecoder):
        return
    indices = range(min(count, len(data)))
    batch = {k: v.to(device) for k, v in collate([data[i] for i in indices]).items()}
    with torch.inference_mode():
        originals, reconstructions = built.generator.reconstruct(batch)
    directory.mkdir(parents=True, exist_ok=True)
    for path in built.decoder.write_comparison(originals.cpu(), reconstructions.cpu(), directory):
        log.info("wrote %s", path)


def _record_run(out: Path, plugins: PluginSet) -> None:
    """Every run directory says exactly which plugin distributions produced it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "plugins.json").write_text(json.dumps(plugins.versions(), indent=2))


def _container(node: DictConfig) -> dict:
    options = OmegaConf.to_container(node, resolve=True)
    assert isinstance(options, dict)
    return options


