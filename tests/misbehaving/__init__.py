"""Plugins that misbehave in the ways a stranger's plugin might, for the core's loading tests.

Each module is a plugin's hook module (or a component module) that does one bad thing:
exits at import or inside a hook, writes to stdout, raises at component import, or ships
a config option that another plugin already ships. Like ``fake_plugin``, they are loaded
by the tests' own plugin sources, never through an installed entry point.
"""

import importlib

from genloom.plugins import PluginSource


def source(module: str, name: str | None = None, distribution: str | None = None) -> PluginSource:
    """A plugin source for ``misbehaving.<module>``, as if installed as ``distribution``."""
    path = f"misbehaving.{module}"
    return PluginSource(name or module, lambda: importlib.import_module(path), path, distribution, "6.6.6")
