"""`genloom train`, `sample` and `eval` on the text pipeline, in-process, on a tiny config."""

import json

import pytest
from genloom import cli, plugins
from hydra.core.global_hydra import GlobalHydra


@pytest.fixture
def only_text(text_plugin):
    plugins.set_active(text_plugin)
    yield
    plugins.set_active(None)
    GlobalHydra.instance().clear()


@pytest.fixture
def trained(only_text, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    args = [
        "train",
        "pipeline=text_debug",
        "trainer=debug",
        "trainer.progress=false",
        "trainer.max_steps=6",
        f"hydra.run.dir={run}",
    ]
    assert cli.main(args) == 0
    return run


def test_training_logs_loss_and_bits_per_byte(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"][-1]
    assert val["val_bits_per_byte"] == pytest.approx(val["val_loss"] / 0.6931471805599453)
    assert json.loads((trained / "plugins.json").read_text()) == {"text": None}


def test_sampling_streams_text_and_writes_files(trained, tmp_path, capsys):
    args = [
        "sample",
        f"checkpoint={trained}",
        "n=2",
        'prompt="The "',
        "max_new_tokens=20",
        "temperature=0",
        f"hydra.run.dir={tmp_path}",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    texts = [p.read_text() for p in sorted((tmp_path / "samples").glob("sample_*.txt"))]
    assert len(texts) == 2 and texts[0] == texts[1]  # greedy: identical
    assert "--- sample 0 ---\nThe " + texts[0] in out  # streamed as generated, after the prompt
    assert (tmp_path / "samples" / "samples.md").is_file()


def test_batched_sampling_matches_and_stop_cuts(trained, tmp_path):
    args = [
        "sample",
        f"checkpoint={trained}",
        "n=3",
        "batch_size=3",
        "stream=false",
        "max_new_tokens=30",
        "seed=1",
        "stop=e",
        f"hydra.run.dir={tmp_path}",
    ]
    assert cli.main(args) == 0
    texts = [p.read_text() for p in sorted((tmp_path / "samples").glob("sample_*.txt"))]
    assert len(texts) == 3
    assert all("e" not in text for text in texts)


def test_eval_reports_bits_per_byte(trained, tmp_path):
    assert cli.main(["eval", f"checkpoint={trained}", "max_batches=2", f"hydra.run.dir={tmp_path}"]) == 0
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert scores["step"] == 6
    assert scores["bits_per_byte"] == pytest.approx(scores["loss"] / 0.6931471805599453)
