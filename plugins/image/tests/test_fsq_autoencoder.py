"""The FSQ autoencoder (image_fsq): stage 1 of a two-stage pipeline, tokenizing images."""

import json
from pathlib import Path

import pytest
import torch
from genloom import cli
from genloom.interfaces import CodeUsage, Reconstructing, Tokenizing
from genloom_image.fsq_autoencoder import FSQAutoencoder
from PIL import Image

TINY = dict(resolution=8, channels=3, widths=[8], levels=[3, 4], blocks=1)


def model(**options) -> FSQAutoencoder:
    torch.manual_seed(0)
    return FSQAutoencoder(**{**TINY, **options}).eval()


def test_it_is_a_tokenizer_an_autoencoder_and_counts_its_codes():
    ae = model()
    assert isinstance(ae, Tokenizing) and isinstance(ae, Reconstructing) and isinstance(ae, CodeUsage)
    assert ae.codebook_size == 12 and ae.token_count == 16  # 8 px halved once: 4 x 4 codes
    assert FSQAutoencoder(resolution=32, channels=1, widths=[16, 32], levels=[8, 6, 5]).token_count == 64


def test_tokens_are_codes_in_range_and_detokenize_draws_images():
    ae = model()
    x = torch.rand(5, 3, 8, 8)
    codes = ae.tokenize(x)
    assert codes.shape == (5, 16) and codes.dtype == torch.int64
    assert codes.min() >= 0 and codes.max() < ae.codebook_size
    images = ae.detokenize(codes)
    assert images.shape == (5, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
    originals, reconstructions = ae.reconstruct({"image": x})
    assert torch.equal(originals, x) and torch.equal(reconstructions, images)
    assert ae.code_counts({"image": x}).sum() == 5 * 16


def test_tokenizing_is_deterministic_and_batch_independent():
    ae = model()
    x = torch.rand(6, 3, 8, 8)
    together = ae.tokenize(x)
    assert torch.equal(together, ae.tokenize(x))
    assert torch.equal(together, torch.cat([ae.tokenize(x[i : i + 1]) for i in range(6)]))
    codes = torch.randint(0, 12, (3, 16))
    alone = torch.cat([ae.detokenize(codes[i : i + 1]) for i in range(3)])
    assert torch.allclose(ae.detokenize(codes), alone, atol=1e-6)


def test_the_loss_reaches_the_encoder_through_the_rounding():
    ae = model().train()
    out = ae.loss({"image": torch.rand(4, 3, 8, 8)})
    assert {"loss", "l1", "psnr"} == set(out)
    out["loss"].backward()
    assert ae.encoder[0].weight.grad is not None and ae.encoder[0].weight.grad.abs().sum() > 0


def test_bad_codes_and_images_say_what_to_give():
    ae = model()
    with pytest.raises(ValueError, match=r"16 codes \(4 x 4\), given as \(B, 16\)"):
        ae.detokenize(torch.zeros(2, 15, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 12\)"):
        ae.detokenize(torch.full((1, 16), 12))
    with pytest.raises(ValueError, match="generator.resolution"):
        ae.tokenize(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="generator.levels"):
        FSQAutoencoder(**{**TINY, "levels": [1, 4]})
    with pytest.raises(ValueError, match="takes no condition"):
        ae.generate(2, condition=torch.tensor(3))


@pytest.fixture(scope="module")
def trained(only_image, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    args = ["train", "pipeline=glyphs_vq_debug", "trainer.progress=false", f"hydra.run.dir={run}"]
    assert cli.main(args) == 0
    return run


def test_the_debug_preset_trains_and_eval_reports_code_usage_and_reconstructions(trained, tmp_path):
    assert cli.main(["eval", f"checkpoint={trained}", "batch_size=5", f"hydra.run.dir={tmp_path}"]) == 0
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert {"loss", "l1", "psnr", "code_perplexity", "dead_codes"} <= set(scores)
    assert 1 <= scores["code_perplexity"] <= 12 and 0 <= scores["dead_codes"] < 12
    assert Image.open(tmp_path / "reconstructions" / "reconstructions.png").mode == "RGB"
    again = tmp_path / "again"
    assert cli.main(["eval", f"checkpoint={trained}", "batch_size=2", f"hydra.run.dir={again}"]) == 0
    other = json.loads((again / "eval.json").read_text())
    for key in ("code_perplexity", "dead_codes", "psnr"):  # split-level and per-example: any batch size
        assert other[key] == pytest.approx(scores[key], rel=1e-5)


def test_the_parameter_names_and_shapes_are_those_checkpoints_were_saved_with() -> None:
    """A checkpoint holds the state_dict: its keys and shapes stay as they were (captured in
    fsq_state_dict.json from the default model before its body moved to genloom_blocks)."""
    saved = json.loads((Path(__file__).parent / "fsq_state_dict.json").read_text())
    assert {key: list(value.shape) for key, value in FSQAutoencoder().state_dict().items()} == saved
