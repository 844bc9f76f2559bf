"""Fixtures shared by the audio plugin's tests."""

import pytest
from genloom import plugins
from genloom.plugins import PluginSet, PluginSource, load_plugins
from hydra.core.global_hydra import GlobalHydra


def load_audio_plugin() -> PluginSet:
    """This plugin alone, loaded the way genloom loads any plugin, whatever else is installed."""
    import genloom_audio.plugin

    source = PluginSource(name="audio", load=lambda: genloom_audio.plugin, module="genloom_audio.plugin")
    return load_plugins([source], strict=True, disabled=())


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
