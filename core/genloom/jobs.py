"""What ``genloom train``, ``sample``, ``eval``, ``serve`` and ``export`` do once Hydra composed the config.

Each job is short: parse the config into typed settings, build the pipeline from the
registry, hand it to the runtime, report where the results are. Errors a user can fix
are reported as one message, without a traceback.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from genloom import cache, checkpoint, classes, distributed, fitting, frozen, pipeline, rng, rundir, sampler
from genloom.export import export, refuse_occupied
from genloom.interfaces import ComparisonDecoder, Pretrained, Reconstructing
from genloom.plugins import PluginLoadError, PluginSet, active
from genloom.registry import RegistryError
from genloom.settings import SettingsError, check_types, from_mapping, unknown_key_message
from genloom.trainer import (
    Trainer,
    TrainerSettings,
    TrainingError,
    TrainingInterrupted,
    collate,
    evaluate,
    resume_dir,
)

log = logging.getLogger("genloom")

# Errors that mean "the input or config is wrong": reported as a message, exit status 1.
USER_ERRORS = (
    RegistryError, TrainingError, checkpoint.CheckpointError, ValueError, FileNotFoundError,
    NotADirectoryError, PluginLoadError, rundir.RunDirectoryBusy,
)
CHECKPOINT_HELP = "a run directory, its checkpoints/ folder, or one step_* directory"


@dataclass
class RunSettings:
    """The top level of ``genloom train``'s config: each node is checked where it is used."""

    seed: int = 0
    device: str = "auto"
    trainer: Any = None
    pipeline: Any = None
    dataset: Any = None
    encoder: Any = None
    generator: Any = None
    decoder: Any = None
    condition_encoder: Any = None
    logger: Any = None  # experiment trackers (logger=...): a plugin's config group, read by its hooks

    def __post_init__(self) -> None:
        check_types(self, where="")
        extra = sorted(set(self.pipeline or {}) - {"name"}) if isinstance(self.pipeline, dict) else []
        if extra:  # a preset's pipeline node only names it
            raise SettingsError(unknown_key_message("pipeline", extra[0], ["name"]))


@dataclass
class SampleSettings:
    """``genloom sample``'s config (conf/sample.yaml documents each key)."""

    checkpoint: str
    n: int = 4
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    prompt: Any = None  # prompt=42 is text too
    label: int | None = None
    stream: bool = True
    use_ema: bool | None = None  # the checkpoint's EMA of the weights where it has one; false: raw
    options: dict = field(default_factory=dict)  # the generator's own: checked by the sampler

    def __post_init__(self) -> None:
        check_types(self, where="")
        for key in ("n", "batch_size"):
            if getattr(self, key) < 1:
                raise SettingsError(f"{key}={getattr(self, key)} must be at least 1")


@dataclass
class EvalSettings:
    """``genloom eval``'s config (conf/eval.yaml documents each key)."""

    checkpoint: str
    batch_size: int = 32
    max_batches: int | None = None
    device: str = "auto"
    dataset: dict | None = None  # overrides of the checkpoint's dataset
    use_ema: bool | None = None

    def __post_init__(self) -> None:
        check_types(self, where="")
        if self.batch_size < 1:
            raise SettingsError(f"batch_size={self.batch_size} must be at least 1")
        if self.max_batches is not None and self.max_batches < 1:
            raise SettingsError(
                f"max_batches={self.max_batches} must be at least 1, or null for the whole validation split"
            )


@dataclass
class ExportSettings:
    """``genloom export``'s config (conf/export.yaml documents each key)."""

    checkpoint: str
    format: str
    out: str
    device: str = "cpu"
    use_ema: bool | None = None
    options: dict = field(default_factory=dict)  # the format's own: checked by the generator

    def __post_init__(self) -> None:
        check_types(self, where="")


def run(command: str, cfg: DictConfig) -> float | None:
    try:
        jobs = {"train": train, "sample": sample, "eval": evaluate_checkpoint, "serve": serve,
                "export": export_checkpoint}
        return jobs[command](cfg)
    except TrainingInterrupted as stop:
        (log.error if stop.error else log.warning)("%s", stop)
        raise SystemExit(128 + stop.signum) from None
    except USER_ERRORS as err:
        log.error("%s", _user_message(err))
        raise SystemExit(1) from None


