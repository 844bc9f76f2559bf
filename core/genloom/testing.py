"""The plugin contract kit: the rules every plugin's components must keep, as pytest tests.

A plugin author points the kit at the plugin's hook module and at the small pipeline
presets that exercise its components, in any test file of the plugin::

    from genloom.testing import PluginContract

    class TestContract(PluginContract):
        plugin = "genloom_text.plugin"   # the module your entry point names
        pipelines = ["text_debug"]       # tiny presets that together use every component

pytest then runs one test per rule and pipeline. The rules:

``light_hook_module``
    the hook module imports without importing torch (``genloom plugins`` stays fast).
``hooks``
    every hook implementation in the hook module is named after a specification of
    :mod:`genloom.hookspecs` and takes only arguments that specification has (pluggy's
    validation): a misspelt ``genloom_evaluted`` would otherwise never be called.
``coverage``
    every component the plugin registers is used by one of ``pipelines`` (or waived in
    ``not_covered`` with a reason), so that every component is checked.
``configs_compose``
    every option of every config group the plugins ship composes with Hydra (presets the
    test does not list included), a component's config keys (in its own option or set by
    a preset) are all accepted by its factory, and a trainer option's keys are trainer
    settings. A component option joins one of ``pipelines`` (the first it composes and
    checks with: a preset's keys for its own generator need not suit another generator
    option). A preset that needs another plugin's option says which to ``also_load``.
``builds``
    each pipeline builds from its preset, every component satisfying its protocol.
``loss``
    ``generator.loss`` on a batch of real examples returns ``"loss"`` and metrics that are
    finite scalars.
``gradients``
    every trainable parameter receives a finite gradient within a few batches.
``sample_spec``
    ``generate`` returns ``n`` examples of the declared ``sample_spec`` shape and dtype.
``seeded``
    the same seed gives the same samples.
``rng_device``
    every draw ``generate`` makes with its ``rng`` happens on ``rng.device`` (the model's
    device: the sampler makes the rng there). On a machine with CUDA or MPS the generator
    and rng really run there. On a CPU alone the kit cannot make a CUDA rng, so it
    watches every torch call ``generate`` makes with ``generator=rng`` and reports a draw
    that would run on the CPU beside an accelerator rng: one that creates its tensor
    without ``device=`` (or with ``device="cpu"``), or one that reads a tensor moved to
    the CPU (``.cpu()``, ``.to("cpu")``) or made without ``device=``.
``value_range``
    when the decoder declares ``input_range`` (:class:`genloom.interfaces.BoundedDecoder`; a
    frozen code decoder declares ``(0, K - 1)``, its codebook),
    every generated value lies in it: the decoder would silently clamp the rest.
``evaluation``
    scoring the validation split twice, with the global random state changed in
    between, gives the same metrics (``genloom eval`` and the trainer's evaluations are
    comparable across runs).
``round_trip``
    after a checkpoint save and load into a freshly built pipeline, the same seed gives
    the same samples and the same batch the same loss.
``decoder``
    the decoder turns a sample into its declared ``media_type`` and writes files.

The checks are also plain functions (``check_loss(built, batch)``...) that raise
:class:`ContractViolation`, for use outside pytest. Requires pytest to run as tests.

One more check trains, so it is not a rule run for every preset: :func:`check_resume`
stops a run with SIGINT mid-way, resumes it and requires every logged loss to equal the
uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import math
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pluggy
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch.overrides import TorchFunctionMode

from genloom import checkpoint, doctor, fitting, frozen, hookimpl, hookspecs, pipeline, plugins
from genloom.distributed import Placement
from genloom.interfaces import kind_protocol
from genloom.pipeline import Pipeline
from genloom.plugins import PluginSet, PluginSource, entry_point_sources, load_plugins
from genloom.registry import RegistryError, check_options
from genloom.trainer import TrainerSettings, collate, evaluate

COMPONENT_GROUPS = {**{k: k for k in pipeline.COMPONENTS}, "condition_encoder": "encoder"}
GRADIENT_BATCHES = 4  # batches over which every parameter must have received a gradient
EVAL_BATCHES = 2  # validation batches the evaluation rule scores twice


class ContractViolation(AssertionError):
    """A component broke a rule of the plugin contract."""

    def __init__(self, rule: str, where: str, why: str) -> None:
        super().__init__(f"contract rule {rule!r} broken by {where}: {why}")
        self.rule, self.where, self.why = rule, where, why


# ---------------------------------------------------------------------------- loading


def load_only(modules: Sequence[str] | Mapping[str, str]) -> PluginSet:
    """These plugin modules alone, loaded as genloom loads any plugin, whatever is installed.

    ``modules`` names each plugin (``{"image": "genloom_image.plugin"}``, as its entry point
    would), or lists modules, each then named by its package.
    """
    named = modules if isinstance(modules, Mapping) else {m.split(".")[0]: m for m in modules}
    sources = [
        PluginSource(name=name, load=lambda m=m: importlib.import_module(m), module=m)
        for name, m in named.items()
    ]
    return load_plugins(sources, strict=True, disabled=())


@contextlib.contextmanager
def only_plugins(modules: Sequence[str] | Mapping[str, str]) -> Iterator[PluginSet]:
    """:func:`load_only` these modules and make them the process's plugins while the block runs.

    For tests that run the CLI in-process: Hydra's global state is cleared afterwards, so the
    next test composes with its own plugins.
    """
    from hydra.core.global_hydra import GlobalHydra

    with active_plugins(load_only(modules)) as plugin_set:
        try:
            yield plugin_set
        finally:
            GlobalHydra.instance().clear()


@contextlib.contextmanager
def active_plugins(plugin_set: PluginSet) -> Iterator[PluginSet]:
    """Make ``plugin_set`` the process's plugins (what Hydra's search path and jobs see)."""
    previous = plugins._active
    plugins.set_active(plugin_set)
    try:
        yield plugin_set
    finally:
        plugins.set_active(previous)


def compose(plugin_set: PluginSet, overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """Compose a genloom config with Hydra, as ``genloom train OVERRIDES --cfg job`` would."""
    return doctor.compose(plugin_set, overrides, config_name)


def compose_preset(plugin_set: PluginSet, name: str, overrides: Sequence[str] = (),
                   rule: str = "builds") -> DictConfig:
    """Compose ``pipeline=name``; a failure is a violation that says what is missing."""
    try:
        return compose(plugin_set, [f"pipeline={name}", *overrides])
    except Exception as err:  # Hydra's errors differ by cause
        raise ContractViolation(rule, f"pipeline {name!r}", composition_problem(plugin_set, err)) from err


def composition_problem(plugin_set: PluginSet, error: BaseException) -> str:
    """Why a config did not compose; for an option no loaded plugin ships, who ships it."""
    missing = doctor.missing_option(error)
    if missing is None:
        return f"it does not compose: {doctor.compose_error(error)}"
    group, option = missing
    loaded = [p.module for p in plugin_set.plugins if p.status == "ok"]
    elsewhere = [s for s in entry_point_sources() if s.module not in loaded]
    shipping = doctor.providers(group, option, elsewhere)
    if shipping:
        info = shipping[0]
        dist = info.distribution or info.name
        hint = (f"plugin {info.name!r} ({dist}) ships it: add also_load = [{info.module!r}] to the "
                f"contract test and {dist!r} to the dependencies in pyproject.toml")
    else:
        hint = ("if another plugin ships it, name its hook module in also_load = ['pkg.plugin'] "
                "and declare its distribution as a dependency in pyproject.toml")
    return f"it needs {group}={option}, which none of the loaded plugins ({', '.join(loaded)}) ships; {hint}"


@dataclass
class Built:
    """A pipeline built from a preset, with what the checks need around it."""

    name: str
    config: DictConfig
    pipeline: Pipeline
    train: torch.utils.data.Dataset
    sample_options: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()  # what the preset was built with; a rebuild uses them too

    @property
    def where(self) -> str:
        names = pipeline.component_names(self.config)
        return f"generator {names['generator']!r} in pipeline {self.name!r}"

    def batch(self, index: int = 0, size: int = 4) -> dict[str, torch.Tensor]:
        """Batch ``index`` of ``size`` consecutive training examples."""
        count = len(self.train)
        if count == 0:
            raise ContractViolation("builds", f"pipeline {self.name!r}", "the train split is empty")
        start = index * size
        return collate([self.train[(start + i) % count] for i in range(size)])

    def condition(self) -> torch.Tensor | None:
        """The condition of the first training example, as the sampler would pass one."""
        example = self.train[0]
        return example.get("condition")


def build(plugin_set: PluginSet, name: str, overrides: Sequence[str] = (), seed: int = 0) -> Built:
    """Build the pipeline preset ``name`` (plus overrides) and its training split."""
    config = compose_preset(plugin_set, name, overrides)
    torch.manual_seed(seed)
    try:
        built = pipeline.build(config, plugin_set.registry)
        fitting.fit(built)
        train = built.dataset.split("train", built.encoder, built.condition_encoder)
    except Exception as err:
        raise ContractViolation("builds", f"pipeline {name!r}", f"{type(err).__name__}: {err}") from err
    return Built(name, config, built, train, overrides=tuple(overrides))


# ---------------------------------------------------------------------------- the rules


def check_light_hook_module(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # as this process
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise ContractViolation("light_hook_module", module, f"it does not import:\n{result.stderr}")
    if result.stdout.strip() != "False":
        raise ContractViolation(
            "light_hook_module", module,
            "importing it imports torch; register components by import path "
            "('pkg.model:Class') so that `genloom plugins` does not load model code",
        )


def check_hooks(module: str) -> None:
    """Rule ``hooks``: the module's hook implementations match :mod:`genloom.hookspecs`.

    pluggy checks the arguments when a plugin is registered, and ``check_pending`` finds
    a ``@hookimpl`` whose name no specification has.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    try:
        manager.register(importlib.import_module(module), name=module)
        manager.check_pending()
    except pluggy.PluginValidationError as err:
        raise ContractViolation(
            "hooks", module, f"{'; '.join(str(err).splitlines())}; `genloom hooks` lists every hook "
            "and its arguments"
        ) from None


