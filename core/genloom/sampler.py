"""The one sampler, for every generator: seeded, batched, streaming where it can.

It rebuilds a pipeline from a checkpoint directory alone, draws samples from the
generator, turns them into media through the decoder and writes them to files. When the
generator and decoder both stream and samples are drawn one at a time, output is echoed
as it is generated (text to the terminal, token by token).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
import threading
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from omegaconf import OmegaConf
from torch.overrides import TorchFunctionMode

from genloom import checkpoint, fitting, frozen, pipeline
from genloom.distributed import select_device
from genloom.interfaces import Decoder, Generator, StreamingDecoder, StreamingGenerator
from genloom.plugins import PluginSet
from genloom.registry import Registry, RegistryError
from genloom.settings import SettingsError, check_value

log = logging.getLogger(__name__)

@dataclass
class LoadedModel:
    pipeline: pipeline.Pipeline
    checkpoint: checkpoint.Checkpoint
    device: torch.device
    weights: str = "raw"  # which the generator holds: "ema" (trainer.ema's average) or "raw"


def load(
    path: str | Path, plugins: PluginSet, device: str = "auto", *, with_dataset: bool = False,
    use_ema: bool | None = None,
) -> LoadedModel:
    """Rebuild the pipeline saved in a checkpoint and load its weights (no pickle).

    This is the one path by which ``sample``, ``eval`` and ``serve`` open a checkpoint, and
    its files may be a stranger's: the config is read safely (:func:`checkpoint.read`), the
    generator is first built on the ``meta`` device within a budget the weights file sets,
    and only a generator whose every tensor matches the file, and that fits in memory, is
    built for real. Whatever the files hold, the result is the model or one
    :class:`checkpoint.CheckpointError` that names the file. Frozen components
    (``from_checkpoint``) are built from the stage-1 copies the checkpoint stores
    (:func:`genloom.frozen.bind`), through this same function; an encoder fitted on the
    training data gets its state from the checkpoint's ``tokenizer.json``
    (:func:`genloom.fitting.restore`). The generator gets the checkpoint's EMA of the
    weights where it holds one, unless ``use_ema`` is false
    (:func:`genloom.checkpoint.load_generator_weights`); the log says which.
    """
    ckpt = checkpoint.read(path)
    _warn_on_plugin_drift(ckpt, plugins)
    target = select_device(device)
    config_file = ckpt.path / "config.yaml"
    try:
        pipeline.refuse_instantiation(ckpt.config)
        _check_generator_fits(ckpt, plugins.registry, target)
        config = frozen.bind(ckpt.config, ckpt.path)
        built = pipeline.build(config, plugins.registry, with_dataset=with_dataset)
        frozen.check_pipeline(built)
        fitting.restore(built, ckpt.path)
    except checkpoint.CheckpointError:
        raise
    except RegistryError as err:
        raise checkpoint.CheckpointError(f"{config_file}: {err}") from None
    except Exception as err:  # a factory failing on the stranger's option values
        log.debug("building the pipeline of %s failed", config_file, exc_info=True)
        raise checkpoint.CheckpointError(
            f"{config_file} does not build: {type(err).__name__}: {err}"
        ) from None
    ema = checkpoint.load_generator_weights(built.generator, ckpt.path, target, use_ema=use_ema)
    decay = OmegaConf.select(ckpt.config, "trainer.ema.decay", default=None)
    log.info("%s (step %d): %s", ckpt.path, ckpt.step,
             f"the EMA of the weights (trainer.ema.decay={decay}; use_ema=false for the raw ones)" if ema
             else "raw weights (use_ema=false)" if use_ema is False else "raw weights (it holds no EMA)")
    built.generator.to(target).eval()
    frozen.place(built, target)
    return LoadedModel(built, ckpt, target, "ema" if ema else "raw")


class _OverBudget(Exception):
    """Raised from inside a factory built on meta, to stop it as soon as it is too big."""


def _check_generator_fits(ckpt: checkpoint.Checkpoint, registry: Registry, device: torch.device) -> None:
    """Build the generator on the meta device and compare it with the weights file.

    Nothing is allocated on meta, so an absurd size costs nothing; and the build stops as
    soon as it registers more parameters than the file could hold (with room for tied
    weights), so ``n_layer=100000`` costs a few layers, not a minute. Modality-blind: it
    knows tensors, not what the options mean.
    """
    header = ckpt.weights
    name, options = pipeline.component_spec(ckpt.config, "generator")
    memory = _memory(device)
    try:
        with _budget(header, memory), torch.device("meta"), _NoDataOnMeta():
            model = registry.build("generator", name, options)
    except _OverBudget as err:
        raise checkpoint.CheckpointError(
            f"{ckpt.path / 'config.yaml'}: generator {name!r} with these options {err}; "
            "refusing to build it"
        ) from None
    except RegistryError:
        raise
    except Exception:  # noqa: BLE001 - a factory that cannot build on meta: built for real below
        log.debug("generator %r does not build on the meta device; not pre-checked", name, exc_info=True)
        return
    if not isinstance(model, torch.nn.Module):
        return
    checkpoint.check_fits(model, header)
    need = _bytes(model)
    if memory is not None and need > memory:
        raise checkpoint.CheckpointError(
            f"{ckpt.path / 'config.yaml'}: generator {name!r} needs {need / 2**30:,.1f} GiB, more "
            f"than the {memory / 2**30:,.1f} GiB of {device}; refusing to build it"
        )


@contextmanager
def _budget(header: checkpoint.WeightsHeader, memory: int | None) -> Iterator[None]:
    """Stop a module being built in this thread once it outgrows ``header``'s file."""
    from torch.nn.modules import module as nn_module

    thread = threading.get_ident()
    max_params, max_numel = 4 * len(header.tensors) + 64, 4 * header.numel + (1 << 20)
    max_modules = 16 * max_params
    if header.partial:
        # The file holds only what trains (PartialCheckpoint): the rest comes from files the config
        # names on this machine, so the file bounds nothing; the memory checks still hold.
        max_params = max_numel = max_modules = math.inf
    holds = (f"while {header.path} holds {header.numel:,} values in {len(header.tensors)} tensors: "
             "the config does not belong to these weights")
    seen: set[int] = set()
    counts = {"params": 0, "numel": 0, "buffer_bytes": 0, "modules": 0}

    def on_param(module: torch.nn.Module, name: str, param: torch.Tensor | None) -> None:
        if threading.get_ident() != thread or param is None or id(param) in seen:
            return
        seen.add(id(param))
        counts["params"] += 1
        counts["numel"] += param.numel()
        if counts["params"] > max_params:
            raise _OverBudget(f"would have more than {max_params:,} parameter tensors, {holds}")
        if counts["numel"] > max_numel:
            raise _OverBudget(f"would have more than {max_numel:,} parameters, {holds}")

    def on_buffer(module: torch.nn.Module, name: str, buffer: torch.Tensor | None) -> None:
        if threading.get_ident() != thread or buffer is None:
            return
        counts["buffer_bytes"] += buffer.numel() * buffer.element_size()
        if memory is not None and counts["buffer_bytes"] > memory:
            raise _OverBudget(f"would hold buffers larger than all {memory / 2**30:,.1f} GiB of memory")

    def on_module(module: torch.nn.Module, name: str, submodule: torch.nn.Module | None) -> None:
        if threading.get_ident() != thread:
            return
        counts["modules"] += 1
        if counts["modules"] > max_modules:
            raise _OverBudget(f"would have more than {max_modules:,} modules, {holds}")

    handles = [
        nn_module.register_module_parameter_registration_hook(on_param),
        nn_module.register_module_buffer_registration_hook(on_buffer),
        nn_module.register_module_module_registration_hook(on_module),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _NoDataOnMeta(TorchFunctionMode):
    """Initialising a meta tensor's values is a no-op: it has none.

    Left to PyTorch, random initialisation on meta goes through Python decompositions
    that import ``torch._dynamo`` (seconds) on every ``genloom sample``.
    """

    OPS = frozenset({
        "normal_", "uniform_", "trunc_normal_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_",
        "xavier_uniform_", "orthogonal_", "sparse_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
        "bernoulli_", "exponential_", "geometric_", "log_normal_", "cauchy_", "random_", "fill_", "zero_",
    })

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in self.OPS:
            target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by name
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


def _bytes(model: torch.nn.Module) -> int:
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _memory(device: torch.device) -> int | None:
    """The memory a model built for ``device`` must fit in (it is built in RAM first)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        ram = None
    if device.type == "cuda":
        gpu = torch.cuda.mem_get_info(device)[1]
        return gpu if ram is None else min(ram, gpu)
    return ram


def _warn_on_plugin_drift(ckpt: checkpoint.Checkpoint, plugins: PluginSet) -> None:
    installed = plugins.versions()
    for dist, version in ckpt.meta.get("plugins", {}).items():
        if dist in installed and installed[dist] != version:
            log.warning(
                "checkpoint %s was made with %s %s; %s is installed",
                ckpt.path, dist, version, installed[dist],
            )


def sampling_options(
    built: pipeline.Pipeline, options: Mapping[str, Any], device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Check the sampling options a user set against the generator's ``generate``.

    Any keyword-only parameter of ``generate`` (besides ``condition`` and ``rng``) is an
    option: a name it does not take is an error that lists those it does, a value is
    checked against the parameter's annotation (``steps=2.5`` for an ``int`` is an error),
    and null keeps the generator's default. A parameter annotated as a tensor takes media
    (text, say) that the pipeline's encoder encodes, as it encodes a prompt.
    """
    generator = built.generator
    params = inspect.signature(generator.generate).parameters
    accepted = sorted(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
                      and n not in ("condition", "rng"))
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise RegistryError(
            f"generator {type(generator).__name__} does not take {', '.join(unknown)}; "
            f"its sampling options are: {', '.join(accepted) or 'none'}"
        )
    hints = _annotations(generator.generate)
    chosen = {}
    for key, value in options.items():
        if value is None:
            continue
        annotation = hints.get(key)
        if _is_tensor(annotation):
            if isinstance(value, (dict, list)):
                raise SettingsError(f"{key}={value!r} must be given as text (it is encoded)")
            encoded = built.encoder.encode(str(value))
            if encoded.numel() == 0:
                raise SettingsError(
                    f"{key}={value!r} encodes to nothing; give a non-empty value, or leave {key} unset"
                )
            chosen[key] = encoded.to(device)
        elif annotation is not None:
            chosen[key] = check_value(key, value, annotation)
        else:
            chosen[key] = value
    return chosen


def _annotations(function: Any) -> dict[str, Any]:
    """The resolved annotations of ``function``; strings for those that do not resolve."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - e.g. a name imported under TYPE_CHECKING only
        return {k: v for k, v in getattr(function, "__annotations__", {}).items()}


def _is_tensor(annotation: Any) -> bool:
    """Whether a parameter annotated so takes a tensor (``Tensor``, ``Tensor | None``...)."""
    if annotation is None:
        return False
    if isinstance(annotation, str):
        return "Tensor" in annotation
    if annotation is torch.Tensor:
        return True
    return any(a is torch.Tensor for a in typing.get_args(annotation))


def draw(
    generator: Generator, decoder: Decoder, n: int, *, batch_size: int, rng: torch.Generator,
    condition: torch.Tensor | None = None, options: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Generate ``n`` samples in batches of ``batch_size`` and decode each into media.

    ``options`` are the generator's own, as :func:`sampling_options` checked them. The one
    way samples are drawn: ``genloom sample`` and a training run's
    :meth:`genloom.trainer.TrainingRun.draw_samples` both come here.
    """
    media: list[Any] = []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            outputs = generator.generate(min(batch_size, n - start), condition=condition, rng=rng,
                                         **(options or {}))
            media.extend(decoder.decode(out) for out in outputs)
            log.info("generated %d/%d", len(media), n)
    return media


class Sampler:
    def __init__(self, model: LoadedModel, *, hooks: Any, echo: TextIO | None = None) -> None:
        self.pipeline = model.pipeline
        self.device = model.device
        self.hooks = hooks
        self.echo = echo if echo is not None else sys.stdout

    def sampling_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The generator's keyword arguments for the options a user set (:func:`sampling_options`)."""
        return sampling_options(self.pipeline, options, self.device)

    def condition(self, prompt: str | None, label: int | None) -> torch.Tensor | None:
        """The generator's condition: the encoded prompt, or a class index."""
        if prompt is not None and label is not None:
            raise ValueError("give prompt= or label=, not both")
        if label is not None:
            if not isinstance(label, int) or isinstance(label, bool):
                raise ValueError(f"label={label!r} must be a class index (an integer)")
            return torch.tensor(label, device=self.device)
        if prompt is not None:
            return self.pipeline.prompt_encoder.encode(prompt).to(self.device)
        return None

    def run(
        self,
        *,
        n: int,
        batch_size: int,
        seed: int,
        out_dir: Path,
        prompt: str | None = None,
        label: int | None = None,
        stream: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> list[Path]:
        """Draw ``n`` samples and write them under ``out_dir``; return the files written."""
        if n < 1 or batch_size < 1:
            raise ValueError(f"n={n} and batch_size={batch_size} must both be at least 1")
        generator, decoder = self.pipeline.generator, self.pipeline.decoder
        opts = self.sampling_options(options or {})
        condition = self.condition(prompt, label)
        rng = torch.Generator(device=self.device).manual_seed(seed)
        streaming = (
            stream and isinstance(generator, StreamingGenerator) and isinstance(decoder, StreamingDecoder)
        )
        if streaming:
            with torch.inference_mode():
                media = [self._stream_one(condition, rng, opts, prompt, index=i) for i in range(n)]
        else:
            media = draw(generator, decoder, n, batch_size=batch_size, rng=rng, condition=condition,
                         options=opts)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = decoder.write(media, out_dir)
        for path in paths:
            self.hooks.genloom_sample_written(path=path, media_type=decoder.media_type, info={"seed": seed})
        return paths

    def _stream_one(
        self, condition: torch.Tensor | None, rng: torch.Generator, opts: dict[str, Any],
        prompt: str | None, index: int,
    ) -> Any:
        generator, decoder = self.pipeline.generator, self.pipeline.decoder
        piece_of = decoder.incremental()
        chunks = []
        self.echo.write(f"\n--- sample {index} ---\n{prompt or ''}")
        for chunk in generator.stream(1, condition=condition, rng=rng, **opts):
            chunks.append(chunk[0])
            self.echo.write(piece_of(chunk[0]))
            self.echo.flush()
        self.echo.write("\n")
        tokens = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.long)
        return decoder.decode(tokens)
