"""The plugin as genloom sees it: a light hook module that registers buildable components."""

import importlib.metadata
import subprocess
import sys

import torch
from genloom.plugins import PluginSet


def test_the_hook_module_does_not_import_torch() -> None:
    code = "import sys, genloom_text.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_distribution_declares_the_entry_point() -> None:
    entry_points = importlib.metadata.entry_points(group="genloom")
    assert any(ep.name == "text" and ep.value == "genloom_text.plugin" for ep in entry_points)


def test_registers_every_component_and_its_config(text_plugin: PluginSet) -> None:
    (info,) = text_plugin.plugins
    assert info.status == "ok", info.error
    assert info.components == {
        "encoder": ["bytes", "bpe", "prefix_bytes"],
        "decoder": ["bytes", "bpe"],
        "generator": ["transformer"],
        "dataset": ["pydoc", "text_files"],
    }
    assert all(entry.summary for entry in text_plugin.registry)
    assert text_plugin.config_modules == ["genloom_text.conf"]
    assert info.config_groups == {
        "condition_encoder": ["prefix_bytes"],
        "dataset": ["pydoc", "text_files"],
        "decoder": ["bpe", "bytes"],
        "encoder": ["bpe", "bytes"],
        "generator": ["transformer", "transformer_debug"],
        "pipeline": ["text", "text_bpe", "text_bpe_debug", "text_debug"],
    }


def test_components_build_through_the_registry(text_plugin: PluginSet, tmp_path) -> None:
    registry = text_plugin.registry
    encoder = registry.build("encoder", "bytes")
    decoder = registry.build("decoder", "bytes")
    generator = registry.build("generator", "transformer", {"block_size": 8, "n_embd": 16})
    assert isinstance(generator, torch.nn.Module)
    registry.build("dataset", "pydoc", {"block_size": 8})
    (tmp_path / "a.txt").write_text("hello " * 50, encoding="utf-8")
    dataset = registry.build("dataset", "text_files", {"path": str(tmp_path), "block_size": 8})
    batch = dataset.split("train", encoder)[0]["tokens"][None]  # (1, 9)
    assert generator.loss({"tokens": batch})["loss"].isfinite()
    assert decoder.decode(encoder.encode("round trip")) == "round trip"
