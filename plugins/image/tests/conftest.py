"""Fixtures shared by the image plugin's tests."""

import pytest
from genloom import plugins
from genloom.plugins import PluginSet, PluginSource, load_plugins
from hydra.core.global_hydra import GlobalHydra


def load_image_plugin() -> PluginSet:
    """This plugin and genloom-blocks (a dependency: its caption_words is the caption presets'),
    loaded the way genloom loads any plugin, whatever else is installed."""
    import genloom_blocks.plugin
    import genloom_image.plugin

    sources = [
        PluginSource(name="image", load=lambda: genloom_image.plugin, module="genloom_image.plugin"),
        PluginSource(name="blocks", load=lambda: genloom_blocks.plugin, module="genloom_blocks.plugin"),
    ]
    return load_plugins(sources, strict=True, disabled=())


@pytest.fixture
def image_plugin() -> PluginSet:
    return load_image_plugin()


@pytest.fixture(scope="module")
def only_image() -> PluginSet:
    """The process sees only this plugin while a module's tests run the CLI."""
    plugin_set = load_image_plugin()
    plugins.set_active(plugin_set)
    yield plugin_set
    plugins.set_active(None)
    GlobalHydra.instance().clear()
