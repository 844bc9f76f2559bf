"""The command line, driven in-process with only the fake plugin installed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fake_plugin
import misbehaving
import pytest
from genloom import cli, plugins
from genloom.plugins import PluginSource
from hydra.core.global_hydra import GlobalHydra

DEBUG = ["pipeline=counting", "trainer=debug", "trainer.progress=false"]


def train(run_dir: Path, *overrides: str) -> int:
    return cli.main(["train", *DEBUG, f"hydra.run.dir={run_dir}", *overrides])


def said(capsys) -> str:
    """What a command printed (Hydra logs to stdout, errors go to stderr)."""
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_help_lists_the_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "sample", "eval", "serve", "export", "plugins"):
        assert f"\n  {command} " in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["trian"]) == 2
    commands = "train, sample, eval, serve, export, plugins"
    assert f"unknown command 'trian'; commands: {commands}" in capsys.readouterr().err


def test_python_dash_m_is_the_same_program():
    out = subprocess.run([sys.executable, "-m", "genloom", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: genloom COMMAND" in out.stdout


def test_cfg_job_prints_the_composed_config_with_overrides(fake_plugins, capsys):
    args = ["train", "pipeline=counting", "generator=bigram_wide", "trainer.lr=0.5", "--cfg", "job"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "name: bigram\n  vocab_size: 12" in out
    assert "lr: 0.5" in out
    assert "vocab_size: ${generator.vocab_size}" in out  # the dataset follows the generator


def test_train_help_shows_the_plugins_groups(fake_plugins, capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "genloom train: every argument is a Hydra override" in out
    assert "generator: bigram, bigram_wide" in out
    assert "pipeline: counting" in out


def test_missing_pipeline_names_the_available_ones(fake_plugins, tmp_path, capsys):
    assert cli.main(["train", f"hydra.run.dir={tmp_path}"]) == 1
    assert "choose what to train: pipeline=<preset>; installed presets: counting" in said(capsys)


def test_unknown_choice_names_the_available_ones(fake_plugins, capsys):
    assert cli.main(["train", "pipeline=counting", "generator=nope"]) == 1
    err = capsys.readouterr().err
    assert "Could not find 'generator/nope'" in err
    assert "bigram\n\tbigram_wide" in err


def test_unknown_key_suggests_the_closest_one(fake_plugins, capsys):
    assert cli.main(["train", "pipeline=counting", "trainer.lrr=1"]) == 1
    err = capsys.readouterr().err
    assert "genloom: trainer has no key 'lrr'; did you mean trainer.lr?" in err
    assert "max_steps" in err


def test_unknown_component_option_lists_the_factory_options(fake_plugins, tmp_path, capsys):
    assert train(tmp_path, "+generator.width=3") == 1
    expected = (
        "generator 'bigram' has no option generator.width; it takes: generator.vocab_size, generator.length"
    )
    assert expected in said(capsys)


def test_an_option_a_preset_set_for_a_replaced_component_says_to_pick_another_preset(
    fake_plugins, tmp_path, capsys
):
    # pipeline=counting sets generator.vocab_size for bigram; a swapped-in component that
    # lacks the key must say where the key came from, not only that it is unknown.
    assert train(tmp_path, "+generator.width=3") == 1
    assert "pipeline=counting sets options for the components it chooses" in said(capsys)


def test_train_then_sample_then_eval(fake_plugins, tmp_path, capsys):
    assert train(tmp_path / "run") == 0
    run = tmp_path / "run"
    assert (run / "checkpoints" / "latest").read_text() == "step_000004"
    assert json.loads((run / "plugins.json").read_text()) == {"genloom-fake": "0.0.1"}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
    assert {"val_loss", "val_accuracy"} <= set(records[-1])

    def sample(out, *extra):
        args = ["sample", f"checkpoint={run}", "n=3", "prompt=3", f"hydra.run.dir={out}", *extra]
        assert cli.main(args) == 0
        return [p.read_text() for p in sorted((out / "samples").glob("*.txt"))]

    first = sample(tmp_path / "s1", "seed=7")
    assert len(first) == 3
    assert first == sample(tmp_path / "s2", "seed=7")
    assert first != sample(tmp_path / "s3", "seed=8")
    greedy = sample(tmp_path / "s4", "temperature=0", "max_new_tokens=5")
    assert all(len(text.split()) == 5 for text in greedy) and len(set(greedy)) == 1

    assert cli.main(["eval", f"checkpoint={run}", f"hydra.run.dir={tmp_path / 'e'}"]) == 0
    scores = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert scores["step"] == 4 and scores["loss"] > 0 and 0 <= scores["accuracy"] <= 1


def test_a_label_conditions_sampling_and_excludes_a_prompt(fake_plugins, tmp_path, capsys):
    assert train(tmp_path / "run") == 0
    base = ["sample", f"checkpoint={tmp_path / 'run'}", "n=2", "temperature=0", "max_new_tokens=3"]
    outputs = {}
    for label in (3, 4):
        out = tmp_path / f"label{label}"
        assert cli.main([*base, f"label={label}", f"hydra.run.dir={out}"]) == 0
        outputs[label] = (out / "samples" / "sample_000.txt").read_text()
    assert outputs[3] != outputs[4]
    assert cli.main([*base, "label=3", "prompt=3", f"hydra.run.dir={tmp_path / 'both'}"]) == 1
    assert "give prompt= or label=, not both" in said(capsys)


def test_sampling_option_the_generator_lacks_is_an_error(fake_plugins, tmp_path, capsys):
    assert train(tmp_path / "run") == 0
    args = ["sample", f"checkpoint={tmp_path / 'run'}", "top_p=0.9", f"hydra.run.dir={tmp_path / 's'}"]
    assert cli.main(args) == 1
    assert "does not take top_p; its sampling options are: max_new_tokens, temperature" in said(capsys)


def test_sampling_a_missing_checkpoint_is_a_clear_error(fake_plugins, tmp_path, capsys):
    assert cli.main(["sample", f"checkpoint={tmp_path}", f"hydra.run.dir={tmp_path / 's'}"]) == 1
    assert f"no checkpoint in '{tmp_path}'" in said(capsys)


def test_multirun_sweep_gives_each_job_its_own_run_dir(fake_plugins, tmp_path):
    status = cli.main(["train", "-m", *DEBUG, "trainer.lr=0.01,0.1", f"hydra.sweep.dir={tmp_path}"])
    assert status == 0
    for job in ("0", "1"):
        assert (tmp_path / job / "checkpoints" / "latest").is_file()
    lrs = [json.loads((tmp_path / job / "metrics.jsonl").read_text().splitlines()[0])["lr"] for job in "01"]
    assert lrs == pytest.approx([0.01, 0.1])


# ---------------------------------------------------------------------------- a misbehaving plugin


@pytest.fixture
def installed(monkeypatch):
    """Make ``entry_point_sources`` answer these sources, as if they were installed."""

    def install(*sources):
        monkeypatch.setattr(plugins, "entry_point_sources", lambda: list(sources))
        plugins.set_active(None)

    yield install
    plugins.set_active(None)
    GlobalHydra.instance().clear()


def test_a_plugin_exiting_at_import_does_not_end_the_command(installed, tmp_path, capsys):
    installed(misbehaving.source("exits_at_import"), fake_plugin.source())
    assert cli.main(["plugins"]) == 0
    listing = capsys.readouterr().out
    assert "exits_at_import (misbehaving.exits_at_import): broken" in listing
    assert "error: SystemExit: the plugin called sys.exit()" in listing
    assert train(tmp_path / "run") == 0
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()


def test_a_runtime_hook_calling_sys_exit_is_quarantined_and_training_goes_on(installed, tmp_path, capsys):
    from misbehaving import recorder

    recorder.steps.clear()
    # The recorder is registered first, so pluggy's order calls it after the failing logger.
    installed(fake_plugin.source(), misbehaving.source("recorder"),
              misbehaving.source("exits_in_event", "logger"))
    assert train(tmp_path / "run") == 0
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step_000004"
    assert recorder.steps == [1, 2, 3, 4]  # the other plugin heard every event, the first one included
    out = said(capsys)
    assert out.count("plugin 'logger' failed in genloom_train_step_end (SystemExit: the plugin called "
                     "sys.exit(3)) and is quarantined for the rest of this run") == 1


def test_strict_mode_makes_a_failing_runtime_hook_fatal_in_one_message(installed, monkeypatch, tmp_path,
                                                                       capsys):
    monkeypatch.setenv("GENLOOM_STRICT_PLUGINS", "1")
    installed(fake_plugin.source(), misbehaving.source("exits_in_event", "logger"))
    assert train(tmp_path / "run") == 1
    out = said(capsys)
    assert ("plugin 'logger' failed in genloom_train_step_end (SystemExit: the plugin called sys.exit(3)); "
            "fatal because GENLOOM_STRICT_PLUGINS is set") in out
    assert "Traceback" not in out


def test_a_preset_two_plugins_ship_is_refused_naming_both(installed, tmp_path, capsys):
    installed(fake_plugin.source(), misbehaving.source("shadow", "shadow", "genloom-shadow"))
    assert train(tmp_path / "run") == 1
    out = said(capsys)
    assert ("config option pipeline=counting is shipped by 2 plugins, so genloom uses neither: "
            "'fake' (genloom-fake 0.0.1, fake_plugin.conf) and 'shadow' (genloom-shadow 6.6.6, "
            "misbehaving.shadow_conf)") in out
    assert "GENLOOM_DISABLE_PLUGINS=genloom-fake or GENLOOM_DISABLE_PLUGINS=genloom-shadow" in out
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert cli.main(["train", *DEBUG, "--cfg", "job"]) == 1
    assert "config option pipeline=counting is shipped by 2 plugins" in said(capsys)


def test_a_clash_the_composition_does_not_use_is_only_a_warning(installed, tmp_path, capsys):
    installed(fake_plugin.source(), misbehaving.source("wide_shadow", "wide", "genloom-wide"))
    assert train(tmp_path / "run") == 0
    assert train(tmp_path / "wide", "generator=bigram_wide") == 1
    assert "config option generator=bigram_wide is shipped by 2 plugins" in said(capsys)
    assert not (tmp_path / "wide" / "checkpoints").exists()


def interrupted():
    raise KeyboardInterrupt


@pytest.mark.parametrize("args", [["plugins"], ["plugins", "--check"], ["train", *DEBUG], ["sample", "n=1"]])
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(installed, capsys, args):
    installed(PluginSource("slow", interrupted, "slow.hooks"))
    assert cli.main(args) == 130
    assert capsys.readouterr().err == "genloom: interrupted\n"


def test_ctrl_c_inside_a_hydra_job_before_training_is_one_line_too(fake_plugins, monkeypatch, tmp_path,
                                                                    capsys):
    from genloom import jobs

    monkeypatch.setattr(jobs, "run", lambda command, cfg: interrupted())  # e.g. while a corpus is read
    assert train(tmp_path / "run") == 130
    assert capsys.readouterr().err == "genloom: interrupted\n"


def test_a_genuine_bug_keeps_its_traceback(installed, monkeypatch):
    installed(fake_plugin.source())

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug in genloom")

    monkeypatch.setattr(cli, "describe", bug)
    with pytest.raises(ZeroDivisionError, match="a bug in genloom"):
        cli.main(["plugins"])


SLOW_PLUGIN = """
import os, pathlib, time
pathlib.Path(os.environ["READY_FILE"]).touch()
time.sleep(300)
"""


def test_sigint_while_a_plugin_loads_prints_interrupted(tmp_path):
    """A real SIGINT to a real ``genloom`` process, while an installed plugin is being imported."""
    site = tmp_path / "site"
    (site / "genloom_slow-1.0.dist-info").mkdir(parents=True)
    (site / "genloom_slow-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: genloom-slow\nVersion: 1.0\n")
    (site / "genloom_slow-1.0.dist-info" / "entry_points.txt").write_text("[genloom]\nslow = slow_plugin\n")
    (site / "slow_plugin.py").write_text(SLOW_PLUGIN)
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(site), "READY_FILE": str(ready)}
    env.pop("GENLOOM_DISABLE_PLUGINS", None)
    # The child gets SIGINT's default disposition, as from a terminal: a pytest-xdist worker
    # ignores SIGINT, and an ignored signal stays ignored across exec (Python then raises no
    # KeyboardInterrupt at all).
    process = subprocess.Popen([sys.executable, "-m", "genloom", "plugins"], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Start-up imports torch: on two loaded cores that alone can take tens of seconds.
    deadline = time.monotonic() + 180
    while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    try:
        assert ready.exists(), "the slow plugin never started importing"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)  # the plugin sleeps 300 s: an exit now is the interrupt
    finally:
        process.kill()
        process.wait()
    assert (process.returncode, err, out) == (130, "genloom: interrupted\n", "")


@pytest.fixture
def trained(fake_plugins, tmp_path_factory) -> Path:
    """A 4-step checkpoint of the counting pipeline."""
    run = tmp_path_factory.mktemp("trained")
    assert train(run) == 0
    return run


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.max_steps=1.5", "trainer.max_steps=1.5 must be an integer"),
    ("trainer.max_steps=abc", "trainer.max_steps='abc' must be an integer"),
    ("trainer.batch_size=2.5", "trainer.batch_size=2.5 must be an integer"),
    ("trainer.lr=abc", "trainer.lr='abc' must be a number"),
    ("trainer.compile=1", "trainer.compile=1 must be true or false"),
    ("trainer.eval_batches=0", "trainer.eval_batches=0 must be at least 1, or null for the whole split"),
    ("seed=abc", "seed='abc' must be an integer"),
    ("+trainer.max_step=3", "trainer has no key 'max_step'; did you mean trainer.max_steps?"),
    ("+foo=1", "the top level has no key 'foo';"),
    ("+pipeline.foo=1", "pipeline has no key 'foo'; Keys there: name"),
])
def test_a_mistyped_training_setting_is_one_message(fake_plugins, tmp_path, capsys, override, message):
    assert train(tmp_path, override) == 1
    out = said(capsys)
    assert message in out
    assert "Traceback" not in out and "HYDRA_FULL_ERROR" not in out
    assert not (tmp_path / "checkpoints").exists()


def test_an_unknown_key_in_a_trainer_file_names_the_file(installed, tmp_path, capsys):
    installed(fake_plugin.source(), misbehaving.source("typo", "typo", "genloom-typo"))
    assert train(tmp_path, "trainer=typo") == 1
    out = said(capsys)
    assert "trainer has no key 'max_step'; did you mean trainer.max_steps?" in out
    assert "trainer/typo.yaml" in out and "Traceback" not in out


def test_hydras_append_hint_is_hidden_where_following_it_fails(fake_plugins, capsys):
    assert cli.main(["train", "pipeline=counting", "trainer.max_step=3"]) == 1
    err = capsys.readouterr().err
    assert "genloom: trainer has no key 'max_step'; did you mean trainer.max_steps?" in err
    assert "+trainer.max_step" not in err


def test_a_group_no_installed_plugin_offers_says_so(fake_plugins, capsys):
    # conf/train.yaml has a logger group; the fake plugin ships no option for it.
    assert cli.main(["train", "pipeline=counting", "logger=tensorboard"]) == 1
    err = capsys.readouterr().err
    assert "genloom: logger=tensorboard: no installed plugin offers logger options" in err
    assert "+logger" not in err and "the top level has no key" not in err


def test_hydras_append_hint_stays_for_a_factory_option_the_config_leaves_out(fake_plugins, capsys):
    # The bigram factory takes `length`, but generator/bigram.yaml does not set it.
    assert cli.main(["train", "pipeline=counting", "generator.length=3"]) == 1
    err = capsys.readouterr().err
    assert "+generator.length=3" in err


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_sample_and_eval_without_a_checkpoint_say_how(fake_plugins, tmp_path, capsys, command):
    assert cli.main([command, f"hydra.run.dir={tmp_path}"]) == 1
    out = said(capsys)
    assert f"genloom {command} needs checkpoint=DIR" in out
    assert "Traceback" not in out and "MissingMandatoryValue" not in out


@pytest.mark.parametrize(("override", "message"), [
    ("n=abc", "n='abc' must be an integer"),
    ("n=0", "n=0 must be at least 1"),
    ("label=abc", "label='abc' must be an integer or null"),
    ("temperature=abc", "temperature='abc' must be a number"),
    ("+temprature=0", "generator Bigram does not take temprature; its sampling options are: "
                      "max_new_tokens, temperature"),
    ("top_q=0.5", "does not take top_q"),
    ("steps=50", "does not take steps"),
])
def test_a_mistyped_sampling_setting_is_one_message(trained, tmp_path, capsys, override, message):
    args = ["sample", f"checkpoint={trained}", override, f"hydra.run.dir={tmp_path}"]
    assert cli.main(args) == 1
    out = said(capsys)
    assert message in out
    assert "Traceback" not in out and "HYDRA_FULL_ERROR" not in out


def test_any_keyword_option_of_generate_can_be_set(trained, tmp_path, capsys, monkeypatch):
    seen = {}
    real = fake_plugin_components().Bigram.generate

    def generate(self, n, *, condition=None, rng=None, max_new_tokens: int = 8, temperature: float = 1.0,
                 steps: int = 10, guidance: float = 1.0):
        seen.update(steps=steps, guidance=guidance)
        return real(self, n, condition=condition, rng=rng, max_new_tokens=max_new_tokens,
                    temperature=temperature)

    monkeypatch.setattr(fake_plugin_components().Bigram, "generate", generate)
    args = ["sample", f"checkpoint={trained}", "steps=50", "+guidance=3", f"hydra.run.dir={tmp_path}"]
    assert cli.main(args) == 0
    assert seen == {"steps": 50, "guidance": 3.0}
    assert isinstance(seen["guidance"], float)  # an integer given for a float option is a float


def test_a_sampling_option_sweeps(trained, tmp_path):
    args = ["sample", "-m", f"checkpoint={trained}", "temperature=0,1", "max_new_tokens=4",
            f"hydra.sweep.dir={tmp_path}"]
    assert cli.main(args) == 0
    texts = [(tmp_path / job / "samples" / "sample_000.txt").read_text() for job in "01"]
    assert all(len(t.split()) == 4 for t in texts)
    overrides = (tmp_path / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "temperature=0" in overrides


def test_sample_help_explains_sampling_options(fake_plugins, capsys):
    assert cli.main(["sample", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Sampling options" in out and "keyword-only option of the generator's generate" in out


def test_eval_is_a_per_example_average_whatever_the_batch_size(trained, tmp_path):
    scores = []
    for size in (1, 3, 8):
        out = tmp_path / f"b{size}"
        assert cli.main(["eval", f"checkpoint={trained}", f"batch_size={size}", f"hydra.run.dir={out}"]) == 0
        scores.append(json.loads((out / "eval.json").read_text()))
    for other in scores[1:]:
        assert other["loss"] == pytest.approx(scores[0]["loss"], rel=1e-5)
        assert other["accuracy"] == pytest.approx(scores[0]["accuracy"], rel=1e-5)


@pytest.mark.parametrize(("override", "message"), [
    ("batch_size=0", "batch_size=0 must be at least 1"),
    ("max_batches=0", "max_batches=0 must be at least 1, or null for the whole validation split"),
    ("max_batches=-1", "max_batches=-1 must be at least 1"),
    ("batch_size=abc", "batch_size='abc' must be an integer"),
    ("+batch=3", "the top level has no key 'batch'; did you mean batch_size?"),
])
def test_a_mistyped_eval_setting_is_one_message(trained, tmp_path, capsys, override, message):
    assert cli.main(["eval", f"checkpoint={trained}", override, f"hydra.run.dir={tmp_path}"]) == 1
    out = said(capsys)
    assert message in out and "Traceback" not in out


def test_eval_scores_other_data_given_as_dataset_overrides(trained, tmp_path, capsys):
    base = ["eval", f"checkpoint={trained}"]
    assert cli.main([*base, f"hydra.run.dir={tmp_path / 'own'}"]) == 0
    assert "the dataset the checkpoint was trained on: counting" in said(capsys)
    own = json.loads((tmp_path / "own" / "eval.json").read_text())
    for i, override in enumerate(("dataset.length=5", "+dataset.length=5")):
        out = tmp_path / f"length{i}"
        assert cli.main([*base, override, f"hydra.run.dir={out}"]) == 0
        assert "dataset given on the command line: counting" in said(capsys)
        assert json.loads((out / "eval.json").read_text())["loss"] != own["loss"]
    assert cli.main([*base, "dataset.lenght=5", f"hydra.run.dir={tmp_path / 'typo'}"]) == 1
    assert "dataset 'counting' has no option dataset.lenght; it takes: " in said(capsys)
    assert cli.main([*base, "dataset=counting", f"hydra.run.dir={tmp_path / 'group'}"]) == 0
    assert json.loads((tmp_path / "group" / "eval.json").read_text())["loss"] == pytest.approx(own["loss"])


def test_sample_says_so_when_training_saved_no_checkpoint(fake_plugins, tmp_path, capsys, monkeypatch):
    from genloom import trainer

    monkeypatch.setattr(trainer.Trainer, "save", lambda self: None)
    assert train(tmp_path) == 0
    out = said(capsys)
    assert "sample it:" not in out and "no checkpoint was saved" in out


def fake_plugin_components():
    import fake_plugin.components

    return fake_plugin.components
