"""Fixtures shared by the image plugin's tests."""

import pytest
from genloom.plugins import PluginSet
from genloom.testing import load_only, only_plugins

# This plugin and genloom-blocks (a dependency: its caption_words is the caption presets'),
# loaded the way genloom loads any plugin, whatever else is installed.
PLUGINS = {"image": "genloom_image.plugin", "blocks": "genloom_blocks.plugin"}


def load_image_plugin() -> PluginSet:
    return load_only(PLUGINS)


@pytest.fixture
def image_plugin() -> PluginSet:
    return load_image_plugin()


@pytest.fixture(scope="module")
def only_image() -> PluginSet:
    """The process sees only this plugin while a module's tests run the CLI."""
    with only_plugins(PLUGINS) as plugin_set:
        yield plugin_set