def _user_message(err: BaseException) -> BaseException:
    """The error to report: a config resolver's own (``${frozen:...}``), not OmegaConf's wrappers."""
    while isinstance(err, InterpolationResolutionError):
        inner = err.__cause__ or err.__context__
        if not isinstance(inner, USER_ERRORS):
            break
        err = inner
    return err


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
    # Settings are checked before any data is read or built: a typo fails in a second.
    _refuse_missing_checkpoint(cfg)
    settings = from_mapping(
        TrainerSettings, _container(cfg.trainer), where="trainer", source=_trainer_source()
    )
    resume_from = resume_dir(settings, run_dir() / "checkpoints")
    cfg = frozen.with_sizes(cfg, resume_from)
    run_settings = from_mapping(RunSettings, _container(cfg), where="")
    placement = distributed.setup(run_settings.device)
    lock = None
    try:
        # Before genloom writes anything there (Hydra has written .hydra/ and train.log).
        lock = rundir.RunDirLock(run_dir()) if placement.is_main else None
        rng.seed_all(run_settings.seed)
        out = run_dir()
        built = _build_for_training(cfg, plugins, resume_from)
        if resume_from is None and isinstance(built.generator, Pretrained):
            loaded = built.generator.load_pretrained()  # a resumed run has its own weights
            if loaded and placement.is_main:
                log.info("%s", loaded)
        _fit_encoder(built, resume_from)
        frozen.place(built, placement.device)
        classes.check_condition_classes(built.dataset, built.generator, cfg)
        with distributed.main_first(placement):
            train_data, val_data = _splits(built, cfg, out, progress=settings.progress and placement.is_main)
        copies = frozen.stage_copies(built, out) if placement.is_main else {}
        if placement.is_main:
            _record_run(out, plugins)
            n_params = sum(p.numel() for p in built.generator.parameters())
            n_trained = sum(p.numel() for p in built.generator.parameters() if p.requires_grad)
            trained = "" if n_trained == n_params else f" ({n_trained / 1e6:.3f}M of them trained)"
            log.info(
                "pipeline %s on %s: %.2fM parameters%s, %d train / %d val examples of %d %s",
                pipeline.component_names(cfg), placement.device, n_params / 1e6, trained,
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
            hooks=plugins.events,
            unit=built.dataset.unit,
            units_per_example=built.dataset.units_per_example,
            seed=run_settings.seed,
            frozen=copies,
            files=_fitted_files(built),
            decoder=built.decoder,
        )
        result = trainer.fit()
    finally:
        if lock is not None:
            lock.release()
        distributed.teardown()
    if placement.is_main:
        log.info("final metrics: %s", json.dumps({k: round(v, 4) for k, v in result.metrics.items()}))
        if result.checkpoint is None:
            log.warning("no checkpoint was saved, so there is nothing to sample from %s", out)
        else:
            log.info("checkpoint: %s", result.checkpoint)
            log.info("sample it:  genloom sample checkpoint=%s", out)
    return result.metrics.get("val_loss")


def _refuse_missing_checkpoint(cfg: DictConfig) -> None:
    """A frozen component without its checkpoint says what to give (not Hydra's interpolation error)."""
    for key in frozen.KEYS:
        node = cfg.get(key)
        if frozen.is_frozen_node(node) and OmegaConf.is_missing(node, "checkpoint"):
            raise SettingsError(frozen.missing_checkpoint(f"{key}.checkpoint"))


def _build_for_training(cfg: DictConfig, plugins: PluginSet, resume_from: Path | None) -> pipeline.Pipeline:
    """The training pipeline; a resumed one builds its frozen components from the checkpoint's copies."""
    config = cfg
    if resume_from is not None:
        frozen.check_resume(cfg, resume_from)
        config = frozen.bind(cfg, resume_from)
    built = pipeline.build(config, plugins.registry)
    frozen.check_pipeline(built)
    return built


def _fit_encoder(built: pipeline.Pipeline, resume_from: Path | None) -> None:
    """Fit an encoder that learns from the training data; a resumed run restores it instead.

    Every rank fits for itself: fitting is deterministic, so they agree without a broadcast.
    """
    if resume_from is None:
        fitting.fit(built)
    else:
        fitting.restore(built, resume_from)
    fitting.check_vocabulary(built, getattr(built.generator, "vocab_size", None))


def _fitted_files(built: pipeline.Pipeline) -> dict[str, str]:
    """What every checkpoint stores beside the weights for a fitted encoder (``tokenizer.json``)."""
    fitted = fitting.state(built)
    return {} if fitted is None else {fitting.FITTED_FILE: fitted}


def _splits(
    built: pipeline.Pipeline, cfg: DictConfig, out: Path, *, progress: bool
) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """The train and val splits; through a frozen encoder they are encoded once per run directory."""
    stages = frozen.frozen_components(built)
    encoding = {key: stage.source.sha256 for key, stage in stages.items() if key != "decoder"}
    if not encoding:
        return (built.dataset.split("train", built.encoder, built.condition_encoder),
                built.dataset.split("val", built.encoder, built.condition_encoder))
    dataset_config = _container(cfg.dataset)
    keys = {split: cache.cache_key(dataset_config, split, encoding) for split in ("train", "val")}
    splits = cache.cached_splits(built.dataset, built.encoder, built.condition_encoder,
                                 directory=out / cache.CACHE_DIR, keys=keys, progress=progress)
    return splits["train"], splits["val"]


