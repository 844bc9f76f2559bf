"""``genloom new-plugin NAME``: write a ready-to-install plugin distribution.

The result is a folder ``genloom-NAME/`` with a ``pyproject.toml`` whose entry point names
the hook module, a small but real model of a modality's data in ``components.py``, its
config groups with a real preset and a debug preset, and tests: the contract kit pointed
at the plugin and a train-then-sample run through the CLI. It passes them as written;
``pip install -e "genloom-NAME[test]" && pytest genloom-NAME`` shows it.

``--generator-only PRESET`` writes a plugin that brings only a generator and reuses the
dataset, encoder and decoder of an installed preset: the other plugin becomes a
dependency in ``pyproject.toml`` and an ``also_load`` of the contract test, and the
generator's shape, batch key and label count are read from the preset's examples.

The templates are the files beside this module (``*.tmpl``), filled with
:class:`string.Template` (``$name``, ``$package``...).
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import keyword
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import genloom
from genloom.plugins import PluginSet

NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclass(frozen=True)
class Modality:
    title: str
    generator_summary: str
    dataset_summary: str
    encoder_summary: str
    decoder_summary: str
    configs: dict[str, str]  # group -> YAML body of the plugin's option in that group
    debug: dict[str, str]  # group -> YAML of the debug preset's smaller option
    sample_options: str
    sample_condition: str  # how the end-to-end test steers samples
    clip: str = ""  # what maps the mixture's samples into the decoder's input_range


MIXTURE = "a mixture of diagonal Gaussians over whole examples, steered by a label"
MODALITIES_SPEC = {
    "text": Modality(
        title="Text",
        generator_summary="a byte bigram language model (replace with yours)",
        dataset_summary="windows of bytes over an embedded text or a file",
        encoder_summary="text -> UTF-8 byte ids",
        decoder_summary="byte ids -> text -> .txt files",
        configs={
            "dataset": "length: 32\n"
                       "path: null     # a UTF-8 text file of yours; null: the embedded lines\n"
                       "val_fraction: 0.1\n",
            "encoder": "",
            "generator": "vocab_size: 256\n",
            "decoder": "",
        },
        debug={"dataset": "length: 8\n"},
        sample_options='{"max_new_tokens": 8}',
        sample_condition='"prompt=The"',
    ),
    "image": Modality(
        title="Images",
        generator_summary=MIXTURE,
        dataset_summary="16 x 16 pictures of four shapes, drawn for a seed",
        encoder_summary="(H, W) uint8 picture -> (1, H, W) floats in [0, 1]",
        decoder_summary="(1, H, W) floats -> PGM files",
        configs={
            "dataset": "size: 2000\nresolution: 16\nseed: 0\nval_fraction: 0.1\n",
            "encoder": "",
            "generator": "shape: [1, '${dataset.resolution}', '${dataset.resolution}']\ncomponents: 16\n"
                         "num_classes: 4\n",
            "decoder": "",
        },
        debug={"dataset": "size: 64\nresolution: 8\n"},
        sample_options="{}",
        sample_condition='"label=1"',
        clip=".clamp(0, 1)  # the decoder's input_range",
    ),
    "audio": Modality(
        title="Audio",
        generator_summary=MIXTURE,
        dataset_summary="sine tones at four pitches, synthesised for a seed",
        encoder_summary="mono waveform -> (samples,) floats",
        decoder_summary="(samples,) floats -> 16-bit WAV files",
        configs={
            "dataset": "size: 1000\nsample_rate: 8000\nsamples: 800      # 0.1 s\nseed: 0\n"
                       "val_fraction: 0.1\n",
            "encoder": "",
            "generator": "shape: ['${dataset.samples}']\ncomponents: 16\nnum_classes: 4\n",
            "decoder": "sample_rate: ${dataset.sample_rate}\n",
        },
        debug={"dataset": "size: 64\nsamples: 80\n"},
        sample_options="{}",
        sample_condition='"label=1"',
        clip=".clamp(-1, 1)  # the decoder's input_range",
    ),
    "other": Modality(
        title="Points",
        generator_summary=MIXTURE,
        dataset_summary="2-D points around labelled clusters",
        encoder_summary="(x, y) -> a (2,) float tensor",
        decoder_summary="(2,) floats -> one CSV file of points",
        configs={
            "dataset": "size: 2000\nclusters: 4\nspread: 0.15\nseed: 0\nval_fraction: 0.1\n",
            "encoder": "",
            "generator": "shape: [2]\ncomponents: 8\nnum_classes: '${dataset.clusters}'\n",
            "decoder": "",
        },
        debug={"dataset": "size: 64\n"},
        sample_options="{}",
        sample_condition='"label=1"',
    ),
}


MODALITIES = tuple(MODALITIES_SPEC)


def class_prefix(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def base_values(name: str) -> dict[str, str]:
    """Template values every plugin shares, whatever it brings."""
    prefix = class_prefix(name)
    major, minor = (int(p) for p in genloom.__version__.split(".")[:2])
    return {
        "name": name, "package": f"genloom_{name}",
        "Dataset": f"{prefix}Dataset", "Encoder": f"{prefix}Encoder",
        "Generator": f"{prefix}Model", "Decoder": f"{prefix}Decoder",
        "core_range": f">={major}.{minor},<{major}.{minor + 1}",
        "extra_dependencies": "", "also_load": "", "plugin_modules": f'["genloom_{name}.plugin"]',
        "plugins_note": "", "real_run_line": f"genloom train pipeline={name:<29}# a real run\n",
        "components_note": "the dataset, encoder, generator and decoder",
    }


def filler(values: dict[str, str]) -> Any:
    """``fill(template_path) -> text`` with ``values``."""
    templates = importlib.resources.files(__name__)

    def fill(template: str) -> str:
        return Template(templates.joinpath(template).read_text(encoding="utf-8")).substitute(values)

    return fill


def render(name: str, modality: str) -> dict[str, str]:
    """Relative path -> text of every file of the plugin ``genloom-NAME``."""
    spec = MODALITIES_SPEC[modality]
    package = f"genloom_{name}"
    values = {
        **base_values(name), "modality": modality, "title": spec.title,
        "command": f"genloom new-plugin {name} --modality {modality}",
        "generator_summary": spec.generator_summary, "dataset_summary": spec.dataset_summary,
        "encoder_summary": spec.encoder_summary, "decoder_summary": spec.decoder_summary,
        "sample_options": spec.sample_options, "sample_condition": f"{spec.sample_condition}, ",
        "sample_condition_cli": spec.sample_condition.strip('"'), "clip": spec.clip,
    }
    fill = filler(values)
    values["generator_code"] = "" if modality == "text" else fill("common/mixture.py.tmpl").rstrip("\n")
    files = {
        "pyproject.toml": fill("common/pyproject.toml.tmpl"),
        "README.md": fill("common/README.md.tmpl"),
        f"{package}/__init__.py": f'"""{spec.title} for genloom: the genloom-{name} plugin."""\n',
        f"{package}/plugin.py": fill("common/plugin.py.tmpl"),
        f"{package}/components.py": fill(f"{modality}/components.py.tmpl"),
        f"{package}/conf/__init__.py": "",
        "tests/test_contract.py": fill("common/test_contract.py.tmpl"),
        "tests/test_end_to_end.py": fill("common/test_end_to_end.py.tmpl"),
    }
    for group, body in spec.configs.items():
        files[f"{package}/conf/{group}/{name}.yaml"] = (
            f"# The {group} of genloom-{name}: {values[group + '_summary']}.\nname: {name}\n{body}"
        )
    for group, body in spec.debug.items():
        files[f"{package}/conf/{group}/{name}_debug.yaml"] = (
            f"# A small {group} for tests: seconds on a CPU.\ndefaults:\n  - {name}\n  - _self_\n\n{body}"
        )
    for preset, small in ((name, False), (f"{name}_debug", True)):
        choice = {g: f"{name}_debug" if small and g in spec.debug else name for g in spec.configs}
        files[f"{package}/conf/pipeline/{preset}.yaml"] = (
            "# @package _global_\n"
            f"# genloom train pipeline={preset}\n"
            f"# {spec.title}: {'the whole loop in seconds, for tests' if small else 'a real run'}.\n"
            "defaults:\n" + "".join(f"  - /{g}: {c}\n" for g, c in choice.items())
            + ("  - override /trainer: debug  # a few tiny steps; trainer=default trains for real\n"
               if small else "")
            + f"\npipeline:\n  name: {preset}\n"
        )
    return files


REUSED_GROUPS = ("dataset", "encoder", "condition_encoder", "decoder")


@dataclass(frozen=True)
class Reuse:
    """What a generator-only plugin takes from an installed pipeline preset."""

    preset: str
    choices: dict[str, str]  # reused group -> its option in the preset: {"dataset": "glyphs_debug"}
    nodes: dict[str, dict[str, Any]]  # reused group -> the keys the preset resolves it to
    key: str  # the batch key the generator models
    shape: list[int]
    num_classes: int  # labels 0..num_classes-1 under "condition"; 0: none
    input_range: tuple[float, float] | None
    plugins: dict[str, str]  # hook module -> distribution of each plugin the options come from


FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def reuse(plugin_set: PluginSet, preset: str) -> Reuse:
    """Read what ``pipeline=preset`` gives a new generator: choices, batch key, shape, range."""
    from omegaconf import OmegaConf

    from genloom import describe, doctor

    described = describe.describe(plugin_set, [f"pipeline={preset}"], split="train")
    config = doctor.compose(plugin_set, [f"pipeline={preset}"], return_hydra_config=True)
    chosen = config.hydra.runtime.choices
    choices = {g: str(chosen[g]) for g in REUSED_GROUPS if config.get(g) is not None and g in chosen}
    nodes = {}
    for group in choices:
        node = OmegaConf.to_container(config[group], resolve=True)
        assert isinstance(node, dict)
        node.pop("name", None)
        nodes[group] = node
    matching = [k for k in described.batch if k.spec() == described.sample_spec and k.dtype in FLOAT_DTYPES]
    if not matching or None in matching[0].shape:
        keys = "; ".join(k.line() for k in described.batch)
        raise ValueError(
            f"--generator-only {preset}: the generator written is a mixture of Gaussians over fixed-size "
            f"float examples, but pipeline={preset}'s generator draws {described.sample_spec} and its "
            f"batches hold {keys}; reuse a preset of float examples, or start from --modality text"
        )
    condition = next((k for k in described.batch if k.key == "condition"), None)
    labelled = condition is not None and condition.shape == [] and condition.dtype.startswith(("int", "uint"))
    owners = {p.module: p.distribution or p.name for p in plugin_set.plugins if p.status == "ok"
              and any(option in p.config_groups.get(g, []) for g, option in choices.items())}
    return Reuse(
        preset=preset, choices=choices, nodes=nodes, key=matching[0].key,
        shape=[int(d) for d in matching[0].shape if d is not None],
        num_classes=int(condition.high) + 1 if labelled and condition is not None else 0,
        input_range=None if described.input_range is None else tuple(described.input_range),
        plugins=owners,
    )


def render_generator_only(name: str, reused: Reuse) -> dict[str, str]:
    """Relative path -> text of a plugin ``genloom-NAME`` that brings only a generator."""
    from omegaconf import OmegaConf

    package = f"genloom_{name}"
    dists = sorted(set(reused.plugins.values()))
    low_high = reused.input_range
    range_text = "any range" if low_high is None else f"[{low_high[0]:g}, {low_high[1]:g}]"
    labelled = reused.num_classes > 1
    values = {
        **base_values(name), "title": "A generator", "preset": reused.preset, "key": reused.key,
        "command": f"genloom new-plugin {name} --generator-only {reused.preset}",
        "shape_text": ", ".join(map(str, reused.shape)), "range_text": range_text,
        "reused_from": " and ".join(dists),
        "generator_summary": f"{MIXTURE}, over the examples of pipeline={reused.preset}",
        "sample_options": "{}",
        "sample_condition": '"label=1", ' if labelled else "",
        "sample_condition_cli": "label=1" if labelled else "",
        "clip": "" if low_high is None else (
            f".clamp({low_high[0]:g}, {low_high[1]:g})  # the decoder's input_range"),
        "extra_dependencies": "".join(f'    "{d}",  # its dataset, encoder and decoder are reused\n'
                                      for d in dists),
        "also_load": (f"    also_load = {json.dumps(sorted(reused.plugins))}"
                      "  # the presets use their components\n"),
        "plugin_modules": json.dumps([f"{package}.plugin", *sorted(reused.plugins)]),
        "plugins_note": " and the reused ones'",
        "real_run_line": f"genloom train pipeline={name}_debug trainer=default   # a real run\n",
        "components_note": f"the generator; the dataset, encoder and decoder are {' and '.join(dists)}'s",
    }
    fill = filler(values)
    values["generator_code"] = fill("common/mixture.py.tmpl").rstrip("\n")
    preset = f"{name}_debug"
    choice = {**{g: o for g, o in reused.choices.items() if g != "decoder"}, "generator": name,
              **({"decoder": reused.choices["decoder"]} if "decoder" in reused.choices else {})}
    kept = {group: node for group, node in reused.nodes.items() if node}
    spelled = OmegaConf.to_yaml(OmegaConf.create(kept)) if kept else ""
    conditioned = (f"num_classes: {reused.num_classes}  # the labels under 'condition' in pipeline="
                   f"{reused.preset}'s examples\n" if labelled else
                   f"num_classes: 0  # pipeline={reused.preset}'s examples carry no class label\n")
    return {
        "pyproject.toml": fill("common/pyproject.toml.tmpl"),
        "README.md": fill("common/README.md.tmpl"),
        f"{package}/__init__.py": f'"""A generator for genloom: the genloom-{name} plugin."""\n',
        f"{package}/plugin.py": fill("generator_only/plugin.py.tmpl"),
        f"{package}/components.py": fill("generator_only/components.py.tmpl"),
        f"{package}/conf/__init__.py": "",
        f"{package}/conf/generator/{name}.yaml": (
            f"# The generator of genloom-{name}: {MIXTURE},\n# over the examples of pipeline="
            f"{reused.preset}.\nname: {name}\n"
            f"key: {reused.key}  # the batch key it models\nshape: {reused.shape}\ncomponents: 16\n"
            + conditioned
        ),
        f"{package}/conf/pipeline/{preset}.yaml": (
            "# @package _global_\n"
            f"# genloom train pipeline={preset}\n"
            f"# This plugin's generator on the data, encoder and decoder of pipeline={reused.preset} "
            f"({', '.join(dists)}).\n"
            "defaults:\n" + "".join(f"  - /{g}: {c}\n" for g, c in choice.items())
            + "  - override /trainer: debug  # a few tiny steps; trainer=default trains for real\n\n"
            + (f"# The values pipeline={reused.preset} gives the reused components, spelled out: they\n"
               "# may point at its own generator's keys, which this generator does not have.\n"
               + spelled if spelled else "")
            + f"pipeline:\n  name: {preset}\n"
        ),
        "tests/test_contract.py": fill("common/test_contract.py.tmpl"),
        "tests/test_end_to_end.py": fill("common/test_end_to_end.py.tmpl"),
    }


def check_name(name: str) -> None:
    if not NAME.match(name) or keyword.iskeyword(name):
        raise ValueError(
            f"plugin name {name!r} must be lowercase letters, digits and underscores, starting "
            "with a letter (it becomes the package genloom_NAME and the config names)"
        )


def write(name: str, modality: str, directory: Path, files: dict[str, str] | None = None) -> Path:
    """Write ``directory/genloom-NAME`` and return it; refuses to touch an existing folder.

    ``files`` (relative path -> text) replaces the modality's, for a generator-only plugin.
    """
    check_name(name)
    if files is None and modality not in MODALITIES:
        raise ValueError(f"--modality {modality!r}: choose one of {', '.join(MODALITIES)}")
    root = directory / f"genloom-{name}"
    if root.exists():
        raise FileExistsError(f"{root} already exists; choose another name or remove it")
    for relative, text in (files if files is not None else render(name, modality)).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="genloom new-plugin",
        description="Write a ready-to-install genloom plugin: pyproject with the entry point, hook "
                    "module, components, config groups and tests that pass.",
    )
    parser.add_argument("name", help="plugin name: lowercase, e.g. 'melody' -> genloom-melody")
    parser.add_argument("--modality", choices=MODALITIES, default=None,
                        help="what the starting model generates (default: other, 2-D points)")
    parser.add_argument("--generator-only", metavar="PRESET", default=None,
                        help="write only a generator, reusing the dataset, encoder and decoder of the "
                             "installed pipeline=PRESET (another plugin's, which becomes a dependency)")
    parser.add_argument("--directory", type=Path, default=Path("."),
                        help="where to create genloom-NAME/ (default: here)")
    args = parser.parse_args(argv)
    if args.generator_only and args.modality:
        parser.error("--generator-only takes its data from the preset: leave out --modality")
    try:
        files = None
        if args.generator_only:
            from genloom.plugins import active

            check_name(args.name)
            files = render_generator_only(args.name, reuse(active(), args.generator_only))
        root = write(args.name, args.modality or "other", args.directory, files)
    except (ValueError, FileExistsError) as err:
        print(f"genloom new-plugin: {err}", file=sys.stderr)
        return 1
    print(f"wrote {root}/\nnext:\n"
          f"  pip install -e '{root}[test]'\n"
          f"  genloom plugins --check\n"
          f"  genloom describe pipeline={args.name}_debug\n"
          f"  genloom train pipeline={args.name}_debug\n"
          f"  pytest {root}")
    return 0
