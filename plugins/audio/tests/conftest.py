"""Fixtures shared by the audio plugin's tests."""

import pytest
from genloom import plugins
from genloom.plugins import PluginSet, PluginSource, load_plugins
from hydra.core.global_hydra import GlobalHydra


def load_audio_plugin() -> PluginSet:
    """This plugin and genloom-blocks (a dependency: its caption_words is the caption presets'),
    loaded the way genloom loads any plugin, whatever else is installed."""
    import genloom_audio.plugin
    import genloom_blocks.plugin

    sources = [
        PluginSource(name="audio", load=lambda: genloom_audio.plugin, module="genloom_audio.plugin"),
        PluginSource(name="blocks", load=lambda: genloom_blocks.plugin, module="genloom_blocks.plugin"),
    ]
    return load_plugins(sources, strict=True, disabled=())


@pytest.fixture
def audio_plugin() -> PluginSet:
    return load_audio_plugin()


@pytest.fixture(scope="module")
def only_audio() -> PluginSet:
    """The process sees only this plugin while a module's tests run the CLI."""
    plugin_set = load_audio_plugin()
    plugins.set_active(plugin_set)
    yield plugin_set
    plugins.set_active(None)
    GlobalHydra.instance().clear()
