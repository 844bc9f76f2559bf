"""``genloom new-plugin NAME``: write a ready-to-install plugin distribution.

The result is a folder ``genloom-NAME/`` with a ``pyproject.toml`` whose entry point names
the hook module, a small but real model of a modality's data in ``components.py``, its
config groups with a real preset and a debug preset, and tests: the contract kit pointed
at the plugin and a train-then-sample run through the CLI. It passes them as written;
``pip install -e "genloom-NAME[test]" && pytest genloom-NAME`` shows it.

The templates are the files beside this module (``*.tmpl``), filled with
:class:`string.Template` (``$name``, ``$package``...).
"""

from __future__ import annotations

import argparse
import importlib.resources
import keyword
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

import genloom

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


def render(name: str, modality: str) -> dict[str, str]:
    """Relative path -> text of every file of the plugin ``genloom-NAME``."""
    spec = MODALITIES_SPEC[modality]
    package = f"genloom_{name}"
    prefix = class_prefix(name)
    major, minor = (int(p) for p in genloom.__version__.split(".")[:2])
    values = {
        "name": name, "package": package, "modality": modality, "title": spec.title,
        "Dataset": f"{prefix}Dataset", "Encoder": f"{prefix}Encoder",
        "Generator": f"{prefix}Model", "Decoder": f"{prefix}Decoder",
        "core_range": f">={major}.{minor},<{major}.{minor + 1}",
        "generator_summary": spec.generator_summary, "dataset_summary": spec.dataset_summary,
        "encoder_summary": spec.encoder_summary, "decoder_summary": spec.decoder_summary,
        "sample_options": spec.sample_options, "sample_condition": spec.sample_condition,
        "sample_condition_cli": spec.sample_condition.strip('"'),
    }
    templates = importlib.resources.files(__name__)

    def fill(template: str) -> str:
        return Template(templates.joinpath(template).read_text(encoding="utf-8")).substitute(values)

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


def write(name: str, modality: str, directory: Path) -> Path:
    """Write ``directory/genloom-NAME`` and return it; refuses to touch an existing folder."""
    if not NAME.match(name) or keyword.iskeyword(name):
        raise ValueError(
            f"plugin name {name!r} must be lowercase letters, digits and underscores, starting "
            "with a letter (it becomes the package genloom_NAME and the config names)"
        )
    if modality not in MODALITIES:
        raise ValueError(f"--modality {modality!r}: choose one of {', '.join(MODALITIES)}")
    root = directory / f"genloom-{name}"
    if root.exists():
        raise FileExistsError(f"{root} already exists; choose another name or remove it")
    for relative, text in render(name, modality).items():
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
    parser.add_argument("--modality", choices=MODALITIES, default="other",
                        help="what the starting model generates (default: other, 2-D points)")
    parser.add_argument("--directory", type=Path, default=Path("."),
                        help="where to create genloom-NAME/ (default: here)")
    args = parser.parse_args(argv)
    try:
        root = write(args.name, args.modality, args.directory)
    except (ValueError, FileExistsError) as err:
        print(f"genloom new-plugin: {err}", file=sys.stderr)
        return 1
    print(f"wrote {root}/\nnext:\n"
          f"  pip install -e '{root}[test]'\n"
          f"  genloom plugins --check\n"
          f"  genloom train pipeline={args.name}_debug\n"
          f"  pytest {root}")
    return 0
