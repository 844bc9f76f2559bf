"""Two-stage audio pipelines: a frozen FSQ stage 1 (`mel_fsq`) + the text plugin's Transformer.

`notes_tokens` (a pitch token as the prefix) and `notes_caption_tokens` (a caption's bytes)
compose this plugin's dataset and stage 1, genloom's built-in `from_checkpoint`, genloom-text's
`transformer` and `prefix_bytes`, and genloom-blocks. Tiny `_debug` variants, in-process.
"""

import shutil
from pathlib import Path

import pytest
import soundfile
from genloom import cli
from genloom.testing import only_plugins

FAST = ["trainer.progress=false", "trainer.max_steps=6"]


@pytest.fixture(scope="module")
def four_plugins():
    with only_plugins({"audio": "genloom_audio.plugin", "blocks": "genloom_blocks.plugin",
                       "text": "genloom_text.plugin", "genloom": "genloom.builtin"}) as plugin_set:
        yield plugin_set


@pytest.fixture(scope="module")
def stage_1(four_plugins, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vq")
    assert cli.main(["train", "pipeline=notes_vq_debug", *FAST, f"hydra.run.dir={run}"]) == 0
    return run


def train_stage_2(preset: str, stage_1: Path, run: Path) -> Path:
    assert cli.main(["train", f"pipeline={preset}", f"encoder.checkpoint={stage_1}", *FAST,
                     f"hydra.run.dir={run}"]) == 0
    return run


def wavs(run: Path, out: Path, *args: str) -> dict[str, bytes]:
    assert cli.main(["sample", f"checkpoint={run}", "n=2", "seed=1", f"hydra.run.dir={out}", *args]) == 0
    return {p.name: p.read_bytes() for p in sorted((out / "samples").glob("*.wav"))}


@pytest.mark.slow
def test_note_tokens_sample_a_pitch_and_keep_sampling_after_stage_1_is_gone(stage_1, tmp_path) -> None:
    run = train_stage_2("notes_tokens_debug", stage_1, tmp_path / "tokens")
    first = wavs(run, tmp_path / "a", "label=5")
    assert len(first) == 2
    audio, rate = soundfile.read(tmp_path / "a" / "samples" / sorted(first)[0])
    assert rate == 8000 and len(audio) > 0
    shutil.copytree(stage_1, tmp_path / "stage_1_kept")  # the module's other tests still need it
    shutil.rmtree(stage_1)
    try:
        assert wavs(run, tmp_path / "b", "label=5") == first  # the checkpoint holds its stage 1
    finally:
        shutil.copytree(tmp_path / "stage_1_kept", stage_1)


@pytest.mark.slow
def test_note_caption_tokens_sample_from_a_caption(stage_1, tmp_path) -> None:
    run = train_stage_2("notes_caption_tokens_debug", stage_1, tmp_path / "tokens")
    assert len(wavs(run, tmp_path / "a", 'prompt="a plucked C4"')) == 2
    assert cli.main(["sample", f"checkpoint={run}", "label=3", f"hydra.run.dir={tmp_path / 'bad'}"]) == 1
