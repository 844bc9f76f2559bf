import json
import re
import subprocess
import sys
from pathlib import Path

import fake_plugin
import misbehaving
import pytest
from genloom import cli, doctor, hookimpl, plugins
from genloom.cli import describe
from genloom.plugins import PluginLoadError, PluginSource, core_requirement, incompatibility, load_plugins
from genloom.registry import RegistryError


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
    assert ("generator 'bigram' is registered by 2 plugins, so genloom uses neither: 'fake' (genloom-fake "
            "0.0.1, fake_plugin.components:Bigram) and 'fake_again' (fake_plugin.components:Bigram)"
            ) in problems
    assert ("config option generator=bigram is shipped by 2 plugins, so genloom uses neither: 'copycat' "
            "(fake_plugin.conf) and 'fake' (genloom-fake 0.0.1, fake_plugin.conf)") in problems
    assert ("generator 'ghost' of plugin 'ghostly' does not import: ModuleNotFoundError: No module named "
            "'no_such_package'") in problems
    checks = {c.name: c for c in report.components[("fake", "genloom-fake")]}
    assert "bigram" not in checks  # it belongs to nobody: the clash above is its report
    assert checks["counting"].error is None and checks["counting"].import_seconds >= 0
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
        "genloom_register_components", "genloom_register_config", "genloom_train_start",
        "genloom_optimizer_step", "genloom_train_step_end", "genloom_evaluated",
        "genloom_checkpoint_saved", "genloom_train_end", "genloom_sample_written",
    ]
    assert "register(kind, name, target" in out


# ---------------------------------------------------------------------------- a misbehaving plugin


def fake_as(name: str, distribution: str = "genloom-fake") -> PluginSource:
    source = fake_plugin.source(name)
    return PluginSource(name, source.load, source.module, distribution, source.version)


def test_sys_exit_at_import_quarantines_the_plugin_instead_of_ending_the_process():
    plugin_set = load_plugins([misbehaving.source("exits_at_import"), fake_plugin.source()], strict=False,
                              disabled=[])
    exiting, fake = plugin_set.plugins
    assert exiting.status == "broken" and fake.status == "ok"
    assert exiting.error == "SystemExit: the plugin called sys.exit()"
    assert plugin_set.registry.names("generator") == ["bigram"]


def test_sys_exit_in_a_hook_quarantines_the_plugin_and_strict_mode_reports_it():
    sources = [misbehaving.source("exits_in_hook"), fake_plugin.source()]
    exiting, fake = load_plugins(sources, strict=False, disabled=[]).plugins
    assert (exiting.status, exiting.error) == ("broken", "SystemExit: the plugin called sys.exit(3)")
    assert exiting.components == {}
    with pytest.raises(PluginLoadError, match=r"plugin 'exits_in_hook' .*called sys.exit\(3\)"):
        load_plugins(sources, strict=True, disabled=[])


def test_ctrl_c_while_a_plugin_loads_is_not_taken_for_a_broken_plugin():
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_plugins([PluginSource("slow", interrupted, "slow.hooks")], strict=False, disabled=[])


@pytest.mark.parametrize("twin_name", ["aaa_twin", "zzz_twin"])  # sorting first or last: same result
def test_a_component_name_two_plugins_register_goes_to_neither(twin_name):
    sources = sorted([fake_plugin.source("fake"), misbehaving.source("twin", twin_name, "genloom-twin")],
                     key=lambda s: s.name)
    plugin_set = load_plugins(sources, strict=False, disabled=[])
    assert {p.name: p.status for p in plugin_set.plugins} == {"fake": "ok", twin_name: "ok"}
    # Each plugin keeps every registration nobody else claims.
    assert plugin_set.registry.names("generator") == ["twin_only"]
    assert plugin_set.registry.names("encoder") == ["digits"]
    with pytest.raises(RegistryError) as caught:
        plugin_set.registry.entry("generator", "bigram")
    message = str(caught.value)
    assert "generator 'bigram' is registered by 2 plugins, so genloom uses neither:" in message
    assert "'fake' (genloom-fake 0.0.1, fake_plugin.components:Bigram)" in message
    assert f"'{twin_name}' (genloom-twin 6.6.6, fake_plugin.components:Bigram)" in message
    assert "disable the others: GENLOOM_DISABLE_PLUGINS=genloom-" in message
    assert "=genloom-fake" in message and "=genloom-twin" in message
    by_name = {p.name: p for p in plugin_set.plugins}
    assert by_name["fake"].clashes == by_name[twin_name].clashes == [message]
    assert f"  clash: {message}" in describe(plugin_set)


def test_strict_mode_makes_a_component_clash_fatal():
    sources = [fake_plugin.source("fake"), misbehaving.source("twin", "twin", "genloom-twin")]
    with pytest.raises(PluginLoadError, match="generator 'bigram' is registered by 2 plugins"):
        load_plugins(sources, strict=True, disabled=[])


