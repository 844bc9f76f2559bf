"""The plugin contract kit, run on this plugin's components."""

from genloom.testing import PluginContract


class TestAudioContract(PluginContract):
    plugin = "genloom_audio.plugin"
    pipelines = ["audio_debug", "audio_caption_debug", "notes_vq_debug"]
    not_covered = {
        "dataset:audio_folder": "needs a user's folder of audio files; tested in test_audio_folder.py",
    }
