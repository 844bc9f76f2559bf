"""The plugin contract kit, run on this plugin's components."""

from genloom.testing import PluginContract


class TestAudioContract(PluginContract):
    plugin = "genloom_audio.plugin"
    # caption_words (the caption presets); the Transformer and from_checkpoint (the *_tokens presets);
    # hf_sentence (the *_minilm presets)
    also_load = ["genloom_blocks.plugin", "genloom_text.plugin", "genloom.builtin", "genloom_hf.plugin"]
    pipelines = ["audio_debug", "audio_caption_debug", "notes_vq_debug"]
    not_covered = {
        "dataset:audio_folder": "needs a user's folder of audio files; tested in test_audio_folder.py",
        "encoder:audio_caption_words": "caption_words under its old name, for checkpoints that name it; "
        "tested in test_audio_plugin.py",
    }