def sample(cfg: DictConfig) -> None:
    settings = _job_settings(SampleSettings, cfg, "sample")
    plugins = active()
    model = sampler.load(settings.checkpoint, plugins, settings.device, use_ema=settings.use_ema)
    log.info("loaded %s (step %d)", model.checkpoint.path, model.checkpoint.step)
    out = run_dir()
    _record_run(out, plugins)
    paths = sampler.Sampler(model, hooks=plugins.events).run(
        n=settings.n,
        batch_size=settings.batch_size,
        seed=settings.seed,
        out_dir=out / "samples",
        prompt=None if settings.prompt is None else str(settings.prompt),
        label=settings.label,
        stream=settings.stream,
        options=settings.options,
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


def export_checkpoint(cfg: DictConfig) -> None:
    needed = (("checkpoint", CHECKPOINT_HELP), ("format", "the format to write (hf...)"),
              ("out", "the directory to create"))
    for key, what in needed:
        if OmegaConf.is_missing(cfg, key):
            raise SettingsError(f"genloom export needs {key}=...: {what}")
    settings = _job_settings(ExportSettings, cfg, "export")
    out = Path(settings.out)
    refuse_occupied(out)  # before a large model is loaded for nothing
    model = sampler.load(settings.checkpoint, active(), settings.device, use_ema=settings.use_ema)
    log.info("loaded %s (step %d)", model.checkpoint.path, model.checkpoint.step)
    paths = export(model, format=settings.format, out=out, options=settings.options)
    log.info("wrote %s: %s", out, ", ".join(p.name for p in paths))


def evaluate_checkpoint(cfg: DictConfig) -> float:
    settings = _job_settings(EvalSettings, cfg, "eval")
    plugins = active()
    model = sampler.load(settings.checkpoint, plugins, settings.device, use_ema=settings.use_ema)
    built, ckpt = model.pipeline, model.checkpoint
    # The dataset is the user's choice or the checkpoint's (the log says which), built
    # like any other component; the model came through the safe path above.
    name, options = pipeline.component_spec(_eval_config(ckpt, settings.dataset), "dataset")
    built.dataset = plugins.registry.build("dataset", name, options)
    placement = distributed.Placement(model.device)
    val_data = built.dataset.split("val", built.encoder, built.condition_encoder)
    metrics = evaluate(
        built.generator, val_data, batch_size=settings.batch_size, max_batches=settings.max_batches,
        placement=placement,
    )
    out = run_dir()
    _record_run(out, plugins)
    _write_comparison(built, val_data, settings.batch_size, placement.device, out / "reconstructions")
    (out / "eval.json").write_text(
        json.dumps({"checkpoint": str(ckpt.path), "step": ckpt.step, "weights": model.weights, **metrics},
                   indent=2)
    )
    log.info("%s at step %d (%s weights): %s", ckpt.path, ckpt.step, model.weights,
             ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics["loss"]


def _eval_config(ckpt: checkpoint.Checkpoint, dataset: dict | None) -> DictConfig:
    """The checkpoint's config, its dataset replaced or amended by the user's overrides.

    ``dataset=<option>`` replaces the checkpoint's dataset node; ``dataset.<key>=<value>``
    changes one key of it. Either way the log says which data is scored.
    """
    config = ckpt.config.copy()
    if dataset:
        chosen = "dataset" in HydraConfig.get().runtime.choices
        node = dataset if chosen else OmegaConf.merge(config.dataset, dataset)
        config.dataset = node
        source = "the dataset given on the command line"
    else:
        source = "the dataset the checkpoint was trained on"
    name, options = pipeline.component_spec(config, "dataset")
    log.info(
        "scoring the validation split of %s: %s %s (another: dataset=<option> or dataset.<key>=<value>)",
        source, name, " ".join(f"{k}={v}" for k, v in options.items()),
    )
    return config


def _job_settings(cls: type, cfg: DictConfig, command: str) -> Any:
    """``cls`` from the composed config of ``command``; a missing checkpoint says what to give."""
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise SettingsError(f"genloom {command} needs checkpoint=DIR: {CHECKPOINT_HELP}")
    return from_mapping(cls, _container(cfg, resolve=False), where="")


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


def _container(node: DictConfig, *, resolve: bool = True) -> dict:
    options = OmegaConf.to_container(node, resolve=resolve)
    assert isinstance(options, dict)
    return options


def _trainer_source() -> str:
    """Where the ``trainer`` keys came from, for a message about one of them."""
    choices = HydraConfig.get().runtime.choices
    files = [f"trainer/{choices['trainer']}.yaml"] if choices.get("trainer") else []
    if choices.get("pipeline"):
        files.append(f"pipeline/{choices['pipeline']}.yaml")
    return f" (set on the command line or in {' or '.join(files)})" if files else ""


