"""The plugin contract kit, run on this plugin's components with a tiny random GPT-2."""

import pytest
from genloom.testing import PluginContract
from genloom_hf.random_model import write_random_model


class TestHFContract(PluginContract):
    plugin = "genloom_hf.plugin"
    also_load = ["genloom_text.plugin"]  # the presets' datasets (pydoc)
    pipelines = ["hf_text_debug"]
    sample_options = {"max_new_tokens": 8}
    not_covered = {
        "encoder:hf_sentence": "a condition encoder for the image and audio plugins' presets "
        "(shapes_minilm, notes_caption_minilm); tested in test_hf_sentence.py, "
        "plugins/image/tests/test_image_minilm.py and plugins/audio/tests/test_audio_minilm.py",
    }

    @pytest.fixture(scope="class")
    @classmethod
    def contract_overrides(cls, tmp_path_factory):
        return [f"generator.path={write_random_model(tmp_path_factory.mktemp('contract-gpt2'))}"]
