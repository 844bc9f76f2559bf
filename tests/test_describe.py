"""`genloom describe`: a pipeline's batch keys, samples and decoder, read from the components."""

from __future__ import annotations

import json

import pytest
from genloom import cli


def test_it_shows_each_batch_key_the_samples_and_the_decoder(fake_plugins, capsys) -> None:
    assert cli.main(["describe", "pipeline=counting"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pipeline counting: dataset counting, encoder digits, generator bigram, "
                          "decoder digits\n")
    assert "batches (the val split: 16 examples of 8 tok; 16 read), per example:" in out
    assert "  tokens       (8) int64, values in [0, 9]" in out
    assert "  sample_spec       (*) int64" in out
    assert "  sampling options  max_new_tokens=8, temperature=1.0" in out
    assert "  media_type        text" in out
    assert "any values (it declares no input_range)" in out


def test_overrides_and_options_reach_the_pipeline(fake_plugins, capsys) -> None:
    args = ["describe", "pipeline=counting", "generator=bigram_wide", "--split", "train", "--examples", "5",
            "--json"]
    assert cli.main(args) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["split"] == "train" and described["examples_read"] == 5
    assert described["batch"] == [{"key": "tokens", "shape": [8], "dtype": "int64", "low": 0.0, "high": 11.0}]
    assert described["sampling_options"] == {"max_new_tokens": 8, "temperature": 1.0}


@pytest.mark.parametrize(("args", "status", "message"), [
    (["pipeline=nope"], 1, "`pipeline=nope` does not compose: no installed plugin ships pipeline=nope"),
    ([], 0, "usage: genloom describe"),
    (["seed=1"], 1, "choose what to describe: pipeline=<preset>; installed presets: counting"),
    (["+dataset=counting"], 1, "+dataset=counting alone has no examples to show: its encoder makes them; "
                               "add it to a preset, `genloom describe pipeline=<preset> dataset=counting`"),
    (["pipeline=counting", "--split", "test"], 1, "--split 'test': choose train or val"),
    (["pipeline=counting", "--examples"], 2, "--examples needs a value"),
    (["pipeline=counting", "--verbose"], 2, "unknown argument '--verbose'"),
    (["pipeline=counting", "dataset.examples=2"], 1,
     "the pipeline does not build: ValueError: dataset.examples=2: need at least 4"),
])
def test_mistakes_get_one_message(fake_plugins, capsys, args, status, message) -> None:
    assert cli.main(["describe", *args]) == status
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
    assert "Traceback" not in captured.err
