"""The config groups: valid YAML, names that exist, keys the factories take, presets that fit together."""

import importlib.resources
from pathlib import Path

import pytest
import yaml
from genloom.plugins import PluginSet
from genloom.registry import check_options
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF = Path(str(importlib.resources.files("genloom_audio.conf")))
YAML_FILES = sorted(CONF.rglob("*.yaml"))
COMPONENT_FILES = [p for p in YAML_FILES if p.parent.name not in ("pipeline", "trainer")]
# The two-stage presets (*_tokens*) need genloom-text and the built-in plugin: test_audio_two_stage.py.
# The *_minilm presets need genloom-hf's sentence encoder: test_audio_minilm.py.
PIPELINES = sorted(
    p.stem for p in (CONF / "pipeline").glob("*.yaml") if "_tokens" not in p.stem and "_minilm" not in p.stem
)
KIND = {"condition_encoder": "encoder"}  # the group a kind of component is configured in
FRONT_END = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max")


def test_the_groups_hold_the_expected_files() -> None:
    assert [p.relative_to(CONF).as_posix() for p in YAML_FILES] == [
        "dataset/audio_folder.yaml",
        "dataset/synth_notes.yaml",
        "dataset/synth_notes_debug.yaml",
        "decoder/griffin_lim.yaml",
        "encoder/log_mel.yaml",
        "encoder/log_mel_debug.yaml",
        "generator/mel_fsq.yaml",
        "generator/mel_fsq_debug.yaml",
        "generator/mel_vae.yaml",
        "generator/mel_vae_debug.yaml",
        "pipeline/audio_caption_debug.yaml",
        "pipeline/audio_debug.yaml",
        "pipeline/audio_folder.yaml",
        "pipeline/audio_folder_debug.yaml",
        "pipeline/notes.yaml",
        "pipeline/notes_caption.yaml",
        "pipeline/notes_caption_minilm.yaml",
        "pipeline/notes_caption_tokens.yaml",
        "pipeline/notes_caption_tokens_debug.yaml",
        "pipeline/notes_caption_tokens_minilm.yaml",
        "pipeline/notes_caption_tokens_minilm_debug.yaml",
        "pipeline/notes_tokens.yaml",
        "pipeline/notes_tokens_debug.yaml",
        "pipeline/notes_vq.yaml",
        "pipeline/notes_vq_debug.yaml",
        "trainer/notes.yaml",
        "trainer/notes_tokens.yaml",
        "trainer/notes_vq.yaml",
    ]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(CONF).as_posix())
def test_every_file_opens_with_a_comment_and_parses(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert isinstance(yaml.safe_load(text), dict)


@pytest.mark.parametrize("path", COMPONENT_FILES, ids=lambda p: p.relative_to(CONF).as_posix())
def test_component_configs_name_a_registered_component_and_its_options(
    path: Path, audio_plugin: PluginSet
) -> None:
    kind = KIND.get(path.parent.name, path.parent.name)
    options = yaml.safe_load(path.read_text(encoding="utf-8"))
    name = options.pop("name")
    assert name in audio_plugin.registry.names(kind)
    factory = audio_plugin.registry.factory(kind, name)
    check_options(factory, options, where=path.name, prefix=f"{path.parent.name}.")


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_pipeline_presets_show_their_command_and_fit_together(pipeline: str, tmp_path: Path) -> None:
    header = (CONF / "pipeline" / f"{pipeline}.yaml").read_text(encoding="utf-8").splitlines()
    assert header[0] == "# @package _global_"
    assert any(line.startswith(f"# genloom train pipeline={pipeline}") for line in header[:3])
    cfg = compose_train(tmp_path, [f"pipeline={pipeline}"])
    assert cfg.pipeline.name == pipeline
    assert {k: cfg.decoder[k] for k in FRONT_END} == {k: cfg.encoder[k] for k in FRONT_END}
    assert cfg.dataset.sample_rate == cfg.encoder.sample_rate
    samples = round(cfg.dataset.duration * cfg.dataset.sample_rate)
    assert cfg.generator.n_mels == cfg.encoder.n_mels
    assert cfg.generator.frames == 1 + samples // cfg.encoder.hop_length
    condition = {"pitch": "label", "timbre": "label", "caption": "caption", "none": "none"}
    conditioned = cfg.generator.condition if "condition" in cfg.generator else "none"  # mel_fsq: none
    assert condition[cfg.dataset.condition] == conditioned
    if cfg.dataset.condition == "pitch":
        assert cfg.generator.num_classes == cfg.dataset.high - cfg.dataset.low + 1
    if conditioned == "caption":
        assert cfg.generator.caption_buckets == cfg.condition_encoder.buckets


def test_the_demos_choose_their_trainer_and_the_command_line_wins(tmp_path: Path) -> None:
    notes = compose_train(tmp_path, ["pipeline=notes"])
    assert (notes.trainer.max_steps, notes.trainer.batch_size) == (1000, 32)
    assert compose_train(tmp_path, ["pipeline=notes", "trainer=debug"]).trainer.max_steps == 4
    assert compose_train(tmp_path, ["pipeline=audio_debug"]).trainer.max_steps == 4
    assert compose_train(tmp_path, ["pipeline=audio_debug", "trainer=default"]).trainer.max_steps == 1000
    assert compose_train(tmp_path, ["pipeline=notes_vq"]).trainer.max_steps == 600
    assert compose_train(tmp_path, ["pipeline=notes_vq_debug"]).trainer.max_steps == 4


def test_the_presets_condition_on_what_their_commands_promise(tmp_path: Path) -> None:
    notes = compose_train(tmp_path, ["pipeline=notes"])
    assert (notes.dataset.condition, notes.generator.condition, notes.dataset.low) == ("pitch", "label", 60)
    assert notes.dataset.chords == 0
    captions = compose_train(tmp_path, ["pipeline=notes_caption"])
    assert (captions.dataset.condition, captions.condition_encoder.name) == ("caption", "caption_words")


def test_the_caption_words_of_the_notes_get_distinct_ids(tmp_path: Path) -> None:
    from genloom_audio.synth import TIMBRES, note_name
    from genloom_blocks.captions import CaptionWords

    cfg = compose_train(tmp_path, ["pipeline=notes_caption"])
    encoder = CaptionWords(buckets=cfg.condition_encoder.buckets)
    notes = [note_name(m) for m in range(24, 109)]  # C1 to C8
    words = {"a", "chord", "on", *TIMBRES, *(n.lower() for n in notes)}
    assert len({int(encoder.encode(word)[0]) for word in words}) == len(words)


def compose_train(tmp_path: Path, overrides: list[str]) -> DictConfig:
    """Compose like `genloom train`: genloom's trainer group, then a pipeline from this plugin's groups."""
    (tmp_path / "train.yaml").write_text(
        "defaults:\n  - trainer: default\n  - pipeline: ???\n  - _self_\nhydra:\n  searchpath:\n"
        "    - pkg://genloom.conf\n    - pkg://genloom_audio.conf\n    - pkg://genloom_blocks.conf\n",
        encoding="utf-8",
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        return compose("train", overrides=overrides)
