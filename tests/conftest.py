"""Fixtures for the core's tests: a controlled plugin set, never the installed one."""

from __future__ import annotations

from pathlib import Path

import fake_plugin
import pytest
from genloom import plugins
from genloom.plugins import PluginSet, load_plugins
from hydra.core.global_hydra import GlobalHydra
from venvs import build_wheels, core_source


@pytest.fixture
def fake_plugins() -> PluginSet:
    """The process uses only the fake plugin for the duration of a test."""
    plugin_set = load_plugins([fake_plugin.source()], strict=True, disabled=[])
    plugins.set_active(plugin_set)
    yield plugin_set
    plugins.set_active(None)
    GlobalHydra.instance().clear()


@pytest.fixture
def two_stage_plugins() -> PluginSet:
    """The fake plugins (counting, and the two-stage quantiser) and genloom's built-in one, nothing else."""
    sources = [fake_plugin.source(), fake_plugin.two_stage_source(), fake_plugin.builtin_source()]
    plugin_set = load_plugins(sources, strict=True, disabled=[])
    plugins.set_active(plugin_set)
    yield plugin_set
    plugins.set_active(None)
    GlobalHydra.instance().clear()
@pytest.fixture(scope="session")
def core_wheel(tmp_path_factory) -> Path:
    """A folder holding the core's wheel, built once per session from a clean copy of its sources."""
    tmp = tmp_path_factory.mktemp("core-wheel")
    return build_wheels(tmp / "dist", core_source(tmp))
