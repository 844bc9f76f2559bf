import json
import re
import subprocess
import sys
from pathlib import Path

import fake_plugin
import pytest
from genloom import cli, doctor, hookimpl, plugins
from genloom.cli import describe
from genloom.plugins import PluginLoadError, PluginSource, core_requirement, incompatibility, load_plugins


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


def versioned_source(requires: str | None) -> PluginSource:
    source = fake_plugin.source()
    return PluginSource(source.name, source.load, source.module, source.distribution, source.version,
                        requires=requires)


def test_a_plugin_for_another_genloom_is_quarantined_naming_both_versions():
    plugin_set = load_plugins([versioned_source(">=0.2,<0.3")], strict=False, disabled=[])
    (info,) = plugin_set.plugins
    assert info.status == "broken" and info.requires == ">=0.2,<0.3"
    assert "genloom-fake 0.0.1 supports genloom >=0.2,<0.3, but this is genloom 0.1.0" in info.error
    assert plugin_set.registry.names("generator") == []
    with pytest.raises(PluginLoadError, match="supports genloom >=0.2,<0.3"):
        load_plugins([versioned_source(">=0.2,<0.3")], strict=True, disabled=[])


def test_a_plugin_in_range_or_without_a_range_loads():
    for requires in (">=0.1,<0.2", None):
        (info,) = load_plugins([versioned_source(requires)], strict=True, disabled=[]).plugins
        assert info.status == "ok"


def test_the_range_comes_from_the_distributions_requirement_on_genloom():
    assert core_requirement(["torch>=2.4", "genloom<0.2,>=0.1", "pillow"]) == "<0.2,>=0.1"
    assert core_requirement(["genloom; extra == 'dev'", "torch"]) is None
    assert core_requirement(["genloom-text>=0.1"]) is None
    assert incompatibility(versioned_source(">=0.1"), core_version="0.1.0") is None
    assert "this is genloom 1.0.0" in incompatibility(versioned_source("<1"), core_version="1.0.0")


def test_listing_records_the_hooks_each_plugin_implements(fake_plugins):
    (info,) = fake_plugins.plugins
    assert info.hooks == ["genloom_register_components", "genloom_register_config"]


class ConfigOnlyPlugin:
    """Ships a copy of the fake plugin's config package: every option clashes."""

    @hookimpl
    def genloom_register_config(self, register):
        register("fake_plugin.conf")


class BigramTwin:
    @hookimpl
    def genloom_register_components(self, register):
        register("generator", "bigram", "fake_plugin.components:Bigram")


class MissingTargetPlugin:
    @hookimpl
    def genloom_register_components(self, register):
        register("generator", "ghost", "no_such_package.model:Ghost")


def test_the_doctor_reports_clashes_and_components_that_do_not_import(capsys):
    sources = [
        fake_plugin.source("fake"),
        PluginSource("fake_again", BigramTwin, "twin.hooks"),  # registers bigram a second time
        PluginSource("copycat", ConfigOnlyPlugin, "copycat.hooks"),
        PluginSource("ghostly", MissingTargetPlugin, "ghostly.hooks"),
    ]
    report = doctor.check(load_plugins(sources, strict=False, disabled=[]))
    problems = "\n".join(report.problems)
    assert "plugin 'fake_again' is broken" in problems
    assert "registered twice: by plugin 'fake'" in problems and "by plugin 'fake_again'" in problems
    assert "config option generator=bigram is shipped by plugins 'fake', 'copycat'" in problems
    assert "generator 'ghost' of plugin 'ghostly' does not import: No module named 'no_such_package'" in (
        problems)
    checks = {c.name: c for c in report.components["fake"]}
    assert checks["bigram"].error is None and checks["bigram"].import_seconds >= 0
    text = doctor.describe(report)
    assert "hooks:         genloom_register_components, genloom_register_config" in text
    assert f"{len(report.problems)} problem(s):" in text
    assert json.loads(json.dumps(report.as_dict()))["problems"] == report.problems


def test_plugins_check_exits_nonzero_on_a_problem(capsys):
    plugins.set_active(load_plugins([fake_plugin.source()], strict=True, disabled=[]))
    try:
        assert cli.main(["plugins", "--check"]) == 0
        assert "no problems found" in capsys.readouterr().out
        plugins.set_active(load_plugins([fake_plugin.source(), PluginSource("ghostly", MissingTargetPlugin,
                                                                             "ghostly.hooks")]))
        assert cli.main(["plugins", "--check", "--json"]) == 1
        assert "no_such_package" in json.loads(capsys.readouterr().out)["problems"][0]
    finally:
        plugins.set_active(None)


def test_the_hook_reference_lists_every_hook_in_order(capsys):
    assert cli.main(["hooks"]) == 0
    out = capsys.readouterr().out
    names = re.findall(r"^## (genloom_\w+)", out, flags=re.M)
    assert names == [
        "genloom_register_components", "genloom_register_config", "genloom_train_step_end",
        "genloom_evaluated", "genloom_checkpoint_saved", "genloom_sample_written",
    ]
    assert "register(kind, name, target" in out
