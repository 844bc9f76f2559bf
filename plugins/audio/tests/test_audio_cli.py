"""`genloom train`, `sample` and `eval` on the audio pipelines, in-process, on tiny configs."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from genloom import cli
from PIL import Image

TINY = ["pipeline=audio_debug", "trainer=debug", "trainer.progress=false", "trainer.max_steps=6"]


def sample(run: Path, out: Path, *args: str) -> dict[str, bytes]:
    assert cli.main(["sample", f"checkpoint={run}", "n=3", f"hydra.run.dir={out}", *args]) == 0
    return {p.name: p.read_bytes() for p in sorted((out / "samples").iterdir())}


@pytest.fixture(scope="module")
def trained(only_audio, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    assert cli.main(["train", *TINY, f"hydra.run.dir={run}"]) == 0
    return run


def test_training_logs_mel_l1_and_elbo(trained: Path) -> None:
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"][-1]
    assert {"val_loss", "val_mel_l1", "val_elbo", "val_recon", "val_kl"} <= set(val)
    assert val["val_elbo"] == pytest.approx(-(val["val_recon"] + val["val_kl"]), rel=1e-4)
    assert json.loads((trained / "plugins.json").read_text()) == {"audio": None, "blocks": None}


def test_a_checkpoint_samples_the_same_wavs_for_the_same_seed(trained: Path, tmp_path: Path) -> None:
    first = sample(trained, tmp_path / "a", "label=1", "seed=3")
    assert list(first) == ["sample_000.wav", "sample_001.wav", "sample_002.wav", "spectrograms.png"]
    assert first == sample(trained, tmp_path / "b", "label=1", "seed=3")
    info = soundfile.info(tmp_path / "a" / "samples" / "sample_000.wav")
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (8000, 1, "PCM_16", 15 * 128)


def test_the_label_changes_the_samples(trained: Path, tmp_path: Path) -> None:
    ones = sample(trained, tmp_path / "one", "label=1")
    sevens = sample(trained, tmp_path / "seven", "label=7")
    assert all(ones[name] != sevens[name] for name in ones)


def test_eval_reports_mel_l1_and_shows_reconstructions(trained: Path, tmp_path: Path) -> None:
    assert cli.main(["eval", f"checkpoint={trained}", "batch_size=4", f"hydra.run.dir={tmp_path}"]) == 0
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert scores["step"] == 6 and {"mel_l1", "elbo", "loss"} <= set(scores)
    assert 0 < scores["mel_l1"] < 1
    folder = tmp_path / "reconstructions"
    assert Image.open(folder / "reconstructions.png").mode == "RGB"
    assert len(list(folder.glob("original_*.wav"))) == len(list(folder.glob("reconstruction_*.wav"))) == 4


def test_a_prompt_for_a_pitch_model_is_one_clear_error(trained: Path, tmp_path: Path, capsys) -> None:
    status = cli.main(["sample", f"checkpoint={trained}", 'prompt="a sine C4"', f"hydra.run.dir={tmp_path}"])
    assert status == 1
    output = capsys.readouterr()
    assert "the log_mel encoder encodes waveforms" in output.out
    assert "Traceback" not in output.out + output.err


def test_a_caption_model_trains_and_follows_its_prompts(only_audio, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["pipeline=audio_caption_debug", *TINY[1:]]
    assert cli.main(["train", *args, f"hydra.run.dir={run}"]) == 0
    plucked = sample(run, tmp_path / "plucked", 'prompt="a plucked C#4"')
    assert plucked == sample(run, tmp_path / "again", 'prompt="A plucked c#4!"')  # same words, same ids
    bell = sample(run, tmp_path / "bell", 'prompt="a bell G4"')
    assert plucked["sample_000.wav"] != bell["sample_000.wav"]


def test_a_folder_preset_trains_on_your_clips_and_samples_a_class(only_audio, tmp_path: Path, capsys) -> None:
    t = np.arange(4000) / 8000
    for name, hz in (("low", 220.0), ("mid", 440.0), ("high", 880.0)):
        (tmp_path / "clips" / name).mkdir(parents=True)
        for j in range(4):
            soundfile.write(tmp_path / "clips" / name / f"{j}.wav", 0.3 * np.sin(2 * np.pi * hz * t), 8000)
    run = tmp_path / "run"
    args = ["pipeline=audio_folder_debug", "trainer.progress=false", "trainer.max_steps=4",
            f"dataset.path={tmp_path / 'clips'}", "dataset.labels=true", "generator.condition=label"]
    assert cli.main(["train", *args, "generator.num_classes=2", f"hydra.run.dir={run}"]) == 1
    assert "has 3 classes (high 4, low 4, mid 4) but the generator takes 2" in capsys.readouterr().out
    assert cli.main(["train", *args, "generator.num_classes=3", f"hydra.run.dir={run}"]) == 0
    wavs = sample(run, tmp_path / "mid", "label=2")
    assert len([name for name in wavs if name.endswith(".wav")]) == 3


def test_a_synth_preset_on_a_folder_points_to_the_folder_preset(only_audio, tmp_path, capsys) -> None:
    (tmp_path / "clips").mkdir()
    soundfile.write(tmp_path / "clips" / "a.wav", [0.1] * 800, 8000)
    args = ["pipeline=audio_debug", "dataset=audio_folder", f"dataset.path={tmp_path / 'clips'}",
            f"hydra.run.dir={tmp_path}"]
    assert cli.main(["train", *args]) == 1
    out = capsys.readouterr().out
    assert "dataset.condition=pitch is not something audio_folder provides" in out
    assert "pipeline=audio_folder dataset.path=DIR" in out
def test_eval_scores_the_same_at_any_batch_size(trained: Path, tmp_path: Path) -> None:
    scores = []
    for size in (1, 3, 8):
        out = tmp_path / f"b{size}"
        assert cli.main(["eval", f"checkpoint={trained}", f"batch_size={size}", f"hydra.run.dir={out}"]) == 0
        written = json.loads((out / "eval.json").read_text())
        assert written["weights"] == "raw"  # trained without trainer.ema
        scores.append({k: v for k, v in written.items() if k not in ("checkpoint", "weights")})
    assert scores[1] == pytest.approx(scores[0], rel=1e-5)
    assert scores[2] == pytest.approx(scores[0], rel=1e-5)