def check_coverage(plugin_set: PluginSet, configs: Mapping[str, DictConfig],
                   not_covered: Mapping[str, str]) -> None:
    used = {
        (COMPONENT_GROUPS[key], str(cfg[key]["name"]))
        for cfg in configs.values()
        for key in COMPONENT_GROUPS
        if cfg.get(key) is not None
    }
    registered = {(kind, name) for p in plugin_set.plugins for kind, names in p.components.items()
                  for name in names}
    missing = sorted(
        f"{kind}:{name}" for kind, name in registered - used if f"{kind}:{name}" not in not_covered
    )
    if missing:
        raise ContractViolation(
            "coverage", f"pipelines {sorted(configs)}",
            f"no pipeline uses {', '.join(missing)}; add a small preset that does, or list it in "
            "not_covered = {'kind:name': 'why, and where it is tested'}",
        )


def check_configs_compose(plugin_set: PluginSet, base_pipeline: str | Sequence[str],
                          modules: Sequence[str] | None = None) -> None:
    """Every option of the plugins whose hook modules are ``modules`` (default: all loaded).

    A component option joins a base preset; with several, ``base_pipeline`` in order, it
    passes on the first it composes and checks with. A preset sets keys for the component
    it chose (a VAE's ``generator.condition``), which another generator option of the same
    plugin need not take; the contract's other presets give that option a base of its kind.
    The first base's violation is reported when none passes.
    """
    bases = [base_pipeline] if isinstance(base_pipeline, str) else list(base_pipeline)
    with doctor.composing(plugin_set) as compose_with:
        for info in plugin_set.plugins:
            if modules is not None and info.module not in modules:
                continue  # an also_load plugin: its own contract test checks its options
            for group, options in info.config_groups.items():
                for option in options:
                    first: ContractViolation | None = None
                    for base in bases if group != "pipeline" else bases[:1]:
                        try:
                            _check_option(plugin_set, base, group, option, info.name, compose_with)
                            break
                        except ContractViolation as violation:
                            first = first or violation
                    else:
                        assert first is not None
                        raise first


