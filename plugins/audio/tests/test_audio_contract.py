"""The plugin contract kit, run on this plugin's components."""

from genloom.testing import PluginContract


class TestAudioContract(PluginContract):
    plugin = "genloom_audio.plugin"
    also_load = ["genloom_blocks.plugin"]  # caption_words, which the caption presets use
    pipelines = ["audio_debug", "audio_caption_debug", "notes_vq_debug"]
    not_covered = {
        "dataset:audio_folder": "needs a user's folder of audio files; tested in test_audio_folder.py",
        "encoder:audio_caption_words": "caption_words under its old name, for checkpoints that name it; "
        "tested in test_audio_plugin.py",
    }
