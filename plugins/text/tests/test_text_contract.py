"""The plugin contract kit, run on this plugin's components."""

from genloom.testing import PluginContract


class TestTextContract(PluginContract):
    plugin = "genloom_text.plugin"
    pipelines = ["text_debug", "text_bpe_debug"]
    not_covered = {
        "dataset:text_files": "needs a user's folder of text; tested in test_corpus.py",
        "encoder:prefix_bytes": "a two-stage preset's caption prefix (needs a stage-1 model); "
        "tested in test_prior.py",
    }
    sample_options = {"max_new_tokens": 8}
