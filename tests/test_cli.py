"""The command line, driven in-process with only the fake plugin installed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from genloom import cli

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
    for command in ("train", "sample", "eval", "serve", "plugins"):
        assert f"\n  {command} " in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'; commands: train, sample, eval, serve, plugins" in capsys.readouterr().err


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