def _check_option(plugin_set: PluginSet, base_pipeline: str, group: str, option: str, plugin: str,
                  compose_with: Any) -> None:
    where = f"config {group}/{option}.yaml of plugin {plugin!r}"
    try:
        cfg = doctor.compose_option(plugin_set, group, option, base_pipeline, compose_with)
    except Exception as err:  # Hydra's errors differ by cause
        attempt = " ".join(doctor.option_overrides(group, option, base_pipeline)[0])
        raise ContractViolation("configs_compose", where,
                                f"`{attempt}`: {composition_problem(plugin_set, err)}") from err
    # A mandatory value (`???`, e.g. a two-stage preset's encoder.checkpoint) is the user's to give
    # on the command line; the keys around it are still checked.
    unresolved = OmegaConf.to_container(cfg, resolve=False)
    for key in _mandatory_keys(unresolved, ""):
        OmegaConf.update(cfg, key, "<given on the command line>")
    # So is a size read from that stage 1 (${frozen:encoder.codebook_size}): any number stands in.
    for key in frozen.size_keys(unresolved):
        OmegaConf.update(cfg, key, 1)
    # A preset may set any component's keys and the trainer's; an option, its own.
    nodes = [*COMPONENT_GROUPS, "trainer"] if group == "pipeline" else [group]
    for node in nodes:
        if cfg.get(node) is not None and (node in COMPONENT_GROUPS or node == "trainer"):
            _check_node(plugin_set, cfg, node, where)


