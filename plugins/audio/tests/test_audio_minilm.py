"""The mel VAE (pipeline=notes_caption_minilm) and the two-stage prior (notes_caption_tokens_minilm)
steered by genloom-hf's sentence encoder (all-MiniLM-L6-v2)."""

import pytest
import torch
from genloom.testing import compose, load_only
from omegaconf import OmegaConf


@pytest.fixture(scope="module")
def with_hf():
    return load_only(
        {"audio": "genloom_audio.plugin", "blocks": "genloom_blocks.plugin", "hf": "genloom_hf.plugin"}
    )


def test_the_preset_pairs_the_sentence_encoder_with_a_generator_that_takes_its_embeddings(with_hf) -> None:
    cfg = compose(with_hf, ["pipeline=notes_caption_minilm"])
    assert cfg.pipeline.name == "notes_caption_minilm" and cfg.dataset.condition == "caption"
    built = {}
    for key, kind in (("condition_encoder", "encoder"), ("generator", "generator")):
        options = OmegaConf.to_container(cfg[key], resolve=True)
        built[key] = with_hf.registry.build(kind, options.pop("name"), options)
    captions = built["condition_encoder"].encode_many(["a plucked C5", "a bowed G3"])  # (2, 384)
    assert captions.shape == (2, cfg.generator.caption_embedding_dim)
    generator = built["generator"].eval()
    mel = torch.rand(2, 1, generator.n_mels, generator.frames)
    assert torch.isfinite(generator.loss({"mel": mel, "condition": captions})["loss"])
    prompt = built["condition_encoder"].encode("a plucked C5")
    clips = generator.generate(2, condition=prompt, temperature=0.0)
    assert clips.shape == (2, 1, generator.n_mels, generator.frames)


def test_the_two_stage_preset_s_prior_takes_the_sentence_encoder_s_embeddings() -> None:
    plugin_set = load_only({"audio": "genloom_audio.plugin", "blocks": "genloom_blocks.plugin",
                            "hf": "genloom_hf.plugin", "text": "genloom_text.plugin",
                            "genloom": "genloom.builtin"})
    # Stand-ins for the sizes read from a trained stage 1 (${frozen:...}): 12 codes of 10.
    cfg = compose(plugin_set, ["pipeline=notes_caption_tokens_minilm_debug", "encoder.checkpoint=RUN",
                               "generator.media_vocab=10", "generator.media_tokens=12"])
    built = {}
    for key, kind in (("condition_encoder", "encoder"), ("generator", "generator")):
        options = OmegaConf.to_container(cfg[key], resolve=True)
        built[key] = plugin_set.registry.build(kind, options.pop("name"), options)
    captions = built["condition_encoder"].encode_many(["a plucked C5", "a bowed G3"])  # (2, 384)
    prior = built["generator"]
    codes = torch.randint(0, 10, (2, 12))
    assert torch.isfinite(prior.loss({"mel": codes, "condition": captions})["loss"])
    samples = prior.generate(2, condition=built["condition_encoder"].encode("a plucked C5"), temperature=0.0)
    assert samples.shape == (2, 12) and int(samples.min()) >= 0 and int(samples.max()) < 10
