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

CONF = Path(str(importlib.resources.files("genloom_text.conf")))
YAML_FILES = sorted(CONF.rglob("*.yaml"))
COMPONENT_FILES = [p for p in YAML_FILES if p.parent.name != "pipeline"]
PIPELINES = sorted(p.stem for p in (CONF / "pipeline").glob("*.yaml"))
KIND = {"condition_encoder": "encoder"}  # the registry kind of a config group named otherwise


def test_the_groups_hold_the_expected_files() -> None:
    assert [p.relative_to(CONF).as_posix() for p in YAML_FILES] == [
        "condition_encoder/prefix_bytes.yaml",
        "dataset/pydoc.yaml",
        "dataset/text_files.yaml",
        "decoder/bpe.yaml",
        "decoder/bytes.yaml",
        "encoder/bpe.yaml",
        "encoder/bytes.yaml",
        "generator/transformer.yaml",
        "generator/transformer_debug.yaml",
        "pipeline/text.yaml",
        "pipeline/text_bpe.yaml",
        "pipeline/text_bpe_debug.yaml",
        "pipeline/text_debug.yaml",
    ]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(CONF).as_posix())
def test_every_file_opens_with_a_comment_and_parses(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert isinstance(yaml.safe_load(text), dict)


@pytest.mark.parametrize("path", COMPONENT_FILES, ids=lambda p: p.relative_to(CONF).as_posix())
def test_component_configs_name_a_registered_component_and_its_options(
    path: Path, text_plugin: PluginSet
) -> None:
    kind = KIND.get(path.parent.name, path.parent.name)
    options = yaml.safe_load(path.read_text(encoding="utf-8"))
    name = options.pop("name")
    assert name in text_plugin.registry.names(kind)
    factory = text_plugin.registry.factory(kind, name)
    check_options(factory, options, where=f"{path.name}", prefix=f"{path.parent.name}.")


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_pipeline_presets_show_their_command_and_compose(pipeline: str, tmp_path: Path) -> None:
    header = (CONF / "pipeline" / f"{pipeline}.yaml").read_text(encoding="utf-8").splitlines()
    assert any(line.startswith(f"# genloom train pipeline={pipeline}") for line in header[:3])
    cfg = compose_train(tmp_path, [f"pipeline={pipeline}"])
    tokens = "bpe" if "bpe" in pipeline else "bytes"
    assert cfg.dataset.name == "pydoc" and cfg.encoder.name == tokens
    assert cfg.decoder.name == tokens and cfg.generator.name == "transformer"
    assert cfg.dataset.block_size == cfg.generator.block_size
    assert tokens == "bytes" or cfg.generator.vocab_size == cfg.encoder.vocab_size


def test_the_debug_pipeline_builds_trains_and_samples(text_plugin: PluginSet, tmp_path) -> None:
    cfg = compose_train(tmp_path, ["pipeline=text_debug", "generator.block_size=32"])
    parts = {}
    for kind in ("encoder", "decoder", "generator", "dataset"):
        options = OmegaConf.to_container(cfg[kind], resolve=True)
        parts[kind] = text_plugin.registry.build(kind, options.pop("name"), options)
    train = parts["dataset"].split("train", parts["encoder"])
    batch = torch.stack([train[i]["tokens"] for i in range(4)])  # (4, 33)
    assert batch.shape == (4, 33)
    assert parts["generator"].loss({"tokens": batch})["loss"].isfinite()
    prompt = parts["encoder"].encode("def ")
    (row,) = parts["generator"].generate(1, condition=prompt, max_new_tokens=8)
    assert isinstance(parts["decoder"].decode(row), str)


def compose_train(tmp_path: Path, overrides: list[str]) -> DictConfig:
    """Compose like `genloom train`: a primary config picks a pipeline from this plugin's groups."""
    (tmp_path / "train.yaml").write_text(
        "defaults:\n  - pipeline: ???\n  - _self_\nhydra:\n  searchpath:\n    - pkg://genloom_text.conf\n",
        encoding="utf-8",
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        return compose("train", overrides=overrides)
