"""Fixtures shared by the loggers plugin's tests."""

import pytest
from genloom.plugins import PluginSet
from genloom.testing import load_only, only_plugins

# This plugin and the text plugin, whose tiny text_debug preset the tests train, loaded the
# way genloom loads any plugin, whatever else is installed.
PLUGINS = {"loggers": "genloom_loggers.plugin", "text": "genloom_text.plugin"}


@pytest.fixture
def loggers_plugin() -> PluginSet:
    """These plugins, freshly loaded: a test may register more hooks on them."""
    return load_only(PLUGINS)


@pytest.fixture(scope="module")
def only_loggers() -> PluginSet:
    """The process sees only these plugins while a module's tests run the CLI."""
    with only_plugins(PLUGINS) as plugin_set:
        yield plugin_set
