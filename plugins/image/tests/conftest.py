"""Fixtures shared by the image plugin's tests."""

import pytest
from genloom import plugins
from genloom.plugins import PluginSet, PluginSource, load_plugins
from hydra.core.global_hydra import GlobalHydra


def load_image_plugin() -> PluginSet:
    """This plugin alone, loaded the way genloom loads any plugin, whatever else is installed."""
    import genloom_image.plugin

    source = PluginSource(name="image", load=lambda: genloom_image.plugin, module="genloom_image.plugin")
    return load_plugins([source], strict=True, disabled=())


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
