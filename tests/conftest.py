"""Fixtures for the core's tests: a controlled plugin set, never the installed one."""

from __future__ import annotations

import fake_plugin
import pytest
from genloom import plugins
from genloom.plugins import PluginSet, load_plugins
from hydra.core.global_hydra import GlobalHydra


@pytest.fixture
def fake_plugins() -> PluginSet:
    """The process uses only the fake plugin for the duration of a test."""
    plugin_set = load_plugins([fake_plugin.source()], strict=True, disabled=[])
    plugins.set_active(plugin_set)
    yield plugin_set
    plugins.set_active(None)
    GlobalHydra.instance().clear()
