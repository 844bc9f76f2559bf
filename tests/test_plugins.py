import json
import subprocess
import sys
from pathlib import Path

import fake_plugin
import pytest
from genloom import hookimpl
from genloom.cli import describe
from genloom.plugins import PluginLoadError, PluginSource, load_plugins


def broken_source(name="broken"):
    def load():
        raise ImportError("No module named 'missing_dependency'")

    return PluginSource(name, load, "broken_plugin.hooks", "genloom-broken", "9.9")


class HalfwayPlugin:
    """Registers one component, then fails."""

    @hookimpl
    def genloom_register_components(self, register):
        register("generator", "half", "fake_plugin.components:Bigram")
        raise RuntimeError("registration blew up")


def hook_failing_source():
    return PluginSource("halfway", HalfwayPlugin, "halfway.hooks")


def test_a_broken_plugin_is_quarantined_and_the_rest_still_works():
    plugin_set = load_plugins([broken_source(), fake_plugin.source()], strict=False, disabled=[])
    status = {p.name: p.status for p in plugin_set.plugins}
    assert status == {"broken": "broken", "fake": "ok"}
    broken = plugin_set.plugins[0]
    assert "missing_dependency" in broken.error
    assert plugin_set.registry.names("generator") == ["bigram"]
    listing = describe(plugin_set)
    assert "broken (genloom-broken 9.9): broken" in listing
    assert "error: ImportError: No module named 'missing_dependency'" in listing


def test_a_plugin_failing_inside_a_hook_leaves_nothing_behind():
    plugin_set = load_plugins([hook_failing_source(), fake_plugin.source()], strict=False, disabled=[])
    assert plugin_set.plugins[0].status == "broken"
    assert "registration blew up" in plugin_set.plugins[0].error
    assert "half" not in plugin_set.registry.names("generator")
    assert len(plugin_set.manager.get_plugins()) == 1


def test_strict_mode_makes_a_broken_plugin_fatal():
    with pytest.raises(PluginLoadError, match="plugin 'broken'.*missing_dependency"):
        load_plugins([broken_source(), fake_plugin.source()], strict=True, disabled=[])


def test_strict_mode_and_disabling_read_the_environment(monkeypatch):
    monkeypatch.setenv("GENLOOM_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError):
        load_plugins([broken_source()])
    monkeypatch.setenv("GENLOOM_DISABLE_PLUGINS", "broken, genloom-fake")
    plugin_set = load_plugins([broken_source(), fake_plugin.source()])
    assert [p.status for p in plugin_set.plugins] == ["disabled", "disabled"]
    assert plugin_set.registry.names("generator") == []


def test_listing_reports_components_and_config_groups(fake_plugins):
    (info,) = fake_plugins.plugins
    assert info.components == {
        "encoder": ["digits"], "decoder": ["digits"], "generator": ["bigram"], "dataset": ["counting"],
    }
    assert info.config_groups["generator"] == ["bigram", "bigram_wide"]
    assert info.config_groups["pipeline"] == ["counting"]
    assert fake_plugins.versions() == {"genloom-fake": "0.0.1"}


LIST_WITHOUT_TORCH = """
import contextlib, io, json, sys
import fake_plugin
from genloom import cli, plugins
plugins.set_active(plugins.load_plugins([fake_plugin.source()]))
listing = io.StringIO()
with contextlib.redirect_stdout(listing):
    assert cli.main(["plugins", "--json"]) == 0
    assert cli.main(["plugins"]) == 0
heavy = sorted(m for m in ("torch", "hydra", "fake_plugin.components") if m in sys.modules)
print(json.dumps({"listing": listing.getvalue(), "heavy": heavy}))
"""


def test_listing_plugins_imports_neither_torch_nor_model_code(tmp_path):
    tests_dir = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", LIST_WITHOUT_TORCH], capture_output=True, text=True, check=True,
        cwd=tmp_path, env={"PYTHONPATH": tests_dir, "PATH": ""},
    ).stdout
    result = json.loads(out)
    assert result["heavy"] == []
    assert '"name": "fake"' in result["listing"]
    assert "generator:         bigram" in result["listing"]
