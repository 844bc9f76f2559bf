"""A small, real plugin used by the core's tests: a bigram model of counting sequences.

It is registered by the tests' fixtures (never through an entry point), so the core's
tests do not depend on which plugins are installed.
"""

from genloom.plugins import PluginSource


def source(name: str = "fake") -> PluginSource:
    """How a test loads this plugin, as if it were installed as ``genloom-fake 0.0.1``."""

    def load():  # noqa: ANN202
        import fake_plugin.hooks

        return fake_plugin.hooks

    return PluginSource(name, load, "fake_plugin.hooks", "genloom-fake", "0.0.1")


def two_stage_source(name: str = "fake_two_stage") -> PluginSource:
    """The fake Tokenizing stage 1 and its two-stage presets, as ``genloom-fake-two-stage 0.0.1``."""

    def load():  # noqa: ANN202
        import fake_plugin.two_stage_hooks

        return fake_plugin.two_stage_hooks

    return PluginSource(name, load, "fake_plugin.two_stage_hooks", "genloom-fake-two-stage", "0.0.1")


def stopper_source(name: str = "fake_stopper") -> PluginSource:
    """A plugin that requests a stop on one rank (``FAKE_STOP_AT=<rank>:<step>``)."""

    def load():  # noqa: ANN202
        import fake_plugin.stopper_hooks

        return fake_plugin.stopper_hooks

    return PluginSource(name, load, "fake_plugin.stopper_hooks", "genloom-fake-stopper", "0.0.1")


def pauser_source(name: str = "fake_pauser") -> PluginSource:
    """A plugin that holds training at one step until a signal (``FAKE_PAUSE_AT=<step>``)."""

    def load():  # noqa: ANN202
        import fake_plugin.pauser_hooks

        return fake_plugin.pauser_hooks

    return PluginSource(name, load, "fake_plugin.pauser_hooks", "genloom-fake-pauser", "0.0.1")


def builtin_source() -> PluginSource:
    """genloom's built-in plugin (``encoder=from_checkpoint``...), as its entry point loads it.

    Here rather than in ``conftest.py``: a test module cannot import a conftest by name when
    pytest-xdist has several (the plugins' own) on its path.
    """
    import importlib

    import genloom

    return PluginSource("genloom", lambda: importlib.import_module("genloom.builtin"), "genloom.builtin",
                        "genloom", genloom.__version__)
