"""The blocks plugin as genloom sees it: a light hook module that registers caption_words and its config."""

import importlib.metadata
import importlib.resources
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from genloom.plugins import PluginSet, PluginSource, load_plugins
from genloom.registry import check_options

CONF = Path(str(importlib.resources.files("genloom_blocks.conf")))


@pytest.fixture
def blocks_plugin() -> PluginSet:
    """This plugin alone, loaded the way genloom loads any plugin, whatever else is installed."""
    import genloom_blocks.plugin

    source = PluginSource(name="blocks", load=lambda: genloom_blocks.plugin, module="genloom_blocks.plugin")
    return load_plugins([source], strict=True, disabled=())


def test_the_hook_module_imports_no_torch() -> None:
    code = "import sys, genloom_blocks.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_distribution_declares_the_entry_point() -> None:
    entry_points = importlib.metadata.entry_points(group="genloom")
    assert any(ep.name == "blocks" and ep.value == "genloom_blocks.plugin" for ep in entry_points)


def test_registers_caption_words_and_its_config_group(blocks_plugin: PluginSet) -> None:
    (info,) = blocks_plugin.plugins
    assert info.status == "ok", info.error
    assert info.components == {"encoder": ["caption_words"]}
    assert info.config_groups == {"condition_encoder": ["caption_words"]}
    options = yaml.safe_load((CONF / "condition_encoder" / "caption_words.yaml").read_text(encoding="utf-8"))
    assert options.pop("name") == "caption_words"
    factory = blocks_plugin.registry.factory("encoder", "caption_words")
    check_options(factory, options, where="caption_words.yaml")
    encoder = blocks_plugin.registry.build("encoder", "caption_words", options)
    assert encoder.encode("a red star").shape == (options["max_words"],)
