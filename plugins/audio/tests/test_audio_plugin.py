"""The plugin as genloom sees it: a light hook module that registers buildable components."""

import importlib.metadata
import subprocess
import sys
import zlib

import torch
from genloom.plugins import PluginSet


def test_the_hook_module_imports_neither_torch_nor_audio_libraries() -> None:
    code = (
        "import sys, genloom_audio.plugin; "
        "loaded = [m for m in ('torch', 'torchaudio', 'soundfile', 'numpy', 'PIL') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_distribution_declares_the_entry_point() -> None:
    entry_points = importlib.metadata.entry_points(group="genloom")
    assert any(ep.name == "audio" and ep.value == "genloom_audio.plugin" for ep in entry_points)


def test_registers_every_component_and_its_config(audio_plugin: PluginSet) -> None:
    info = next(p for p in audio_plugin.plugins if p.name == "audio")
    assert info.status == "ok", info.error
    assert info.components == {
        "encoder": ["log_mel", "audio_caption_words"],  # the old name of genloom-blocks' caption_words
        "decoder": ["griffin_lim"],
        "generator": ["mel_vae", "mel_fsq"],
        "dataset": ["synth_notes", "audio_folder"],
    }
    assert all(entry.summary for entry in audio_plugin.registry)
    assert "genloom_audio.conf" in audio_plugin.config_modules
    assert info.config_groups == {
        "dataset": ["audio_folder", "synth_notes", "synth_notes_debug"],
        "decoder": ["griffin_lim"],
        "encoder": ["log_mel", "log_mel_debug"],
        "generator": ["mel_fsq", "mel_fsq_debug", "mel_vae", "mel_vae_debug"],
        "pipeline": [
            "audio_caption_debug", "audio_debug", "audio_folder", "audio_folder_debug",
            "notes", "notes_caption", "notes_caption_minilm", "notes_caption_tokens",
            "notes_caption_tokens_debug", "notes_caption_tokens_minilm", "notes_caption_tokens_minilm_debug",
            "notes_tokens", "notes_tokens_debug", "notes_vq", "notes_vq_debug",
        ],
        "trainer": ["notes", "notes_tokens", "notes_vq"],
    }


def test_components_build_through_the_registry(audio_plugin: PluginSet) -> None:
    registry = audio_plugin.registry
    front = {"sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 32}
    encoder = registry.build("encoder", "log_mel", front)
    decoder = registry.build("decoder", "griffin_lim", {**front, "n_iter": 4})
    generator = registry.build("generator", "mel_vae", {"n_mels": 32, "frames": 16, "widths": [4]})
    captions = registry.build("encoder", "caption_words")
    dataset = registry.build(
        "dataset", "synth_notes",
        {"sample_rate": 8000, "duration": 0.25, "low": 60, "high": 64, "size": 4, "condition": "caption"},
    )

    example = dataset.split("train", encoder, captions)[0]
    assert example["mel"].shape == (1, 32, 16) and example["condition"].shape == (8,)
    assert generator.loss({"mel": example["mel"][None]})["loss"].isfinite()
    assert isinstance(generator, torch.nn.Module)
    waveform = decoder.decode(example["mel"])
    assert waveform.shape == (15 * 128,) and waveform.dtype == torch.float32


def test_checkpoints_that_name_audio_caption_words_still_encode_their_captions_alike(
    audio_plugin: PluginSet,
) -> None:
    """audio_caption_words is the old name of genloom-blocks' caption_words: a checkpoint saved
    before the move names it, with the options it was trained with, and gets the same ids."""
    saved = {"buckets": 1060, "max_words": 8}  # condition_encoder in an old notes_caption checkpoint
    old = audio_plugin.registry.build("encoder", "audio_caption_words", saved)
    new = audio_plugin.registry.build("encoder", "caption_words", saved)
    ids = [zlib.crc32(w.encode()) % 1060 + 1 for w in ("a", "plucked", "c#4")]  # the old encoding
    assert old.encode("a plucked C#4").tolist() == new.encode("a plucked C#4").tolist() == ids + [0] * 5
