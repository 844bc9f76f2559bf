"""`genloom train` and `genloom sample` on the debug pipeline, in-process, as a user runs them."""

import json
from pathlib import Path

import pytest
from genloom import cli

TINY = ["pipeline=pixelcnn_debug", "trainer=debug", "trainer.progress=false"]


def sample(run: Path, out: Path, *args: str) -> dict[str, bytes]:
    assert cli.main(["sample", f"checkpoint={run}", "n=3", f"hydra.run.dir={out}", *args]) == 0
    return {p.name: p.read_bytes() for p in sorted((out / "samples").iterdir())}


@pytest.fixture(scope="module")
def trained(only_pixelcnn, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    assert cli.main(["train", *TINY, f"hydra.run.dir={run}"]) == 0
    return run


def test_training_logs_bits_per_pixel_and_saves_a_checkpoint(trained: Path) -> None:
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"][-1]
    assert val["step"] == 4 and 0 < val["val_bits_per_pixel"] <= 2.1  # 4 levels: at most 2 bits
    assert (trained / "checkpoints" / "latest").exists()
    assert json.loads((trained / "plugins.json").read_text()) == {"pixelcnn": None}


def test_a_label_samples_the_same_pngs_for_the_same_seed(trained: Path, tmp_path: Path) -> None:
    first = sample(trained, tmp_path / "a", "label=3", "seed=1")
    assert list(first) == ["grid.png", "sample_000.png", "sample_001.png", "sample_002.png"]
    assert first == sample(trained, tmp_path / "b", "label=3", "seed=1")
    assert first != sample(trained, tmp_path / "c", "label=3", "seed=2")
    assert first["sample_000.png"][16:24] == bytes([0, 0, 0, 8, 0, 0, 0, 8])  # IHDR: 8 x 8 pixels


def test_the_label_and_the_temperature_steer_the_samples(trained: Path, tmp_path: Path) -> None:
    threes = sample(trained, tmp_path / "threes", "label=3")
    assert sample(trained, tmp_path / "fours", "label=4") != threes
    assert sample(trained, tmp_path / "any", "seed=0") != threes  # no label: unconditional
    assert sample(trained, tmp_path / "cold", "label=3", "temperature=0.5") != threes


def test_an_option_the_pixelcnn_lacks_lists_the_ones_it_has(trained: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["sample", f"checkpoint={trained}", "top_k=3", f"hydra.run.dir={tmp_path}"]) == 1
    assert "does not take top_k; its sampling options are: temperature" in capsys.readouterr().out


def test_a_prompt_is_one_clear_error(trained: Path, tmp_path: Path, capsys) -> None:
    status = cli.main(["sample", f"checkpoint={trained}", 'prompt="a three"', f"hydra.run.dir={tmp_path}"])
    assert status == 1
    output = capsys.readouterr()
    assert "sampled with label=N, not prompt=" in output.out
    assert "Traceback" not in output.out + output.err