def test_two_distributions_with_one_entry_point_name_keep_their_own_components():
    sources = [fake_as("shared", "genloom-first"), misbehaving.source("twin", "shared", "genloom-second")]
    plugin_set = load_plugins(sources, strict=False, disabled=[])
    assert [(p.distribution, p.status, p.error) for p in plugin_set.plugins] == [
        ("genloom-first", "ok", None), ("genloom-second", "ok", None)]
    assert plugin_set.registry.names("generator") == ["twin_only"]
    assert plugin_set.registry.names("dataset") == ["counting"]
    assert len(plugin_set.manager.get_plugins()) == 2


def test_quarantining_a_plugin_never_withdraws_one_of_the_same_name():
    sources = [fake_as("shared", "genloom-first"), PluginSource("shared", HalfwayPlugin, "halfway.hooks")]
    plugin_set = load_plugins(sources, strict=False, disabled=[])
    assert [p.status for p in plugin_set.plugins] == ["ok", "broken"]
    assert plugin_set.registry.names("generator") == ["bigram"]
    assert plugin_set.registry.entry("generator", "bigram").plugin == "shared"
    assert len(plugin_set.manager.get_plugins()) == 1


def test_the_doctor_survives_a_component_that_raises_at_import():
    sources = [fake_plugin.source(), misbehaving.source("raises_at_component_import", "fragile")]
    report = doctor.check(load_plugins(sources, strict=False, disabled=[]))
    assert report.problems == [
        "generator 'fragile' of plugin 'fragile' does not import: RuntimeError: fragile: no GPU driver found"]


@pytest.mark.parametrize("args", [["plugins", "--json"], ["plugins", "--check", "--json"]])
def test_a_plugin_printing_to_stdout_does_not_break_the_json(monkeypatch, capsys, args):
    sys.modules.pop("misbehaving.chatty_components", None)  # so that it prints when imported again
    sources = [fake_plugin.source(), misbehaving.source("chatty")]
    monkeypatch.setattr(plugins, "entry_point_sources", lambda: sources)
    plugins.set_active(None)
    try:
        assert cli.main(args) == 0
    finally:
        plugins.set_active(None)
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    names = [p["name"] for p in (report["plugins"] if "--check" in args else report)]
    assert names == ["fake", "chatty"]
    assert "chatty: registering my components" in captured.err
    if "--check" in args:
        assert "chatty: components imported" in captured.err


def test_strict_mode_prints_one_message_and_still_reports(monkeypatch, capsys):
    monkeypatch.setenv("GENLOOM_STRICT_PLUGINS", "1")
    monkeypatch.setattr(plugins, "entry_point_sources", lambda: [broken_source(), fake_plugin.source()])
    plugins.set_active(None)
    try:
        assert cli.main(["train", "pipeline=counting"]) == 1
        err = capsys.readouterr().err
        assert err == (
            "genloom: plugin 'broken' (broken_plugin.hooks) failed to load: ImportError: No module named "
            "'missing_dependency' (fatal because GENLOOM_STRICT_PLUGINS is set; unset it to carry on "
            "without what is broken)\n")
        assert cli.main(["plugins", "--check", "--json"]) == 1
        captured = capsys.readouterr()
        report = json.loads(captured.out)
        assert [p["status"] for p in report["plugins"]] == ["broken", "ok"]
        assert captured.err == err  # the same one message, no traceback
    finally:
        plugins.set_active(None)


def install_distribution(site: Path, name: str, entry_points: dict[str, str]) -> None:
    """A hand-written ``*.dist-info``: a real installed distribution to importlib.metadata, no pip."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{ep} = {module}\n" for ep, module in entry_points.items())
    (info / "entry_points.txt").write_text(f"[genloom]\n{lines}")


def test_installed_misbehaving_distributions_are_each_reported_and_never_take_others_down(tmp_path):
    site = tmp_path / "site"
    install_distribution(site, "genloom-first", {"shared": "fake_plugin.hooks"})
    install_distribution(site, "genloom-second", {"shared": "misbehaving.twin"})
    install_distribution(site, "genloom-exiter", {"aaa_exiter": "misbehaving.exits_at_import"})
    tests_dir = str(Path(__file__).parent)
    env = {"PYTHONPATH": f"{site}:{tests_dir}", "PATH": ""}
    out = subprocess.run([sys.executable, "-m", "genloom", "plugins", "--json"], capture_output=True,
                         text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    ours = {p["distribution"]: p for p in json.loads(out.stdout) if p["distribution"] in (
        "genloom-first", "genloom-second", "genloom-exiter")}
    assert {d: p["status"] for d, p in ours.items()} == {
        "genloom-exiter": "broken", "genloom-first": "ok", "genloom-second": "ok"}
    assert ours["genloom-exiter"]["error"] == "SystemExit: the plugin called sys.exit()"
    assert ours["genloom-first"]["components"]["dataset"] == ["counting"]
    assert ours["genloom-second"]["components"]["generator"] == ["bigram", "twin_only"]
    (clash,) = ours["genloom-first"]["clashes"]
    assert clash == ours["genloom-second"]["clashes"][0]
    assert "'shared' (genloom-first 1.0, fake_plugin.components:Bigram) and 'shared' (genloom-second" in clash
    assert "GENLOOM_DISABLE_PLUGINS=genloom-first or GENLOOM_DISABLE_PLUGINS=genloom-second" in clash
