"""Fixtures shared by the audio plugin's tests."""

import pytest
from genloom.plugins import PluginSet
from genloom.testing import load_only, only_plugins

# This plugin and genloom-blocks (a dependency: its caption_words is the caption presets'),
# loaded the way genloom loads any plugin, whatever else is installed.
PLUGINS = {"audio": "genloom_audio.plugin", "blocks": "genloom_blocks.plugin"}


def load_audio_plugin() -> PluginSet:
    return load_only(PLUGINS)


@pytest.fixture
def audio_plugin() -> PluginSet:
    return load_audio_plugin()


@pytest.fixture(scope="module")
def only_audio() -> PluginSet:
    """The process sees only this plugin while a module's tests run the CLI."""
    with only_plugins(PLUGINS) as plugin_set:
        yield plugin_set
