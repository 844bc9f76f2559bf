"""The hooks a genloom plugin may implement: the plugin author's manual.

A plugin is a module (or object) named by an entry point in the ``genloom`` group::

    [project.entry-points.genloom]
    text = "genloom_text.plugin"

Its functions are marked with :data:`hookimpl` and named after the specifications below.
Implement only the hooks you need. The module named by the entry point is imported by
``genloom plugins``, so it must stay light: no ``import torch`` at its top level, no model
code. Components are registered by import path and imported only when first built.

Registration hooks hand you a ``register`` callback; call it once per thing you add.
Runtime events are called on every plugin that implements them, after the event has
happened. Each says whether it runs on every rank under ``torchrun`` or on rank 0 only.
The training events receive ``run``, a :class:`genloom.trainer.TrainingRun`: the step,
the latest metrics, the generator, the optimizer, the run directory, the device, the rank
and the run's composed config (``run.config``: a logger's own settings live there, in a
config group its plugin ships). Through it a hook may act, not only observe:

* ``run.request_stop("why")`` ends training cleanly after this step: the trainer saves a
  checkpoint and logs which plugin asked and why (under ``torchrun`` every rank stops at
  the same step, whichever rank asked);
* ``run.state`` is your plugin's own dict, saved in every checkpoint and given back on
  resume before ``genloom_train_start``: tensors go to ``trainer.safetensors``, other
  values (numbers, text, lists, dicts of them) to ``trainer.json``. No pickle. Keep it
  small, and the same on every rank: the checkpoint keeps rank 0's;
* ``run.decline("genloom_optimizer_step")``, in ``genloom_train_start``: your plugin is not
  called for that event again in this run (a feature your config turned off); when no
  plugin wants the per-step event, the trainer does not call it at all;
* ``run.draw_samples(n)`` draws ``n`` samples from the generator as it is now and has the
  pipeline's decoder write them (under ``<run_dir>/samples/step_<step>``), for a logger
  to show; it leaves the training's random streams as they were.

Accept only the arguments you use: ``def genloom_evaluated(run)`` is a valid
implementation of ``genloom_evaluated(step, metrics, run)``. A name or an argument that
no specification has is an error (:class:`genloom.testing.PluginContract` checks it).

If your hook module or a registration hook raises anything, ``sys.exit()`` included, your
plugin is quarantined: it is left out, with its error in ``genloom plugins``, and every
command goes on without it. A runtime event hook that raises quarantines it for the rest
of that run. Log through :mod:`logging`; do not print (``genloom plugins --json`` sends a
plugin's stdout to stderr to keep its output JSON).

Names are shared by every installed plugin. A component name (per kind) or a config option
(``pipeline/text_debug.yaml``) that two plugins provide belongs to **neither**, whichever
is found first: building that component, or composing a config that chooses that option,
fails with a message naming both plugins and how to disable one
(``GENLOOM_DISABLE_PLUGINS=<distribution>``). Everything else both plugins register keeps
working. So prefix names that might be common (``sketches_unet``, not ``unet``).

Declare the genloom versions your plugin supports as its distribution's requirement,
``dependencies = ["genloom>=0.1,<0.2"]``: outside that range it is quarantined with a
message naming both versions. Check your components with the contract kit,
:class:`genloom.testing.PluginContract`, and your installation with
``genloom plugins --check``. ``genloom new-plugin NAME`` writes a plugin that passes both.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # annotation only: this module must import without torch
    from genloom.trainer import TrainingRun

PROJECT = "genloom"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def genloom_register_components(register: Callable[..., None]) -> None:
    """Add components to the registry.

    Call ``register(kind, name, target, summary="")`` for each component:

    * ``kind``: ``"encoder"``, ``"decoder"``, ``"generator"`` or ``"dataset"``;
    * ``name``: what configs select it by (``generator: {name: transformer}``). It must be
      unique per kind across all installed plugins: a name another plugin registers too
      belongs to neither of you (see the top of this reference);
    * ``target``: ``"package.module:factory"``, a class or function that takes the
      component's config keys as keyword arguments. It is imported only when built;
    * ``summary``: one line shown by ``genloom plugins``.

    Example::

        @hookimpl
        def genloom_register_components(register):
            register("generator", "transformer", "genloom_text.model:Transformer",
                     summary="decoder-only Transformer over token ids")
    """


@hookspec
def genloom_register_config(register: Callable[[str], None]) -> None:
    """Contribute Hydra config groups that live inside your package.

    Call ``register("your_package.conf")`` with an importable package (a folder with an
    ``__init__.py``) whose sub-folders are config groups: ``generator/``, ``dataset/``,
    ``encoder/``, ``decoder/``, ``pipeline/``... Each YAML file in them becomes a choice
    (``generator=transformer``). A preset in ``pipeline/`` selects a whole composition.
    An option another plugin ships too (same group, same file name) cannot be composed:
    choosing it fails with a message naming both plugins.
    """


@hookspec
def genloom_train_start(run: TrainingRun) -> None:
    """Before the first step of this process, fresh or resumed; on **every rank**.

    ``run.step`` is where training starts (0, or the resumed checkpoint's step) and
    ``run.state`` holds what your plugin saved in that checkpoint. Build what your plugin
    keeps beside the model here (an EMA copy of the weights, a logger's run), or
    ``run.decline`` the events this run does not need of it.
    """


@hookspec
def genloom_optimizer_step(run: TrainingRun) -> None:
    """After every optimizer step, on **every rank**, before the step's metrics are logged.

    The one per-step event: keep it cheap (no host sync, no file I/O). ``run.step`` is
    the number of steps done. An EMA of the weights updates here, on every rank, so that
    sharded (FSDP) and replicated (DDP) runs hold consistent averages.
    """


@hookspec
def genloom_train_step_end(step: int, metrics: Mapping[str, float], run: TrainingRun) -> None:
    """After an optimizer step whose metrics were logged (every ``trainer.log_every`` steps); rank 0 only.

    ``metrics`` holds ``loss``, ``lr``, ``throughput`` (units per second) and
    ``grad_norm`` among others. A logger writes them here.
    """


@hookspec
def genloom_evaluated(step: int, metrics: Mapping[str, float], run: TrainingRun) -> None:
    """After an evaluation on the validation split; rank 0 only.

    ``metrics`` are split averages, named as ``generator.loss`` names them (``loss``...);
    ``run.metrics`` holds them prefixed ``val_`` beside the latest training metrics.
    Early stopping decides here (``run.request_stop``); a logger may draw samples here
    (``run.draw_samples``).
    """


@hookspec
def genloom_checkpoint_saved(step: int, path: Path, run: TrainingRun) -> None:
    """After a checkpoint directory was completely written and renamed into place; rank 0 only.

    ``run.state`` as this checkpoint holds it was collected before the save, on every rank.
    """


@hookspec
def genloom_train_end(run: TrainingRun, reason: str) -> None:
    """Training ended without an error; on **every rank**.

    ``reason`` is ``"max_steps"``, ``"stopped"`` (a plugin asked: ``run.stop_reason`` says
    who and why) or ``"signal"`` (SIGINT/SIGTERM; a checkpoint was saved). Close files and
    connections here. Not called when training fails.
    """


@hookspec
def genloom_sample_written(path: Path, media_type: str, info: Mapping[str, Any]) -> None:
    """After the sampler wrote one file of output (a sample or a gallery)."""


def reference() -> str:
    """The hook reference (``genloom hooks``), written from this module's docstrings."""
    module = sys.modules[__name__]
    parts = ["# genloom hook reference", "", inspect.getdoc(module) or "", ""]
    specs = [f for _, f in inspect.getmembers(module, inspect.isfunction) if hasattr(f, f"{PROJECT}_spec")]
    for function in sorted(specs, key=lambda f: f.__code__.co_firstlineno):
        name = function.__name__
        signature = str(inspect.signature(function)).replace("'", "")
        parts += [f"## {name}{signature}", "", inspect.getdoc(function) or "", ""]
    return "\n".join(parts)
