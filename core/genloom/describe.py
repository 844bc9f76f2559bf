"""``genloom describe``: what a pipeline's batches and samples look like, from the components.

It composes the config ``genloom train`` would (the same overrides), builds the pipeline,
reads examples of one split and reports each batch key's shape, dtype and value range,
then what the generator draws (its ``sample_spec`` and sampling options) and what the
decoder makes of it (its media type and the values it reads). Nothing is trained or
written. It knows no modality: everything it prints comes from the components::

    genloom describe pipeline=image_debug
    genloom describe pipeline=image_debug dataset=shapes_debug --split train --json
"""

from __future__ import annotations

import inspect
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from genloom import doctor, fitting, pipeline
from genloom.plugins import PluginSet, active

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

USAGE = """usage: genloom describe OVERRIDES... [--split val|train] [--examples N] [--json]

Build a pipeline as `genloom train OVERRIDES` would, read N examples (default 256) of a
split (default val) and print each batch key's shape, dtype and value range, the
generator's sample_spec and sampling options, and the decoder's media type and input range.
  genloom describe pipeline=text_debug
  genloom describe pipeline=image_debug dataset=shapes_debug --split train --json
"""


class DescribeError(ValueError):
    """The pipeline could not be composed or built; the message says why."""


@dataclass
class KeyStats:
    """One batch key over the examples read: ``shape`` is per example, ``None`` where it varies."""

    key: str
    shape: list[int | None]
    dtype: str
    low: float
    high: float

    def spec(self) -> str:
        """Shape and dtype as :meth:`genloom.interfaces.SampleSpec.describe` writes them."""
        dims = ", ".join("*" if d is None else str(d) for d in self.shape)
        return f"({dims}) {self.dtype}"

    def line(self) -> str:
        return f"{self.key:12} {self.spec()}, values in [{self.low:g}, {self.high:g}]"