def _mandatory_keys(node: Any, key: str) -> list[str]:
    """The dotted keys whose value is ``???`` (read without resolving interpolations)."""
    if isinstance(node, dict):
        return [found for k, value in node.items()
                for found in _mandatory_keys(value, f"{key}.{k}" if key else str(k))]
    return [key] if node == "???" else []


def _check_node(plugin_set: PluginSet, cfg: DictConfig, node: str, where: str) -> None:
    """The keys under ``cfg[node]`` are what its component's factory (or the trainer) takes."""
    try:
        spec = OmegaConf.to_container(cfg[node], resolve=True)
    except Exception as err:  # an interpolation to a key that is not there
        raise ContractViolation("configs_compose", where, f"{node}: {err}") from err
    if not isinstance(spec, dict):
        raise ContractViolation("configs_compose", where, f"{node} must be a mapping, got {spec!r}")
    if node == "trainer":
        try:
            check_options(TrainerSettings, spec, where="the trainer", prefix="trainer.")
            TrainerSettings(**spec)
        except (RegistryError, ValueError, TypeError) as err:
            raise ContractViolation("configs_compose", where, str(err)) from err
        return
    name = spec.pop("name", None)
    try:
        factory = plugin_set.registry.factory(COMPONENT_GROUPS[node], str(name))
        check_options(factory, spec, where=f"{node} {name!r}", prefix=f"{node}.")
    except RegistryError as err:
        raise ContractViolation("configs_compose", where, str(err)) from err


def check_builds(built: Built) -> None:
    """Every component of the built pipeline satisfies its kind's protocol."""
    for key, kind in COMPONENT_GROUPS.items():
        component = getattr(built.pipeline, key)
        if component is None:
            continue
        protocol = kind_protocol(kind)
        if not isinstance(component, protocol):
            raise ContractViolation("builds", f"{key} {type(component).__name__} in pipeline {built.name!r}",
                                    f"it is not a {protocol.__name__}")


