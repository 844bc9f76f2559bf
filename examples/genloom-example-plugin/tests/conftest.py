"""Fixtures for the PixelCNN example's tests: this plugin alone, whatever else is installed."""

import pytest
import torch
from genloom import plugins
from genloom.plugins import PluginSet, PluginSource, load_plugins
from hydra.core.global_hydra import GlobalHydra


def load_pixelcnn_plugin() -> PluginSet:
    """This plugin alone, loaded the way genloom loads any plugin from its entry point."""
    import genloom_pixelcnn.plugin

    source = PluginSource(
        name="pixelcnn", load=lambda: genloom_pixelcnn.plugin, module="genloom_pixelcnn.plugin"
    )
    return load_plugins([source], strict=True, disabled=())


@pytest.fixture
def pixelcnn_plugin() -> PluginSet:
    return load_pixelcnn_plugin()


@pytest.fixture(scope="module")
def only_pixelcnn() -> PluginSet:
    """The process sees only this plugin while a module's tests run the CLI."""
    plugin_set = load_pixelcnn_plugin()
    plugins.set_active(plugin_set)
    yield plugin_set
    plugins.set_active(None)
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> None:
    """The tests' models are tiny: one thread runs them faster, and a busy machine (another
    process on the same cores) cannot stall them at thread barriers, which costs 10-30x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
