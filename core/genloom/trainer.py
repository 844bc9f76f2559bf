"""The one training loop, for every trainable generator.

Setup, train, evaluate, save: written out as one explicit loop (no callbacks framework).
Plugins see it through a few named events (see :mod:`genloom.hookspecs`), each given a
:class:`TrainingRun`: through it a plugin may ask training to stop or keep state in the
checkpoints. Nothing here
knows which modality it trains: the generator scores batches, the dataset says what a
unit of throughput is.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from genloom import allocator, checkpoint, compiling, losscurve, pipeline, rng, sampler, sharding
from genloom.distributed import Placement, all_reduce_weighted_mean, autocast, main_first
from genloom.interfaces import CodeUsage, Decoder
from genloom.settings import check_types, from_mapping

log = logging.getLogger(__name__)

WEIGHT_SUFFIX = "/weight"  # Generator.loss: "<name>/weight" weights <name> in evaluation


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what was kept."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was saved first, or ``error`` says why not."""

    def __init__(self, signum: int, saved: Path | None, error: str | None = None) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} without saving: {error}" if error else
                         f"stopped by {name}; checkpoint: {saved}")
        self.signum = signum
        self.saved = saved
        self.error = error


@dataclass(frozen=True)
class EarlyStopping:
    """``trainer.early_stopping``: stop when ``metric`` has not improved for ``patience`` evaluations."""

    patience: int | None = None  # evaluations without improvement; null: off
    metric: str = "val_loss"  # a key of the run's metrics after an evaluation
    mode: str = "min"  # min: lower is better; max: higher is better
    min_delta: float = 0.0  # a smaller change than this is no improvement

    MODES = ("min", "max")

    def __post_init__(self) -> None:
        check_types(self, where="trainer.early_stopping")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"trainer.early_stopping.patience={self.patience} must be at least 1, "
                             "or null to turn early stopping off")
        if self.mode not in self.MODES:
            raise ValueError(f"trainer.early_stopping.mode={self.mode!r}; use one of {', '.join(self.MODES)}")
        if self.min_delta < 0:
            raise ValueError(f"trainer.early_stopping.min_delta={self.min_delta} must be at least 0")


@dataclass(frozen=True)
class EMA:
    """``trainer.ema``: an exponential moving average of the weights (:mod:`genloom.builtin.ema`)."""

    decay: float | None = None  # the average's weight per step, e.g. 0.999; null: off
    warmup: bool = True  # after n updates the decay is min(decay, (1 + n) / (10 + n))
    start_step: int = 0  # until this step the average is a copy of the weights

    def __post_init__(self) -> None:
        check_types(self, where="trainer.ema")
        if self.decay is not None and not 0 < self.decay < 1:
            raise ValueError(f"trainer.ema.decay={self.decay} must lie strictly between 0 and 1 "
                             "(0.999 is usual), or be null to turn the EMA off")
        if self.start_step < 0:
            raise ValueError(f"trainer.ema.start_step={self.start_step} must be at least 0")