def check_loss(built: Built, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    generator = built.pipeline.generator
    out = generator.loss(batch)
    if not isinstance(out, Mapping) or "loss" not in out:
        raise ContractViolation("loss", built.where,
                                f"loss() must return a dict with a 'loss' entry, got {type(out).__name__}")
    for key, value in out.items():
        if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.is_floating_point():
            raise ContractViolation("loss", built.where,
                                    f"{key!r} is not a floating-point scalar tensor: {value!r}")
        if not torch.isfinite(value):
            raise ContractViolation("loss", built.where,
                                    f"{key!r} is {value.item()} on a batch of real examples")
    if not out["loss"].requires_grad:
        raise ContractViolation("loss", built.where, "'loss' does not require grad: nothing would train")
    return dict(out)


def check_gradients(built: Built, batches: int = GRADIENT_BATCHES) -> None:
    generator = built.pipeline.generator
    generator.train()
    generator.zero_grad(set_to_none=True)
    for index in range(batches):
        check_loss(built, built.batch(index))["loss"].backward()
    params = [(n, p) for n, p in generator.named_parameters() if p.requires_grad]
    if not params:
        raise ContractViolation("gradients", built.where, "it has no trainable parameters")
    missing = [n for n, p in params if p.grad is None]
    if missing:
        raise ContractViolation(
            "gradients", built.where,
            f"{len(missing)} trainable parameters got no gradient in {batches} batches: "
            f"{', '.join(missing[:8])}; use them in the loss or set requires_grad=False",
        )
    broken = [n for n, p in params if not torch.isfinite(p.grad).all()]
    if broken:
        raise ContractViolation("gradients", built.where, f"non-finite gradients in {', '.join(broken[:8])}")


def generate(built: Built, n: int, seed: int) -> list[torch.Tensor]:
    """``n`` samples under the first training example's condition, as a list of examples."""
    generator = built.pipeline.generator
    generator.eval()
    rng = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        out = generator.generate(n, condition=built.condition(), rng=rng, **built.sample_options)
    return list(out)


def check_sample_spec(built: Built, n: int = 2) -> list[torch.Tensor]:
    spec = getattr(built.pipeline.generator, "sample_spec", None)
    from genloom.interfaces import SampleSpec

    if not isinstance(spec, SampleSpec):
        raise ContractViolation("sample_spec", built.where,
                                "it declares no sample_spec = genloom.interfaces.SampleSpec(shape, dtype)")
    samples = generate(built, n, seed=0)
    if len(samples) != n:
        raise ContractViolation("sample_spec", built.where, f"generate({n}) returned {len(samples)} examples")
    for i, sample in enumerate(samples):
        if not isinstance(sample, torch.Tensor) or not spec.matches(sample):
            got = (f"{tuple(sample.shape)} {str(sample.dtype).removeprefix('torch.')}"
                   if isinstance(sample, torch.Tensor) else type(sample).__name__)
            raise ContractViolation("sample_spec", built.where,
                                    f"example {i} is {got}; sample_spec declares {spec.describe()}")
        if sample.is_floating_point() and not torch.isfinite(sample).all():
            raise ContractViolation("sample_spec", built.where, f"example {i} holds non-finite values")
    return samples


def check_seeded(built: Built) -> None:
    first, second = generate(built, 2, seed=1234), generate(built, 2, seed=1234)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        if a.shape != b.shape or not torch.equal(a, b):
            raise ContractViolation("seeded", built.where,
                                    f"example {i} differs between two calls with the same seed; "
                                    "draw all randomness from the rng argument")


def check_rng_device(built: Built) -> None:
    """Every draw with ``rng`` happens on ``rng.device``; really so where an accelerator exists."""
    generator = built.pipeline.generator
    generator.eval()
    rng = torch.Generator().manual_seed(0)
    audit = _RngDeviceAudit(rng)
    with torch.inference_mode(), audit:
        generator.generate(2, condition=built.condition(), rng=rng, **built.sample_options)
    if audit.problems:
        raise ContractViolation("rng_device", built.where, audit.problems[0])
    device = _accelerator()
    if device is None:
        return
    moved = copy.deepcopy(generator).to(device)
    condition = built.condition()
    try:
        with torch.inference_mode():
            moved.generate(2, condition=None if condition is None else condition.to(device),
                           rng=torch.Generator(device=device).manual_seed(0), **built.sample_options)
    except Exception as err:  # what a user on that device would meet
        raise ContractViolation("rng_device", built.where,
                                f"generate() with the model and rng on {device} fails: "
                                f"{type(err).__name__}: {err}") from err


def _accelerator() -> torch.device | None:
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return None


OFF_DEVICE = "_genloom_on_the_cpu"  # marks a tensor that would be on the CPU beside an accelerator


class _RngDeviceAudit(TorchFunctionMode):
    """Watches torch calls as if the model and ``rng`` lived on an accelerator.

    A tensor is marked *off device* when it is moved to the CPU by name (``.cpu()``,
    ``.to("cpu")``) or made by a factory without ``device=``; what is computed from marked
    tensors alone is marked too, and ``.to(device)`` clears the mark. A draw with
    ``generator=rng`` that creates its tensor off device, or reads a marked tensor, would
    fail on CUDA ("Expected a 'cuda' device type for generator"): it is recorded.
    """

    def __init__(self, rng: torch.Generator) -> None:
        super().__init__()
        self.rng = rng
        self.problems: list[str] = []

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:
        kwargs = dict(kwargs or {})
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        name = getattr(func, "__name__", str(func))
        if kwargs.get("generator") is self.rng:
            if not tensors and _device_is_cpu(kwargs.get("device")):
                self.problems.append(
                    f"torch.{name}(..., generator=rng) without device= draws on the CPU, but rng is on "
                    "the model's device (the sampler's is on CUDA when the model is): pass "
                    "device=rng.device")
            elif tensors and getattr(tensors[0], OFF_DEVICE, False):
                self.problems.append(
                    f"{name}(..., generator=rng) reads a tensor on the CPU (moved with .cpu() or made "
                    "without device=), but rng is on the model's device (CUDA when the model is): "
                    "keep the tensor on rng.device")
        result = func(*args, **kwargs)
        if not isinstance(result, torch.Tensor):
            return result
        target = _move_target(func, args, kwargs)
        if target == "cpu":
            if tensors and result is tensors[0]:
                result = result.clone()  # a move between devices copies; so must the simulation
            setattr(result, OFF_DEVICE, True)
        elif target == "device":
            if getattr(result, OFF_DEVICE, False):
                setattr(result, OFF_DEVICE, False)
        elif (not tensors and _device_is_cpu(kwargs.get("device"))) or (
                tensors and all(getattr(t, OFF_DEVICE, False) for t in tensors)):
            setattr(result, OFF_DEVICE, True)
        return result


def _move_target(func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """``"cpu"`` for a move to the CPU by name, ``"device"`` for one to a device object, else None."""
    if func is torch.Tensor.cpu:
        return "cpu"
    if func is torch.Tensor.cuda:
        return "device"
    if func is not torch.Tensor.to:
        return None
    for target in (*args[1:2], kwargs.get("device")):
        if isinstance(target, str):
            return "cpu" if target == "cpu" else "device"
        if isinstance(target, (torch.device, torch.Tensor)):
            return "device"
    return None  # a dtype alone


def _device_is_cpu(device: Any) -> bool:
    """A factory's ``device=`` that puts its tensor on the CPU beside an accelerator."""
    return device is None or device == "cpu"


def check_value_range(built: Built, n: int = 4) -> None:
    """Samples lie in the range the decoder declares it reads (``input_range``)."""
    decoder = built.pipeline.decoder
    declared = getattr(decoder, "input_range", None)
    if declared is None:
        return
    where = f"{built.where} with decoder {pipeline.component_names(built.config)['decoder']!r}"
    try:
        low, high = (float(v) for v in declared)
    except (TypeError, ValueError):
        low, high = math.nan, math.nan
    if not low <= high:
        raise ContractViolation("value_range", where,
                                f"the decoder's input_range {declared!r} is not a (low, high) pair")
    for i, sample in enumerate(generate(built, n, seed=0)):
        if sample.numel() == 0:
            continue
        least, most = sample.min().item(), sample.max().item()
        if least < low or most > high:
            # Integer samples are ids (a code decoder reads [0, K - 1]); floats are values to rescale.
            remedy = (f"sample only ids in [{low:g}, {high:g}] (mask the logits of any other id)"
                      if not sample.is_floating_point() else
                      f"map generate()'s output into [{low:g}, {high:g}] "
                      "(for example (x + 1) / 2 from [-1, 1])")
            raise ContractViolation(
                "value_range", where,
                f"example {i} holds values in [{least:.4g}, {most:.4g}], but the decoder reads "
                f"[{low:g}, {high:g}] (its input_range) and would clamp or drop the rest; {remedy}")


def check_evaluation(built: Built, batches: int = EVAL_BATCHES) -> None:
    """Scoring the validation split does not depend on the global random state."""
    parts = built.pipeline
    assert parts.dataset is not None
    val = parts.dataset.split("val", parts.encoder, parts.condition_encoder)
    if len(val) == 0:
        raise ContractViolation("evaluation", f"pipeline {built.name!r}", "the val split is empty")
    placement = Placement(torch.device("cpu"))
    scores = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        scores.append(evaluate(parts.generator, val, batch_size=4, max_batches=batches, placement=placement))
    first, second = scores
    changed = sorted(k for k in first.keys() | second.keys()
                     if not math.isclose(first.get(k, math.nan), second.get(k, math.nan),
                                         rel_tol=1e-6, abs_tol=1e-9))
    if changed:
        values = ", ".join(f"{k} {first.get(k)} then {second.get(k)}" for k in changed)
        raise ContractViolation(
            "evaluation", built.where,
            f"scoring the same validation batches twice gave {values}; in eval mode (self.training "
            "is False) draw any noise the loss needs from a generator seeded with a constant, "
            "not from the global random state")


def check_round_trip(plugin_set: PluginSet, built: Built, directory: Path) -> None:
    generator = built.pipeline.generator
    step_dir = checkpoint.save(directory, step=1, model=generator, config=built.config,
                               plugins=plugin_set.versions())
    fresh = build(plugin_set, built.name, built.overrides, seed=99)  # different initial weights
    fresh.sample_options = built.sample_options
    try:
        checkpoint.load_weights(fresh.pipeline.generator, step_dir)
    except checkpoint.CheckpointError as err:
        raise ContractViolation("round_trip", built.where, str(err)) from err
    before, after = generate(built, 2, seed=7), generate(fresh, 2, seed=7)
    if any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(before, after, strict=True)):
        raise ContractViolation("round_trip", built.where,
                                "samples differ after a save and load; is some state outside "
                                "parameters and buffers (or a non-persistent buffer) used?")
    batch = built.batch()
    with torch.no_grad():
        built.pipeline.generator.eval()
        fresh.pipeline.generator.eval()
        torch.manual_seed(0)
        loss_before = built.pipeline.generator.loss(batch)["loss"]
        torch.manual_seed(0)
        loss_after = fresh.pipeline.generator.loss(batch)["loss"]
    if not torch.allclose(loss_before, loss_after):
        raise ContractViolation("round_trip", built.where,
                                f"the loss of one batch changed from {loss_before.item()} to "
                                f"{loss_after.item()} after a save and load")


def check_decoder(built: Built, directory: Path) -> None:
    decoder = built.pipeline.decoder
    where = f"decoder {pipeline.component_names(built.config)['decoder']!r} in pipeline {built.name!r}"
    media = [decoder.decode(sample) for sample in generate(built, 2, seed=0)]
    for item in media:
        problem = media_problem(decoder.media_type, item)
        if problem:
            raise ContractViolation("decoder", where, f"media_type is {decoder.media_type!r} but {problem}")
    directory.mkdir(parents=True, exist_ok=True)
    paths = decoder.write(media, directory)
    if not paths:
        raise ContractViolation("decoder", where, "write() wrote no files")
    for path in map(Path, paths):
        inside = directory.resolve() in path.resolve().parents
        if not path.is_file() or path.stat().st_size == 0 or not inside:
            raise ContractViolation("decoder", where,
                                    f"write() returned {path}, which is not a non-empty file in {directory}")


def media_problem(media_type: str, item: Any) -> str | None:
    """Why ``item`` is not media of ``media_type``, or None when it is."""
    if media_type == "text":
        return None if isinstance(item, str) else f"decode() returned {type(item).__name__}, not str"
    if media_type == "image":
        if type(item).__module__.startswith("PIL."):
            return None
        shape, dtype = getattr(item, "shape", None), str(getattr(item, "dtype", ""))
        if shape is not None and len(shape) in (2, 3) and dtype.endswith("uint8"):
            return None
        return f"decode() returned {type(item).__name__}, not a PIL image or an (H, W[, C]) uint8 array"
    if media_type == "audio":
        samples = getattr(item, "samples", item)
        shape = getattr(samples, "shape", None)
        if shape is not None and len(shape) in (1, 2) and "float" in str(getattr(samples, "dtype", "")):
            return None
        return f"decode() returned {type(item).__name__}, not a float waveform (1-D, or channels x time)"
    return None if item is not None else "decode() returned None"


# ---------------------------------------------------------------------------- pytest


class PluginContract:
    """Subclass as ``Test...`` in a plugin's tests to run every rule on its components.

    Attributes to set:

    * ``plugin``: the hook module your ``genloom`` entry point names;
    * ``pipelines``: small pipeline presets (seconds to build) that together use every
      component the plugin registers;
    * ``also_load``: hook modules of other plugins whose components or config options your
      presets use (``["genloom_image.plugin"]``; default none); declare their
      distributions as dependencies in your ``pyproject.toml`` too;
    * ``not_covered``: ``{"kind:name": "reason"}`` for components no small preset can use
      (a dataset that needs a user's folder), with where they are tested instead;
    * ``sample_options``: keyword options for ``generate`` that keep samples small
      (``{"max_new_tokens": 8}``).

    A preset whose mandatory value (``???``) only a test can give, such as the path of a
    model directory the test writes, gets it from the ``contract_overrides`` fixture:
    override it to return ``["generator.path=..."]``.
    """

    plugin: ClassVar[str] = ""
    pipelines: ClassVar[Sequence[str]] = ()
    also_load: ClassVar[Sequence[str]] = ()
    not_covered: ClassVar[Mapping[str, str]] = {}
    sample_options: ClassVar[Mapping[str, Any]] = {}

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "contract_pipeline" in metafunc.fixturenames:
            metafunc.parametrize("contract_pipeline", list(self.pipelines), scope="class")

    @pytest.fixture(scope="class")
    @classmethod
    def contract_plugins(cls) -> PluginSet:
        if not cls.plugin or not cls.pipelines:
            pytest.fail(f"{cls.__name__} must set plugin = 'pkg.hooks' and pipelines = [...]",
                        pytrace=False)
        return load_only([cls.plugin, *cls.also_load])

    @pytest.fixture(scope="class")
    @classmethod
    def contract_overrides(cls) -> Sequence[str]:
        """Overrides every preset is built with; none by default. Override this fixture when a
        preset needs a value only a test can give (``generator.path=`` a model it wrote)."""
        return ()

    @pytest.fixture
    def built(self, contract_plugins: PluginSet, contract_pipeline: str,
              contract_overrides: Sequence[str]) -> Built:
        built = _violations_fail(build, contract_plugins, contract_pipeline, contract_overrides)
        built.sample_options = dict(self.sample_options)
        return built

    def test_light_hook_module(self) -> None:
        _violations_fail(check_light_hook_module, self.plugin)

    def test_hooks(self) -> None:
        _violations_fail(check_hooks, self.plugin)

    def test_coverage(self, contract_plugins: PluginSet) -> None:
        own = load_only([self.plugin])
        configs = {name: _violations_fail(compose_preset, contract_plugins, name, (), "coverage")
                   for name in self.pipelines}
        _violations_fail(check_coverage, own, configs, self.not_covered)

    def test_configs_compose(self, contract_plugins: PluginSet) -> None:
        _violations_fail(check_configs_compose, contract_plugins, self.pipelines, [self.plugin])

    def test_builds(self, built: Built) -> None:
        _violations_fail(check_builds, built)

    def test_loss(self, built: Built) -> None:
        _violations_fail(check_loss, built, built.batch())

    def test_gradients(self, built: Built) -> None:
        _violations_fail(check_gradients, built)

    def test_sample_spec(self, built: Built) -> None:
        _violations_fail(check_sample_spec, built)

    def test_seeded(self, built: Built) -> None:
        _violations_fail(check_seeded, built)

    def test_rng_device(self, built: Built) -> None:
        _violations_fail(check_rng_device, built)

    def test_value_range(self, built: Built) -> None:
        _violations_fail(check_value_range, built)

    def test_evaluation(self, built: Built) -> None:
        _violations_fail(check_evaluation, built)

    def test_round_trip(self, contract_plugins: PluginSet, built: Built, tmp_path: Path) -> None:
        _violations_fail(check_round_trip, contract_plugins, built, tmp_path)

    def test_decoder(self, built: Built, tmp_path: Path) -> None:
        _violations_fail(check_decoder, built, tmp_path)


def _violations_fail(check: Any, *args: Any) -> Any:
    """Run a check; a broken rule fails the test with its message alone, no traceback."""
    try:
        return check(*args)
    except ContractViolation as violation:
        message = str(violation)
    pytest.fail(message, pytrace=False)


# ---------------------------------------------------------------------------- exact resume
# Not a PluginContract rule (it trains three times); plugins call it from their own tests.


class _StopAfter:
    """A hook implementation that sends this process SIGINT after step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def genloom_train_step_end(self, step: int, metrics: Mapping[str, float]) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def train_records(run_dir: Path) -> list[dict[str, Any]]:
    """The train records of ``run_dir/metrics.jsonl`` in the order written, without throughput."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "throughput"} for r in records if r["split"] == "train"]


def scramble_global_streams(seed: int = 12345) -> None:
    """Seed every global random stream with something no run uses."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def check_resume(
    plugin_set: PluginSet, overrides: Sequence[str], *, stop_after: int, directory: Path
) -> list[dict[str, Any]]:
    """A run stopped after step ``stop_after`` and resumed logs what the uninterrupted run logs.

    Trains ``overrides`` (``genloom train`` in this process, ``trainer.log_every=1``)
    straight through; again, stopped by a real SIGINT after ``stop_after`` (the trainer
    saves); then resumes it with ``trainer.resume=true`` after scrambling every global
    random stream, so that what the resumed run draws must come from its checkpoint.
    Every logged train loss, gradient norm and learning rate must be equal (``==``).
    Returns the uninterrupted run's records.
    """
    from genloom import cli

    common = ["train", *overrides, "trainer.progress=false", "trainer.log_every=1"]
    where = f"`genloom train {' '.join(overrides)}`"
    with active_plugins(plugin_set):
        if (status := cli.main([*common, f"hydra.run.dir={directory / 'straight'}"])) != 0:
            raise ContractViolation("resume", where, f"training exited with status {status}")
        run = directory / "interrupted"
        stopper = _StopAfter(stop_after)
        plugin_set.manager.register(stopper)
        try:
            status = cli.main([*common, f"hydra.run.dir={run}"])
        finally:
            plugin_set.manager.unregister(stopper)
        if status != 128 + signal.SIGINT:
            raise ContractViolation("resume", where, f"SIGINT after step {stop_after} gave status {status}; "
                                    "is trainer.max_steps above it?")
        if (saved := checkpoint.read(run).step) != stop_after:
            raise ContractViolation("resume", where, f"SIGINT after step {stop_after} saved step {saved}")
        scramble_global_streams()
        if (status := cli.main([*common, "trainer.resume=true", f"hydra.run.dir={run}"])) != 0:
            raise ContractViolation("resume", where, f"resuming exited with status {status}")
    straight, resumed = train_records(directory / "straight"), train_records(run)
    steps, straight_steps = [r["step"] for r in resumed], [r["step"] for r in straight]
    if steps != straight_steps:
        raise ContractViolation("resume", where, f"the resumed run logged steps {steps}, "
                                f"the uninterrupted one {straight_steps}")
    for before, after in zip(straight, resumed, strict=True):
        if before != after:
            raise ContractViolation(
                "resume", where,
                f"after a stop at step {stop_after} and a resume, step {before['step']} logged {after} "
                f"where the uninterrupted run logged {before}; does the generator draw randomness "
                "from a stream that is neither torch's, Python's nor NumPy's global one?",
            )
    return straight
