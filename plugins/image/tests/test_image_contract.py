"""The plugin contract kit, run on this plugin's components."""

from genloom.testing import PluginContract


class TestImageContract(PluginContract):
    plugin = "genloom_image.plugin"
    # caption_words (the caption presets); the Transformer and from_checkpoint (the *_tokens presets);
    # hf_sentence (the *_minilm presets)
    also_load = ["genloom_blocks.plugin", "genloom_text.plugin", "genloom.builtin", "genloom_hf.plugin"]
    pipelines = ["image_debug", "shapes_debug", "glyphs_vq_debug", "shapes_vq_debug"]
    not_covered = {
        "dataset:image_folder": "needs a user's folder of images; tested in test_folder.py",
        "encoder:vae_latents": "the VAE's encoder half, for latent pipelines; tested in test_image_plugin.py",
        "decoder:vae_latents": "the VAE's decoder half, for latent pipelines; tested in test_image_plugin.py",
    }
