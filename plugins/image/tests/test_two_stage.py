"""Two-stage image pipelines: a frozen FSQ stage 1 (this plugin) + the text plugin's Transformer.

The presets `glyphs_tokens` and `shapes_tokens` compose components of four plugins by
registry name: this one's datasets and `image_fsq`, genloom's built-in `from_checkpoint`,
genloom-text's `transformer` and `prefix_bytes`, genloom-blocks. Tiny `_debug` variants,
in-process, a few steps each.
"""

import shutil
from pathlib import Path

import pytest
from genloom import cli
from genloom.testing import only_plugins
from omegaconf import OmegaConf
from PIL import Image

FAST = ["trainer.progress=false", "trainer.max_steps=6"]


@pytest.fixture(scope="module")
def four_plugins():
    with only_plugins({"image": "genloom_image.plugin", "blocks": "genloom_blocks.plugin",
                       "text": "genloom_text.plugin", "genloom": "genloom.builtin"}) as plugin_set:
        yield plugin_set


def train(run: Path, *overrides: str) -> Path:
    assert cli.main(["train", *overrides, *FAST, f"hydra.run.dir={run}"]) == 0
    return run


def sample(run: Path, out: Path, *args: str) -> dict[str, bytes]:
    assert cli.main(["sample", f"checkpoint={run}", "n=3", "seed=1", f"hydra.run.dir={out}", *args]) == 0
    return {p.name: p.read_bytes() for p in sorted((out / "samples").iterdir())}


@pytest.mark.slow
def test_glyph_tokens_sample_a_label_and_keep_sampling_after_stage_1_is_gone(four_plugins, tmp_path) -> None:
    stage_1 = train(tmp_path / "vq", "pipeline=glyphs_vq_debug")
    stage_2 = train(tmp_path / "tokens", "pipeline=glyphs_tokens_debug", f"encoder.checkpoint={stage_1}")
    first = sample(stage_2, tmp_path / "a", "label=3")
    assert sorted(first) == ["grid.png", "sample_000.png", "sample_001.png", "sample_002.png"]
    assert Image.open(tmp_path / "a" / "samples" / "sample_000.png").size == (8, 8)
    shutil.rmtree(stage_1)  # the stage-2 checkpoint holds its frozen stage 1
    assert sample(stage_2, tmp_path / "b", "label=3") == first


@pytest.mark.slow
def test_shape_tokens_sample_from_a_caption(four_plugins, tmp_path) -> None:
    stage_1 = train(tmp_path / "vq", "pipeline=shapes_vq_debug")
    stage_2 = train(tmp_path / "tokens", "pipeline=shapes_tokens_debug", f"encoder.checkpoint={stage_1}")
    red = sample(stage_2, tmp_path / "red", 'prompt="a red star"')
    assert len(red) == 4 and Image.open(tmp_path / "red" / "samples" / "sample_000.png").mode == "RGB"
    # A caption model asked for a label is one clear error, not a silently unconditioned sample.
    assert cli.main(["sample", f"checkpoint={stage_2}", "label=3", f"hydra.run.dir={tmp_path / 'bad'}"]) == 1


def test_the_token_presets_link_the_prefix_to_the_codebook(four_plugins, tmp_path) -> None:
    from genloom.testing import compose

    for preset, prefix in [("glyphs_tokens", "label"), ("shapes_tokens", "caption")]:
        cfg = compose(four_plugins, [f"pipeline={preset}", "encoder.checkpoint=RUN"])
        names = (cfg.encoder.name, cfg.decoder.name, cfg.generator.name)
        assert names == ("from_checkpoint", "from_checkpoint", "transformer")
        assert cfg.generator.prefix == prefix and cfg.generator.sequence_key == "image"
        generator = OmegaConf.to_container(cfg.generator, resolve=False)
        # Sized by whatever stage 1 it is given (genloom.frozen.size), not by numbers of its own.
        assert generator["media_vocab"] == "${frozen:encoder.codebook_size}"
        assert generator["media_tokens"] == "${frozen:encoder.token_count}"
        if prefix == "caption":
            condition = OmegaConf.to_container(cfg.condition_encoder, resolve=False)
            assert condition["offset"] == "${generator.media_vocab}"
            assert cfg.condition_encoder.length == cfg.generator.caption_length