@dataclass
class Description:
    pipeline: str
    components: dict[str, str]
    split: str
    split_size: int
    examples_read: int
    unit: str
    units_per_example: int
    batch: list[KeyStats] = field(default_factory=list)
    sample_spec: str = ""
    sampling_options: dict[str, Any] = field(default_factory=dict)
    media_type: str = ""
    input_range: list[float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        parts = ", ".join(f"{key} {name}" for key, name in self.components.items())
        lines = [f"pipeline {self.pipeline}: {parts}", "",
                 f"batches (the {self.split} split: {self.split_size} examples of "
                 f"{self.units_per_example} {self.unit}; {self.examples_read} read), per example:"]
        lines += [f"  {stats.line()}" for stats in self.batch]
        options = ", ".join(f"{k}={v!r}" for k, v in self.sampling_options.items()) or "none"
        reads = ("values in [{:g}, {:g}]".format(*self.input_range) if self.input_range is not None
                 else "any values (it declares no input_range)")
        lines += ["", f"generator {self.components['generator']}:",
                  f"  sample_spec       {self.sample_spec}",
                  f"  sampling options  {options}",
                  f"decoder {self.components['decoder']}:",
                  f"  media_type        {self.media_type}",
                  f"  reads             {reads}"]
        return "\n".join(lines) + "\n"


def describe(plugin_set: PluginSet, overrides: list[str], *, split: str = "val",
             examples: int = 256) -> Description:
    """Compose ``overrides``, build the pipeline and describe ``examples`` of ``split``."""
    if split not in ("train", "val"):
        raise DescribeError(f"--split {split!r}: choose train or val")
    config = compose(plugin_set, overrides)
    try:
        built = pipeline.build(config, plugin_set.registry)
        assert built.dataset is not None
        fitting.fit(built)  # as genloom train does: a trained tokenizer encodes the split
        data = built.dataset.split(split, built.encoder, built.condition_encoder)
    except Exception as err:  # a component's own message says what is wrong with its options
        raise DescribeError(f"the pipeline does not build: {type(err).__name__}: {err}") from err
    count = min(examples, len(data))
    if count == 0:
        raise DescribeError(f"the {split} split is empty")
    generator, decoder = built.generator, built.decoder
    spec = getattr(generator, "sample_spec", None)
    declared = getattr(decoder, "input_range", None)
    preset = config.get("pipeline") or {}
    return Description(
        pipeline=str(preset.get("name", "(no preset)")),
        components=pipeline.component_names(config),
        split=split,
        split_size=len(data),
        examples_read=count,
        unit=built.dataset.unit,
        units_per_example=built.dataset.units_per_example,
        batch=batch_stats([data[i] for i in range(count)]),
        sample_spec=spec.describe() if spec is not None and hasattr(spec, "describe") else "(not declared)",
        sampling_options=sampling_options(generator),
        media_type=str(getattr(decoder, "media_type", "")),
        input_range=None if declared is None else [float(v) for v in declared],
    )


def compose(plugin_set: PluginSet, overrides: list[str]) -> DictConfig:
    """The config ``genloom train OVERRIDES`` would run, or a :class:`DescribeError`."""
    try:
        config = doctor.compose(plugin_set, overrides)
    except Exception as err:  # Hydra's errors differ by cause
        missing = doctor.missing_option(err)
        why = (f"no installed plugin ships {missing[0]}={missing[1]} (`genloom plugins` lists the options)"
               if missing else doctor.compose_error(err))
        raise DescribeError(f"`{' '.join(overrides)}` does not compose: {why}") from err
    if config.get("generator") is None:
        presets = sorted({o for p in plugin_set.plugins for o in p.config_groups.get("pipeline", [])})
        alone = [o for o in overrides if o.lstrip("+").startswith(("dataset=", "encoder=", "decoder="))]
        hint = (f" ({alone[0]} alone has no examples to show: its encoder makes them; add it to a "
                f"preset, `genloom describe pipeline=<preset> {alone[0].lstrip('+')}`)" if alone else "")
        raise DescribeError(f"choose what to describe: pipeline=<preset>{hint}; installed presets: "
                            f"{', '.join(presets) or 'none'}")
    return config


def batch_stats(examples: list[dict[str, torch.Tensor]]) -> list[KeyStats]:
    """Shape, dtype and value range of every key over ``examples`` (each without batch dim)."""
    stats = []
    for key in examples[0]:
        values = [ex[key] for ex in examples]
        ranks = {v.dim() for v in values}
        if len(ranks) > 1:
            shape: list[int | None] = [None]
        else:
            shape = [sizes[0] if len(set(sizes)) == 1 else None
                     for sizes in zip(*(tuple(v.shape) for v in values), strict=True)]
        present = [v for v in values if v.numel()]
        low = min((float(v.min()) for v in present), default=float("nan"))
        high = max((float(v.max()) for v in present), default=float("nan"))
        stats.append(KeyStats(key, shape, str(values[0].dtype).removeprefix("torch."), low, high))
    return stats


def sampling_options(generator: Any) -> dict[str, Any]:
    """The keyword-only options of ``generate`` (``genloom sample`` options) and their defaults."""
    params = inspect.signature(generator.generate).parameters
    return {
        name: None if p.default is inspect.Parameter.empty else p.default
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("condition", "rng")
    }


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    overrides, split, examples, as_json = [], "val", 256, False
    rest = iter(args)
    for arg in rest:
        if arg == "--json":
            as_json = True
        elif arg in ("--split", "--examples"):
            value = next(rest, None)
            if value is None or (arg == "--examples" and not value.isdigit()):
                print(f"genloom describe: {arg} needs a value\n{USAGE}", end="", file=sys.stderr)
                return 2
            split, examples = (value, examples) if arg == "--split" else (split, max(1, int(value)))
        elif arg.startswith("--") or "=" not in arg:
            print(f"genloom describe: unknown argument {arg!r}\n{USAGE}", end="", file=sys.stderr)
            return 2
        else:
            overrides.append(arg)
    try:
        description = describe(active(), overrides, split=split, examples=examples)
    except DescribeError as err:
        print(f"genloom describe: {err}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(description.as_dict(), indent=2))
    else:
        print(description.text(), end="")
    return 0
