"""An exponential moving average of the weights (``trainer.ema``), on the training events like any plugin's.

After every optimizer step, on every rank, each averaged tensor moves towards the weights::

    ema <- ema + (1 - d) * (w - ema)        d = min(decay, (1 + n) / (10 + n))  with warmup

where ``n`` counts the updates so far: with ``warmup`` the first updates weigh the new
weights heavily (after 10 updates d = 0.55, after 1000 about 0.99), so that an average
taken early is not mostly the random initialisation, as timm's ``ModelEmaV3`` and
TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` do. Until ``start_step`` the
average is a plain copy of the weights.

What is averaged: every trainable parameter and every floating buffer (BatchNorm's running
mean and variance: their average belongs with the averaged weights, as in timm), each once
(tied weights under their first name), in float32 on the weights' device, updated by one
fused ``torch._foreach_lerp_`` over all of them. Integer buffers (``num_batches_tracked``)
and frozen parameters do not change by averaging: a checkpoint's raw ones are used.

The averages live in ``run.state`` under ``ema/<state dict name>``, so every checkpoint
keeps them in ``trainer.safetensors`` and resume gives them back bit for bit; loading a
checkpoint for ``sample``, ``eval``, ``serve`` and ``export`` puts them into the generator
(:func:`genloom.checkpoint.load_generator_weights`). With ``trainer.ema.decay`` null the
plugin declines the per-step event: an EMA that is off costs no call at all.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import torch
from torch import nn

from genloom.checkpoint import EMA_PREFIX, partial_keys

log = logging.getLogger(__name__)

UPDATES = "ema_updates"  # run.state: averaging updates so far (the warm-up's n)
STEP_EVENT = "genloom_optimizer_step"


def averaged_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """What an EMA of ``model`` averages, by state dict name: trainable parameters and floating buffers.

    Each tensor once (tied weights under their first name); for a
    :class:`~genloom.interfaces.PartialCheckpoint`, only the entries its checkpoints hold.
    """
    keys = partial_keys(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    seen: set[int] = set()
    chosen: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen or (keys is not None and name not in keys):
            continue
        seen.add(id(tensor))
        buffer = not isinstance(tensor, nn.Parameter) and tensor.is_floating_point()
        if id(tensor) in trainable or buffer:
            chosen[name] = tensor.detach()
    return chosen


class Average:
    """The EMA of one run: its float32 tensors (``run.state``'s own) and the weights they follow."""

    def __init__(self, run: Any, weights: dict[str, torch.Tensor]) -> None:
        self.settings = run.settings.ema
        self.state = run.state
        self.weights = list(weights.values())
        self.averages = [self.state[EMA_PREFIX + name] for name in weights]
        self.cast = any(w.dtype != torch.float32 for w in self.weights)  # a model kept in bf16

    @torch.no_grad()
    def update(self, step: int) -> None:
        weights = [w.float() for w in self.weights] if self.cast else self.weights
        if step <= self.settings.start_step:
            torch._foreach_copy_(self.averages, weights)
            return
        n = int(self.state.get(UPDATES, 0))
        decay = self.settings.decay
        if self.settings.warmup:
            decay = min(decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(self.averages, weights, 1.0 - decay)
        self.state[UPDATES] = n + 1


_averages: weakref.WeakKeyDictionary[Any, Average] = weakref.WeakKeyDictionary()  # run -> its EMA


def on_train_start(run: Any) -> None:
    """Start the average from the weights, or go on from the one the resumed checkpoint kept."""
    settings, state = run.settings.ema, run.state
    kept = [key for key in state if key.startswith(EMA_PREFIX)]
    if settings.decay is None:
        if kept:
            log.warning("trainer.ema.decay is null: the EMA of the weights the resumed checkpoint holds "
                        "is dropped; this run's checkpoints hold the raw weights only")
        for key in [*kept, UPDATES]:
            state.pop(key, None)
        run.decline(STEP_EVENT)
        return
    weights = averaged_tensors(run.generator)
    restored = {key[len(EMA_PREFIX):]: state[key] for key in kept}
    fits = restored.keys() == weights.keys() and all(
        restored[name].shape == w.shape for name, w in weights.items())
    if restored and not fits:
        log.warning("the EMA in the resumed checkpoint does not match the generator's tensors; "
                    "it starts again from the weights")
    if not restored or not fits:
        for key in [*kept, UPDATES]:
            state.pop(key, None)
        for name, w in weights.items():
            state[EMA_PREFIX + name] = w.to(torch.float32, copy=True)
    _averages[run] = Average(run, weights)
    count = sum(w.numel() for w in weights.values())
    log.info("EMA of the weights: %d tensors (%s values), decay %g%s%s%s", len(weights), f"{count:,}",
             settings.decay, ", warm-up" if settings.warmup else "",
             f", from step {settings.start_step}" if settings.start_step else "",
             f", resumed after {state.get(UPDATES, 0)} updates" if restored and fits else "")


def on_optimizer_step(run: Any) -> None:
    """Move the average towards the weights of this step (every rank: each holds a full replica)."""
    _averages[run].update(run.step)
