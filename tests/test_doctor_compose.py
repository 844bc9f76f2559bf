"""`genloom plugins --check` composes every config option of every plugin and names what is missing."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import fake_plugin
import pytest
from genloom import cli, doctor, plugins
from genloom.plugins import PluginSource, load_plugins

REUSING_PRESET = """\
# @package _global_
defaults:
  - /dataset: counting
  - /encoder: digits
  - /generator: bigram
  - /decoder: digits
"""


@pytest.fixture
def reuser(tmp_path: Path, monkeypatch) -> Iterator[PluginSource]:
    """A plugin that ships one preset built from the fake plugin's components and options."""
    package = tmp_path / "reuser"
    (package / "conf" / "pipeline").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "conf" / "__init__.py").write_text("")
    (package / "conf" / "pipeline" / "reusing.yaml").write_text(REUSING_PRESET)
    (package / "hooks.py").write_text(textwrap.dedent("""
        from genloom import hookimpl

        @hookimpl
        def genloom_register_config(register):
            register("reuser.conf")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    forget = [m for m in sys.modules if m.split(".")[0] == "reuser"]  # another test's copy
    for module in forget:
        monkeypatch.delitem(sys.modules, module)
    yield PluginSource("reuser", lambda: importlib.import_module("reuser.hooks"), "reuser.hooks")
    for module in [m for m in sys.modules if m.split(".")[0] == "reuser"]:
        del sys.modules[module]


def test_a_preset_needing_a_disabled_plugin_names_it(reuser) -> None:
    plugin_set = load_plugins([fake_plugin.source("fake"), reuser], strict=False, disabled=["fake"])
    problems = doctor.check(plugin_set).problems
    assert len(problems) == 1, problems
    assert problems[0].startswith("config pipeline=reusing of plugin 'reuser' needs ")
    assert "which plugin 'fake' ships, but 'fake' is disabled (GENLOOM_DISABLE_PLUGINS)" in problems[0]


def test_a_preset_needing_an_absent_plugin_names_the_option(reuser) -> None:
    problems = doctor.check(load_plugins([reuser], strict=False, disabled=[])).problems
    assert len(problems) == 1, problems
    assert "which no loaded plugin ships: install or enable the plugin that ships" in problems[0]
    assert "declare it as a dependency of reuser" in problems[0]


def test_every_option_of_a_healthy_set_composes(reuser) -> None:
    plugin_set = load_plugins([fake_plugin.source("fake"), reuser], strict=False, disabled=[])
    assert doctor.compose_failures(plugin_set) == []


def test_a_config_that_does_not_compose_is_a_problem(reuser, tmp_path: Path) -> None:
    (tmp_path / "reuser" / "conf" / "pipeline" / "broken.yaml").write_text("defaults:\n  - [oops\n")
    problems = doctor.compose_failures(load_plugins([fake_plugin.source("fake"), reuser], disabled=[]))
    assert len(problems) == 1 and problems[0].startswith("config pipeline=broken of plugin 'reuser' "
                                                         "does not compose: "), problems


def test_plugins_check_reports_it_and_fails(reuser, capsys) -> None:
    plugins.set_active(load_plugins([fake_plugin.source("fake"), reuser], strict=False, disabled=["fake"]))
    try:
        assert cli.main(["plugins", "--check"]) == 1
        assert "which plugin 'fake' ships, but 'fake' is disabled" in capsys.readouterr().out
        assert cli.main(["plugins", "--check", "--json"]) == 1
        assert "'fake' is disabled" in json.loads(capsys.readouterr().out)["problems"][0]
    finally:
        plugins.set_active(None)
