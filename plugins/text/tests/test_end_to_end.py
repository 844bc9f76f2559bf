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


def test_eval_of_moved_data_takes_the_new_path(only_text, tmp_path, capsys):
    data = tmp_path / "notes"
    data.mkdir()
    (data / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 60)
    run = tmp_path / "run"
    args = ["train", "pipeline=text_debug", "trainer=debug", "trainer.progress=false",
            "dataset=text_files", f"dataset.path={data}", f"hydra.run.dir={run}"]
    assert cli.main(args) == 0
    capsys.readouterr()
    moved = data.rename(tmp_path / "moved")
    assert cli.main(["eval", f"checkpoint={run}", f"hydra.run.dir={tmp_path / 'e1'}"]) == 1
    out = capsys.readouterr()
    assert f"the dataset the checkpoint was trained on: text_files path={data}" in out.out
    assert "does not exist" in out.out + out.err
    args = ["eval", f"checkpoint={run}", f"dataset.path={moved}", f"hydra.run.dir={tmp_path / 'e2'}"]
    assert cli.main(args) == 0
    assert f"the dataset given on the command line: text_files path={moved}" in capsys.readouterr().out
    assert json.loads((tmp_path / "e2" / "eval.json").read_text())["loss"] > 0


def test_unknown_sampling_options_are_errors_that_list_the_accepted_ones(trained, tmp_path, capsys):
    for typo in ("+temprature=0", "top_q=0.5", "steps=3"):
        assert cli.main(["sample", f"checkpoint={trained}", typo, f"hydra.run.dir={tmp_path}"]) == 1
        out = capsys.readouterr()
        assert ("its sampling options are: compile, guidance, max_new_tokens, stop, temperature, top_k, "
                "top_p, use_cache" in out.out + out.err)
    assert cli.main(["sample", f"checkpoint={trained}", 'stop=""', f"hydra.run.dir={tmp_path}"]) == 1
    assert "stop='' encodes to nothing" in capsys.readouterr().out
    assert cli.main(["sample", f"checkpoint={trained}", "label=3", f"hydra.run.dir={tmp_path}"]) == 1
    assert "not by a class label: sample it without label=" in capsys.readouterr().out