@dataclass(frozen=True)
class TrainerSettings:
    """The ``trainer`` config group, typed (conf/trainer/default.yaml documents each key)."""

    max_steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_batches: int | None = 20
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: bool | str = False
    compile: bool = False
    precision: str = "auto"
    num_workers: int = 0
    progress: bool = True
    strategy: str = "ddp"
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    ema: EMA = field(default_factory=EMA)

    STRATEGIES = ("ddp", "fsdp")

    def __post_init__(self) -> None:
        if isinstance(self.early_stopping, Mapping):  # as composed: a config node's keys
            object.__setattr__(self, "early_stopping", from_mapping(
                EarlyStopping, self.early_stopping, where="trainer.early_stopping"))
        if isinstance(self.ema, Mapping):
            object.__setattr__(self, "ema", from_mapping(EMA, self.ema, where="trainer.ema"))
        check_types(self, where="trainer")
        for key in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"trainer.{key}={getattr(self, key)} must be at least 1")
        if self.eval_batches is not None and self.eval_batches < 1:
            raise ValueError(
                f"trainer.eval_batches={self.eval_batches} must be at least 1, or null for the whole split"
            )
        if self.strategy not in self.STRATEGIES:
            raise ValueError(f"trainer.strategy={self.strategy!r}; use one of {', '.join(self.STRATEGIES)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"trainer.min_lr_ratio={self.min_lr_ratio} must lie in [0, 1]")

    def lr_at(self, step: int) -> float:
        """Linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at max_steps."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(self.max_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        floor = self.lr * self.min_lr_ratio
        return floor + 0.5 * (self.lr - floor) * (1 + math.cos(math.pi * progress))


@dataclass
class RunResult:
    step: int
    checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    stop_reason: str | None = None  # a plugin ended training before max_steps: who and why


@dataclass(frozen=True)
class DrawnSamples:
    """What :meth:`TrainingRun.draw_samples` drew: the media, and the decoder's files of them."""

    media_type: str  # the decoder's: "text", "image", "audio"...
    media: list[Any]  # one item per sample, as the decoder's ``decode`` returns it
    paths: list[Path]  # ``decoder.write``'s: one file per sample, in order, then its gallery files
    directory: Path


class TrainingRun:
    """What the training events' hooks see (``run``), and how they act on the training.

    Read: ``step`` (optimizer steps done), ``metrics`` (the latest logged training metrics
    and the latest evaluation's, prefixed ``val_``), ``generator`` (the model being trained,
    sharded under FSDP), ``optimizer``, ``run_dir``, ``device``, ``rank``, ``world_size``,
    ``is_main`` (rank 0: the process that writes files), ``settings`` (the ``trainer`` config,
    typed), ``config`` (the run's whole composed config, as checkpoints save it: read it, do
    not change it), ``plugin`` (the name of the plugin being called) and ``stop_reason`` (who
    asked for a stop and why, once someone has; under torchrun it ends with the asking rank).

    Act: :meth:`request_stop`, :meth:`decline`, and :attr:`state`, the calling plugin's own
    dict that every checkpoint saves and resume restores. One object for the whole run: hooks
    may keep it. :meth:`draw_samples` shows what the model generates now, through the
    pipeline's decoder.
    """

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self.generator: nn.Module = trainer.generator
        self.optimizer: torch.optim.Optimizer = trainer.optimizer
        self.run_dir: Path = trainer.run_dir
        self.settings: TrainerSettings = trainer.settings
        self.config: DictConfig = trainer.config
        self.device: torch.device = trainer.placement.device
        self.rank: int = trainer.placement.rank
        self.world_size: int = trainer.placement.world_size
        self.is_main: bool = trainer.placement.is_main
        self.plugin: str = ""  # set by the event relay before it calls each plugin
        self.stop_reason: str | None = None  # "plugin 'x': why", once a stop was asked for
        self.states: dict[str, dict[str, Any]] = {}  # plugin name -> its state, as checkpoints keep it
        self.declined: dict[str, set[str]] = {}  # event -> plugins not called for it in this run

    @property
    def step(self) -> int:
        return self._trainer.step

    @property
    def metrics(self) -> Mapping[str, float]:
        return self._trainer.last_metrics

    @property
    def state(self) -> dict[str, Any]:
        """The calling plugin's state: ``torch.Tensor`` values, or values JSON can write.

        Saved with every checkpoint (tensors in ``trainer.safetensors``, the rest in
        ``trainer.json``; rank 0's copy) and given back on resume, before ``genloom_train_start``.
        """
        return self.states.setdefault(self.plugin, {})

    def request_stop(self, reason: str) -> None:
        """End training after this step: a checkpoint is saved and ``reason`` is logged.

        The first request wins; under torchrun every rank stops at the same step.
        """
        if self.stop_reason is None:
            self.stop_reason = f"plugin {self.plugin!r}: {reason}"

    def decline(self, event: str) -> None:
        """The calling plugin is not called for ``event`` again in this run.

        For a feature that config turned off: declined in ``genloom_train_start``, the
        per-step ``genloom_optimizer_step`` costs nothing at all once no plugin wants it.
        """
        self.declined.setdefault(event, set()).add(self.plugin)

    def draw_samples(self, n: int, directory: Path | None = None) -> DrawnSamples:
        """Draw ``n`` unconditioned samples from the generator as it is now, decode and write them.

        For a logger's evaluation-time samples, on the process that calls it alone (the
        rank-0 events): the generator's defaults for every sampling option, a seed derived
        from ``(seed, step)`` (the same step draws the same samples), and none of the
        training's random streams touched, so a run that draws resumes exactly as one that
        does not. Files go to ``directory``, by default ``<run_dir>/samples/step_<step>``,
        written by the decoder as ``genloom sample`` writes them. Raises ``RuntimeError``
        when samples cannot be drawn here: no decoder, or parameters sharded across ranks
        (``trainer.strategy=fsdp`` under torchrun), which one rank cannot generate with.
        """
        trainer = self._trainer
        if n < 1:
            raise ValueError(f"draw_samples takes n >= 1, got {n}")
        if trainer.decoder is None:
            raise RuntimeError("this run has no decoder to turn samples into media")
        if trainer.sharded:
            raise RuntimeError("samples cannot be drawn during training under trainer.strategy=fsdp: the "
                               "parameters are sharded across ranks; sample the checkpoints instead")
        directory = directory or self.run_dir / "samples" / f"step_{self.step:06d}"
        generator = trainer.generator
        was_training = generator.training
        generator.eval()
        try:
            with rng.streams_kept(self.device):
                seed = rng.derived_seed(trainer.seed, self.step)
                seeded = torch.Generator(device=self.device).manual_seed(seed)
                media = sampler.draw(generator, trainer.decoder, n, batch_size=n, rng=seeded)
        finally:
            generator.train(was_training)
        directory.mkdir(parents=True, exist_ok=True)
        paths = trainer.decoder.write(media, directory)
        return DrawnSamples(trainer.decoder.media_type, media, [Path(p) for p in paths], directory)


@dataclass
class _LossWindow:
    """Training steps since the last report; the loss stays on the device until then."""

    loss_sum: torch.Tensor
    steps: int = 0
    lr: float = 0.0
    grad_norm: torch.Tensor | None = None
    start: float = field(default_factory=time.perf_counter)


class LossModule(nn.Module):
    """Routes ``forward`` to ``generator.loss`` so DDP and torch.compile see the loss call."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.generator.loss(batch)


def epoch_batches(
    n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
    shuffle: bool = True,
) -> list[list[int]]:
    """Index batches of one epoch for one rank: a seeded permutation, sharded disjointly.

    Rank r takes ``perm[r::world_size]``, so the ranks' first batches together are exactly
    the first ``batch_size * world_size`` indices a single process would draw. Incomplete
    batches are dropped so that every rank takes the same number of steps.
    """
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    else:
        order = torch.arange(n)
    shard = order[rank::world_size][: n // world_size]
    count = len(shard) // batch_size
    return shard[: count * batch_size].view(count, batch_size).tolist() if count else []


class Trainer:
    """Trains ``generator`` on ``train_data``; evaluates on ``val_data``; saves checkpoints."""

    def __init__(
        self,
        generator: nn.Module,
        *,
        train_data: torch.utils.data.Dataset,
        val_data: torch.utils.data.Dataset,
        settings: TrainerSettings,
        placement: Placement,
        run_dir: Path,
        config: DictConfig,
        plugin_versions: dict[str, str | None],
        hooks: Any,
        unit: str = "item",
        units_per_example: int = 1,
        seed: int = 0,
        frozen: Mapping[str, Path] | None = None,
        files: Mapping[str, str] | None = None,
        decoder: Decoder | None = None,
    ) -> None:
        self.generator = generator.to(placement.device)
        self.decoder = decoder  # for TrainingRun.draw_samples; a run without one draws none
        self.frozen = dict(frozen or {})  # stored in every checkpoint (genloom.frozen.stage_copies)
        self.files = dict(files or {})  # likewise: a fitted encoder's tokenizer.json (genloom.fitting)
        self.train_data, self.val_data = train_data, val_data
        self.settings = settings
        self.placement = placement
        self.run_dir = run_dir
        self.checkpoints_dir = run_dir / "checkpoints"
        self.config = config
        self.plugin_versions = plugin_versions
        self.hooks = hooks
        self.unit, self.units_per_example = unit, units_per_example
        self.seed = seed
        self.step = 0
        self.last_checkpoint: Path | None = None
        self._stop_signal: int | None = None
        self._loss_plot: losscurve.LossPlot | None = None  # made at the first evaluation
        self._resumed_window: dict[str, Any] | None = None  # the loss window a stop saved

        s = settings
        self.batches_per_epoch = len(
            epoch_batches(len(train_data), s.batch_size, seed=seed, epoch=0,
                          rank=placement.rank, world_size=placement.world_size)
        )
        if self.batches_per_epoch == 0:
            raise TrainingError(
                f"the train split has {len(train_data)} examples, fewer than one batch of "
                f"{s.batch_size} per process; lower trainer.batch_size or add data"
            )
        if len(val_data) == 0:
            raise TrainingError("the validation split is empty; add data or raise dataset.val_fraction")

        self.sharded = placement.distributed and s.strategy == "fsdp"
        if self.sharded and s.ema.decay is not None:
            raise TrainingError(
                f"trainer.ema.decay={s.ema.decay} with trainer.strategy=fsdp: an EMA of sharded weights "
                "is not supported (each rank holds a shard; the average must be of the full weights). "
                "Use trainer.strategy=ddp, or trainer.ema.decay=null"
            )
        if self.sharded:  # before the optimizer: it must hold the sharded parameters
            sharding.shard(self.generator)
        self.optimizer = self._make_optimizer()
        self.model: nn.Module = LossModule(self.generator)
        if placement.distributed and not self.sharded:
            ddp_kwargs = {"device_ids": [placement.device.index]} if placement.device.type == "cuda" else {}
            self.model = nn.parallel.DistributedDataParallel(self.model, **ddp_kwargs)
        if s.compile:
            self.model = compiling.compile_step(self.model, placement.device)
        self._autocast = autocast(placement.device, s.precision)
        self.last_metrics: dict[str, float] = {}
        self.run = TrainingRun(self)

    # -- setup -------------------------------------------------------------------------

    def _make_optimizer(self) -> torch.optim.Optimizer:
        # Decay weight matrices and embeddings only; biases and norm gains stay free.
        params = [p for p in self.generator.parameters() if p.requires_grad]
        if not params:
            raise TrainingError("the generator has no trainable parameters")
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        s = self.settings
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=s.lr,
            betas=tuple(s.betas),
            fused=self.placement.device.type in ("cuda", "cpu") and not self.sharded,
        )

    def _resume(self) -> None:
        step_dir = resume_dir(self.settings, self.checkpoints_dir)
        if step_dir is None:
            return
        if self.sharded:  # every rank reads the full checkpoint and keeps its shard
            optimizer_state, extra = checkpoint.read_trainer_state(step_dir)
            weights = checkpoint.read_weights(step_dir)
            sharding.load_full(self.generator, self.optimizer, weights, optimizer_state)
        else:
            checkpoint.load_weights(self.generator, step_dir, self.placement.device)
            extra = checkpoint.load_trainer_state(step_dir, self.optimizer, self.placement.device)
        self.step = int(extra["step"])
        self._resumed_window = extra.get("window")
        self.run.states = extra.get(checkpoint.PLUGIN_STATE, {})
        self.last_checkpoint = step_dir
        log.info("resumed from %s at step %d", step_dir, self.step)

    # -- the loop ----------------------------------------------------------------------

    def fit(self) -> RunResult:
        """Train to ``max_steps``; the run directory must have one writer (:mod:`genloom.rundir`).

        On rank 0 a start-up first undoes what a killed save left, and ``metrics.jsonl``
        loses the records written after the checkpoint it starts from (all of them on a
        fresh start), so that it reads as one uninterrupted run.
        """
        s, p = self.settings, self.placement
        allocator.keep_freed_memory()  # every step reuses the last step's freed activations
        with main_first(p):
            if p.is_main:
                checkpoint.recover(self.checkpoints_dir)
        self._resume()
        if p.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        batches = self._train_batches(start=self.step * s.grad_accum)
        self._bar = tqdm(
            total=s.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
            disable=not (p.is_main and s.progress), desc="train",
        )
        self._window = _LossWindow(torch.zeros((), device=p.device))
        if self._resumed_window:  # stopped between two logs: the next log covers those steps too
            self._window.loss_sum.fill_(self._resumed_window["loss_sum"])
            self._window.steps = self._resumed_window["steps"]
            self._window.start -= self._resumed_window["seconds"]
        self.generator.train()
        with contextlib.ExitStack() as stack:
            self._metrics_file = (
                stack.enter_context(open(self.run_dir / "metrics.jsonl", "a")) if p.is_main else None
            )
            stack.enter_context(self._signals_handled())
            stack.enter_context(logging_redirect_tqdm())
            stack.enter_context(self._bar)
            self.hooks.genloom_train_start(run=self.run)
            # Looked up once, after the plugins could decline it: unwanted, a step costs no hook call.
            step_hooked = _implemented(self.hooks, "genloom_optimizer_step", self.run)
            compiling_since = time.perf_counter() if s.compile else None  # the first step compiles
            while self.step < s.max_steps:
                self._train_step(batches)
                if compiling_since is not None:
                    log.info("first compiled step took %.1f s, compilation included",
                             time.perf_counter() - compiling_since)
                    compiling_since = None
                if step_hooked:
                    self.hooks.genloom_optimizer_step(run=self.run)
                done = self.step == s.max_steps
                if self.step % s.log_every == 0:
                    self._report()
                if self.step % s.eval_every == 0 or done:
                    self._report()
                    self.evaluate()
                    if p.is_main:  # the last evaluation is always drawn: the run's whole curve
                        self._plot_losses(final=done or self.run.stop_reason is not None)
                    self._window.start = time.perf_counter()  # evaluation is not training time
                self._agree_on_stop()  # after evaluation: its hooks may have asked for a stop
                stopping = self.run.stop_reason is not None
                if self.step % s.checkpoint_every == 0 or done or stopping:
                    self._report()  # never save weights trained on a loss nobody checked
                    self._save_or_say_why()
                    self._window.start = time.perf_counter()
                elif self._stop_signal:
                    # Not logged: a record off the log grid would not be in an uninterrupted
                    # run's log. save() checks the window's loss and keeps it in the checkpoint.
                    self._save_or_say_why()
                if self._stop_signal:
                    self.hooks.genloom_train_end(run=self.run, reason="signal")
                    raise TrainingInterrupted(self._stop_signal, self.last_checkpoint)
                if stopping:
                    log.warning("training stopped at step %d of %d by %s; checkpoint: %s",
                                self.step, s.max_steps, self.run.stop_reason, self.last_checkpoint)
                    break
            ended = "stopped" if self.run.stop_reason else "max_steps"
            self.hooks.genloom_train_end(run=self.run, reason=ended)
        return RunResult(self.step, self.last_checkpoint, self.last_metrics, self.run.stop_reason)

    def _train_step(self, batches: Iterator[dict[str, torch.Tensor]]) -> None:
        s = self.settings
        lr = s.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        for micro in range(s.grad_accum):
            batch = next(batches)
            with self._no_sync(micro < s.grad_accum - 1), self._autocast:
                loss = self.model(batch)["loss"]
            (loss / s.grad_accum).backward()
            self._window.loss_sum += loss.detach().float() / s.grad_accum
        if s.grad_clip > 0:
            norm = nn.utils.clip_grad_norm_(self.generator.parameters(), s.grad_clip)
            self._window.grad_norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._window.steps += 1
        self._window.lr = lr
        self._bar.update(1)

    def _agree_on_stop(self) -> None:
        """Under torchrun all ranks stop at the same step, whichever rank was asked.

        A signal may reach the ranks a step apart, and a stop request from a rank-0-only
        event (``genloom_evaluated``) reaches rank 0 alone.
        """
        if not self.placement.distributed:
            return
        asked = [self._stop_signal or 0, int(self.run.stop_reason is not None)]
        flags = torch.tensor(asked, dtype=torch.int64, device=self.placement.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        signum, stop = flags.tolist()
        self._stop_signal = signum or None
        if stop:  # once per run: every rank learns who asked and why, rank 0 to log it
            reasons: list[str | None] = [None] * self.placement.world_size
            dist.all_gather_object(reasons, self.run.stop_reason)
            rank, reason = next((r, why) for r, why in enumerate(reasons) if why is not None)
            self.run.stop_reason = f"{reason} (rank {rank})"

    def _window_loss(self) -> tuple[float, float]:
        """``(sum, mean)`` of the loss since the last report, over every rank's batches.

        Stops training if the mean is not finite.
        """
        window = self._window
        if window.steps == 0:
            return 0.0, 0.0
        loss_sum = window.loss_sum
        if self.placement.distributed:  # every rank's batches, as one process would log them
            loss_sum = loss_sum.clone()
            dist.all_reduce(loss_sum)
            loss_sum /= self.placement.world_size
        mean_loss = (loss_sum / window.steps).item()  # the one host sync per report
        if not math.isfinite(mean_loss):
            raise TrainingError(
                f"the loss became non-finite ({mean_loss}) between steps "
                f"{self.step - window.steps + 1} and {self.step}; training stopped without "
                f"saving. Last good checkpoint: {self.last_checkpoint or 'none yet'}. "
                "Try a lower trainer.lr, trainer.grad_clip=1.0, or trainer.precision=fp32."
            )
        return float(loss_sum), mean_loss

    def _report(self) -> None:
        """Log the steps since the last report; stop here if their loss is not finite."""
        window = self._window
        if window.steps == 0:
            return
        _, mean_loss = self._window_loss()
        s, p = self.settings, self.placement
        units = s.batch_size * s.grad_accum * p.world_size * self.units_per_example * window.steps
        metrics = {
            "loss": mean_loss, "lr": window.lr,
            "throughput": units / max(time.perf_counter() - window.start, 1e-9),
        }
        if window.grad_norm is not None:
            metrics["grad_norm"] = float(window.grad_norm)
        self.last_metrics.update(metrics)
        self._bar.set_postfix(loss=f"{mean_loss:.4f}", rate=f"{_si(metrics['throughput'])} {self.unit}/s")
        self._record("train", metrics)
        if p.is_main:
            self.hooks.genloom_train_step_end(step=self.step, metrics=dict(metrics), run=self.run)
        self._window = _LossWindow(window.loss_sum.zero_())

    def evaluate(self) -> dict[str, float]:
        """Score the validation split (``trainer.eval_batches`` of it) and report it.

        The scores join :attr:`last_metrics` prefixed ``val_`` and are recorded.
        """
        means = evaluate(
            self.generator, self.val_data, batch_size=self.settings.batch_size,
            max_batches=self.settings.eval_batches, placement=self.placement,
            precision=self.settings.precision,
        )
        self.last_metrics.update({f"val_{k}": v for k, v in means.items()})
        self._record("val", {k: v for k, v in self.last_metrics.items() if k.startswith("val_")})
        watched = self.settings.early_stopping
        if watched.patience is not None and watched.metric not in self.last_metrics:
            raise TrainingError(
                f"trainer.early_stopping.metric={watched.metric!r} is not a metric of this run; "
                f"after an evaluation it has: {', '.join(sorted(self.last_metrics))}. "
                "Choose one of them (validation metrics start with val_)"
            )
        if self.placement.is_main:
            log.info("step %d validation: %s", self.step, _fmt(means))
            self.hooks.genloom_evaluated(step=self.step, metrics=dict(means), run=self.run)
        return means

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0); every rank returns after it is in place.

        Sharded weights and optimizer state are first gathered to rank 0 (every rank takes
        part), so the checkpoint is the one a single process would write.
        """
        path = None
        gathered = {}
        extra_state: dict[str, Any] = {"step": self.step, "seed": self.seed}
        if self._window.steps:  # a stop between logs: the resumed run's next log covers these steps
            loss_sum, _ = self._window_loss()  # raises if not finite: such weights are not saved
            extra_state["window"] = {"loss_sum": loss_sum, "steps": self._window.steps,
                                     "seconds": time.perf_counter() - self._window.start}
        if self.sharded:
            gathered = {"weights": sharding.full_weights(self.generator),
                        "optimizer_state": sharding.full_optimizer_state(self.generator, self.optimizer)}
        if self.placement.is_main:
            path = checkpoint.save(
                self.checkpoints_dir,
                step=self.step,
                model=self.generator,
                config=self.config,
                plugins=self.plugin_versions,
                optimizer=self.optimizer,
                **gathered,
                extra_state=extra_state,
                keep=self.settings.keep_checkpoints,
                frozen=self.frozen,
                files=self.files,
                plugin_state=self.run.states,
            )
            self.last_checkpoint = path
            log.info("saved checkpoint %s", path)
            self.hooks.genloom_checkpoint_saved(step=self.step, path=path, run=self.run)
        if self.placement.distributed:
            torch.distributed.barrier()
        return path

    def _save_or_say_why(self) -> None:
        """Save; a save a signal asked for that fails still stops with the signal's status."""
        try:
            self.save()
        except checkpoint.CheckpointError as err:
            if self._stop_signal:
                raise TrainingInterrupted(self._stop_signal, None, error=str(err)) from err
            raise

    # -- helpers -----------------------------------------------------------------------

    def _train_batches(self, start: int) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches, starting after the first ``start`` micro-batches of the run.

        Loading draws nothing from the global random streams (the generator's: dropout,
        sampling noise): each example is loaded with its own seed (:class:`_RunBatches`).
        So the data, and the streams, continue exactly from any step a run resumes at.
        One DataLoader serves the whole run, so ``trainer.num_workers`` worker processes
        start once, not at every epoch (a small dataset's epoch is a few batches), and keep
        ``2 * num_workers`` batches in flight across epoch boundaries.
        """
        s, p = self.settings, self.placement
        loader = torch.utils.data.DataLoader(
            _RunBatches(self.train_data, s.batch_size, seed=self.seed, rank=p.rank, world_size=p.world_size),
            batch_size=None, sampler=_BatchKeys(start, self.batches_per_epoch), collate_fn=_as_is,
            num_workers=s.num_workers, pin_memory=p.device.type == "cuda",
            generator=torch.Generator().manual_seed(rng.derived_seed(self.seed, p.rank)),
        )
        for batch in loader:
            yield self._to_device(batch)

    def _to_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.placement.device, non_blocking=True) for k, v in batch.items()}

    def _no_sync(self, skip_sync: bool) -> contextlib.AbstractContextManager:
        # Under DDP (FSDP) only the last micro-batch of an accumulated step all-reduces
        # (reduce-scatters) gradients.
        if skip_sync and self.sharded:
            return self._fsdp_no_sync()
        if skip_sync and hasattr(self.model, "no_sync"):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def _record(self, split: str, values: Mapping[str, float]) -> None:
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps({"step": self.step, "split": split, **values}) + "\n")
            self._metrics_file.flush()

    def _plot_losses(self, *, final: bool) -> None:
        """Redraw ``loss.png`` when it is time (:class:`losscurve.LossPlot`); a failed plot only warns."""
        if self._loss_plot is None:
            self._loss_plot = losscurve.LossPlot(
                self.run_dir / "metrics.jsonl", self.run_dir / losscurve.FILE,
                title=losscurve.title_for(self.run_dir, pipeline.component_names(self.config)),
            )
        try:
            self._loss_plot.update(final=final)
        except Exception as err:  # noqa: BLE001 - a picture never costs the run
            log.warning("could not draw %s: %s", self.run_dir / losscurve.FILE, err)

    @contextlib.contextmanager
    def _fsdp_no_sync(self) -> Iterator[None]:
        sharding.gradient_sync(self.generator, False)
        try:
            yield
        finally:
            sharding.gradient_sync(self.generator, True)

    @contextlib.contextmanager
    def _signals_handled(self) -> Iterator[None]:
        """SIGINT/SIGTERM finish the current step, save, then stop; a second SIGINT aborts."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum
            log.warning("%s received: saving a checkpoint after this step", signal.Signals(signum).name)

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _implemented(hooks: Any, name: str, run: TrainingRun) -> bool:
    """Whether a plugin wants the event ``name`` in ``run`` (a caller without that query: assume so)."""
    implemented = getattr(hooks, "implemented", None)
    return implemented(name, run) if callable(implemented) else True


def resume_dir(settings: TrainerSettings, checkpoints_dir: Path) -> Path | None:
    """The step directory ``trainer.resume`` names (None: a fresh start)."""
    resume = settings.resume
    if resume is False or resume is None or resume == "false":
        return None
    if resume is True or resume == "true":
        step_dir = checkpoint.latest_in(checkpoints_dir)
        if step_dir is None:
            raise TrainingError(
                f"trainer.resume=true but {checkpoints_dir} holds no checkpoint; "
                "point hydra.run.dir at the run to continue, or pass trainer.resume=PATH"
            )
        return step_dir
    return checkpoint.resolve(resume)


@torch.no_grad()
def evaluate(
    generator: nn.Module,
    data: torch.utils.data.Dataset,
    *,
    batch_size: int,
    max_batches: int | None,
    placement: Placement,
    precision: str = "auto",
) -> dict[str, float]:
    """Average every metric ``generator.loss`` reports over the split, in a fixed order.

    A per-example average: each batch's means are weighted by its number of examples
    (``Generator.loss`` documents what that asks of a generator), so the result does not
    depend on ``batch_size``; ``max_batches`` scores only the first batches. A metric
    returned with a ``"<name>/weight"`` entry is weighted by that instead (bits per byte
    by each batch's bytes). Each rank scores its own shard; the sums of values and weights
    are added across ranks.
    """
    if batch_size < 1 or (max_batches is not None and max_batches < 1):
        raise ValueError(f"evaluation takes batch_size >= 1 and max_batches >= 1 or null, "
                         f"got {batch_size} and {max_batches}")
    was_training = generator.training
    generator.eval()
    # Rank r scores examples r, r + world, ...: the same shards as training, in order.
    per_rank = len(data) // placement.world_size
    indices = list(range(placement.rank, len(data), placement.world_size))[:per_rank]
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    codes: torch.Tensor | None = None  # CodeUsage: the split's code histogram
    with autocast(placement.device, precision):
        for index_batch in chunks[:max_batches] if max_batches else chunks:
            batch = {
                k: v.to(placement.device)
                for k, v in collate([data[i] for i in index_batch]).items()
            }
            scores = generator.loss(batch)
            for key, value in scores.items():
                if key.endswith(WEIGHT_SUFFIX):
                    continue
                weight = float(scores.get(key + WEIGHT_SUFFIX, len(index_batch)))
                totals[key] = totals.get(key, 0.0) + float(value) * weight
                weights[key] = weights.get(key, 0.0) + weight
            if isinstance(generator, CodeUsage):
                with torch.no_grad():
                    counts = generator.code_counts(batch).long()
                codes = counts if codes is None else codes + counts
    generator.train(was_training)
    means = all_reduce_weighted_mean(totals, weights, placement)
    if codes is not None:
        means.update(code_usage(codes, placement))
    return means


def code_usage(counts: torch.Tensor, placement: Placement) -> dict[str, float]:
    """``code_perplexity`` and ``dead_codes`` of a split's code histogram, summed across ranks.

    See :class:`genloom.interfaces.CodeUsage`: sums of counts, so independent of batch size.
    """
    if placement.distributed:
        counts = counts.clone()
        dist.all_reduce(counts)
    p = counts.double() / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"code_perplexity": float(entropy.exp()), "dead_codes": float((counts == 0).sum())}


class _BatchKeys:
    """The keys ``(epoch, k)`` of a run's batches, from batch number ``start`` on, endless."""

    def __init__(self, start: int, batches_per_epoch: int) -> None:
        self.start, self.batches_per_epoch = start, batches_per_epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for n in itertools.count(self.start):
            yield divmod(n, self.batches_per_epoch)


class _RunBatches(torch.utils.data.Dataset):
    """Item ``(epoch, k)`` is batch ``k`` of epoch ``epoch`` (:func:`epoch_batches`), collated.

    Example ``i`` is loaded with the CPU random streams seeded from ``(seed, epoch, i)``,
    and in the main process the training's streams are put back afterwards: a dataset
    that augments at random draws the same for an example in the main process or in any
    worker, on any rank, resumed or not.
    """

    def __init__(self, data: torch.utils.data.Dataset, batch_size: int, *, seed: int, rank: int,
                 world_size: int) -> None:
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._epoch: tuple[int, list[list[int]]] | None = None  # the last epoch's index batches

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, k = key
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_batches(len(self.data), self.batch_size, seed=self.seed, epoch=epoch,
                                                rank=self.rank, world_size=self.world_size))
        examples = []
        in_worker = torch.utils.data.get_worker_info() is not None  # its streams are its own
        with contextlib.nullcontext() if in_worker else rng.cpu_streams_kept():
            for i in self._epoch[1][k]:
                rng.seed_cpu_streams(rng.derived_seed(self.seed, epoch, i))
                examples.append(self.data[i])
        return collate(examples)


def _as_is(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch  # _RunBatches has collated it already


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the records of steps up to ``step`` (the checkpoint a run starts from).

    Records past it were written by a run that stopped before its next checkpoint; the
    resumed run writes them again. A torn last line is dropped too. Rewritten atomically.
    """
    if not path.exists():
        return
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            keep = int(json.loads(line)["step"]) <= step
        except (ValueError, TypeError, KeyError):
            keep = False
        if keep:
            kept.append(line + "\n")
        else:
            dropped += 1
    if not dropped:
        return
    checkpoint.write_atomic(path, "".join(kept))
    log.info("%s: dropped %d record(s) after step %d, where this run starts (left by a run that "
             "stopped later or by an earlier run in this directory)", path, dropped, step)


def collate(examples: list[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([ex[key] for ex in examples]) for key in examples[0]}


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.1f}"


def _fmt(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
