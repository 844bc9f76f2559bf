"""Fixtures shared by the text plugin's tests."""

import pytest
from genloom.plugins import PluginSet, PluginSource, load_plugins


@pytest.fixture
def text_plugin() -> PluginSet:
    """This plugin alone, loaded the way genloom loads any plugin, whatever else is installed."""
    import genloom_text.plugin

    source = PluginSource(name="text", load=lambda: genloom_text.plugin, module="genloom_text.plugin")
    return load_plugins([source], strict=True, disabled=())
