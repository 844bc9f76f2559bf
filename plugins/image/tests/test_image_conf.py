"""The config groups: valid YAML, names that exist, keys the factories take, presets that compose."""

import importlib.resources
from pathlib import Path

import pytest
import torch
import yaml
from genloom.plugins import PluginSet
from genloom.registry import check_options
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

CONF = Path(str(importlib.resources.files("genloom_image.conf")))
YAML_FILES = sorted(CONF.rglob("*.yaml"))
COMPONENT_FILES = [p for p in YAML_FILES if p.parent.name not in ("pipeline", "trainer")]
# The two-stage presets (*_tokens*) need genloom-text and the built-in plugin: test_two_stage.py;
# the *_minilm ones genloom-hf's sentence encoder: test_image_minilm.py.
PIPELINES = sorted(
    p.stem for p in (CONF / "pipeline").glob("*.yaml") if "_tokens" not in p.stem and "_minilm" not in p.stem
)
KIND = {"condition_encoder": "encoder"}  # the group a kind of component is configured in


def test_the_groups_hold_the_expected_files() -> None:
    assert [p.relative_to(CONF).as_posix() for p in YAML_FILES] == [
        "dataset/glyphs.yaml",
        "dataset/glyphs_debug.yaml",
        "dataset/image_folder.yaml",
        "dataset/shapes.yaml",
        "dataset/shapes_debug.yaml",
        "decoder/png.yaml",
        "encoder/pixels.yaml",
        "encoder/pixels_debug.yaml",
        "generator/image_fsq.yaml",
        "generator/image_fsq_debug.yaml",
        "generator/vae.yaml",
        "generator/vae_debug.yaml",
        "pipeline/glyphs.yaml",
        "pipeline/glyphs_tokens.yaml",
        "pipeline/glyphs_tokens_debug.yaml",
        "pipeline/glyphs_vq.yaml",
        "pipeline/glyphs_vq_debug.yaml",
        "pipeline/image_debug.yaml",
        "pipeline/image_folder.yaml",
        "pipeline/image_folder_debug.yaml",
        "pipeline/shapes.yaml",
        "pipeline/shapes_debug.yaml",
        "pipeline/shapes_minilm.yaml",
        "pipeline/shapes_minilm_debug.yaml",
        "pipeline/shapes_tokens.yaml",
        "pipeline/shapes_tokens_debug.yaml",
        "pipeline/shapes_tokens_minilm.yaml",
        "pipeline/shapes_tokens_minilm_debug.yaml",
        "pipeline/shapes_vq.yaml",
        "pipeline/shapes_vq_debug.yaml",
        "trainer/image_tokens.yaml",
        "trainer/image_vq.yaml",
    ]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(CONF).as_posix())
def test_every_file_opens_with_a_comment_and_parses(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert isinstance(yaml.safe_load(text), dict)


@pytest.mark.parametrize("path", COMPONENT_FILES, ids=lambda p: p.relative_to(CONF).as_posix())
def test_component_configs_name_a_registered_component_and_its_options(
    path: Path, image_plugin: PluginSet
) -> None:
    kind = KIND.get(path.parent.name, path.parent.name)
    options = yaml.safe_load(path.read_text(encoding="utf-8"))
    name = options.pop("name")
    assert name in image_plugin.registry.names(kind)
    factory = image_plugin.registry.factory(kind, name)
    check_options(factory, options, where=path.name, prefix=f"{path.parent.name}.")


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_pipeline_presets_show_their_command_and_link_their_sizes(pipeline: str, tmp_path: Path) -> None:
    header = (CONF / "pipeline" / f"{pipeline}.yaml").read_text(encoding="utf-8").splitlines()
    assert header[0] == "# @package _global_"
    assert any(line.startswith(f"# genloom train pipeline={pipeline}") for line in header[:3])
    cfg = compose_train(tmp_path, [f"pipeline={pipeline}"])
    assert cfg.pipeline.name == pipeline
    resolution = cfg.dataset.get("resolution", cfg.encoder.resolution)  # a folder's images are resized
    assert resolution == cfg.encoder.resolution == cfg.generator.resolution
    assert cfg.generator.channels == cfg.encoder.channels
    conditioned = cfg.generator.condition if "condition" in cfg.generator else "none"  # image_fsq: none
    assert cfg.dataset.condition == conditioned
    if conditioned == "caption":
        assert cfg.generator.caption_buckets == cfg.condition_encoder.buckets


def test_the_presets_condition_on_what_their_commands_promise(tmp_path: Path) -> None:
    glyphs = compose_train(tmp_path, ["pipeline=glyphs"])
    assert (glyphs.generator.condition, glyphs.encoder.channels, glyphs.generator.num_classes) == (
        "label",
        1,
        10,
    )
    shapes = compose_train(tmp_path, ["pipeline=shapes"])
    assert (shapes.generator.condition, shapes.condition_encoder.name) == ("caption", "caption_words")


def test_the_debug_pipeline_builds_trains_and_samples(image_plugin: PluginSet, tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, ["pipeline=image_debug"])
    parts = {}
    for kind in ("encoder", "decoder", "generator", "dataset"):
        options = OmegaConf.to_container(cfg[kind], resolve=True)
        parts[kind] = image_plugin.registry.build(kind, options.pop("name"), options)
    train = parts["dataset"].split("train", parts["encoder"])
    batch = {key: torch.stack([train[i][key] for i in range(4)]) for key in ("image", "condition")}
    assert batch["image"].shape == (4, 3, 8, 8)
    assert parts["generator"].loss(batch)["loss"].isfinite()
    (image,) = parts["generator"].generate(1, condition=torch.tensor(3))
    assert parts["decoder"].decode(image).size == (8, 8)


def compose_train(tmp_path: Path, overrides: list[str]) -> DictConfig:
    """Compose like `genloom train`: genloom's trainer group, then a pipeline from this plugin's groups."""
    (tmp_path / "train.yaml").write_text(
        "defaults:\n  - trainer: default\n  - pipeline: ???\n  - _self_\nhydra:\n  searchpath:\n"
        "    - pkg://genloom.conf\n    - pkg://genloom_image.conf\n    - pkg://genloom_blocks.conf\n",
        encoding="utf-8",
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        return compose("train", overrides=overrides)
