"""The FSQ autoencoder over mel frames (mel_fsq): stage 1 of a two-stage pipeline, tokenizing clips."""

import json
from pathlib import Path

import pytest
import torch
from genloom import cli
from genloom.interfaces import CodeUsage, Reconstructing, Tokenizing
from genloom_audio.mel_fsq import MelFSQ

TINY = dict(n_mels=30, frames=15, widths=[8], levels=[3, 4], blocks=1)


def model(**options) -> MelFSQ:
    torch.manual_seed(0)
    return MelFSQ(**{**TINY, **options}).eval()


def test_it_is_a_tokenizer_an_autoencoder_and_counts_its_codes():
    ae = model()
    assert isinstance(ae, Tokenizing) and isinstance(ae, Reconstructing) and isinstance(ae, CodeUsage)
    # 30 bands x 15 frames padded to 30 x 16, halved once: a 15 x 8 grid of codes.
    assert ae.codebook_size == 12 and ae.token_count == 120
    assert MelFSQ(n_mels=80, frames=32, widths=[8, 8, 8], levels=[8, 5, 5, 5]).token_count == 40


def test_tokens_are_codes_in_range_and_detokenize_draws_spectrograms():
    ae = model()
    x = torch.rand(5, 1, 30, 15)
    codes = ae.tokenize(x)
    assert codes.shape == (5, 120) and codes.dtype == torch.int64
    assert codes.min() >= 0 and codes.max() < ae.codebook_size
    mels = ae.detokenize(codes)
    assert mels.shape == (5, 1, 30, 15) and mels.min() >= 0 and mels.max() <= 1
    originals, reconstructions = ae.reconstruct({"mel": x})
    assert torch.equal(originals, x) and torch.equal(reconstructions, mels)
    assert ae.code_counts({"mel": x}).sum() == 5 * 120


def test_tokenizing_is_deterministic_and_batch_independent():
    ae = model()
    x = torch.rand(6, 1, 30, 15)
    together = ae.tokenize(x)
    assert torch.equal(together, ae.tokenize(x))
    assert torch.equal(together, torch.cat([ae.tokenize(x[i : i + 1]) for i in range(6)]))


def test_the_loss_reaches_the_encoder_through_the_rounding():
    ae = model().train()
    out = ae.loss({"mel": torch.rand(4, 1, 30, 15)})
    assert {"loss", "mel_l1"} == set(out)
    out["loss"].backward()
    assert ae.encoder[0].weight.grad is not None and ae.encoder[0].weight.grad.abs().sum() > 0


def test_bad_codes_and_spectrograms_say_what_to_give():
    ae = model()
    with pytest.raises(ValueError, match=r"120 codes \(15 bands x 8 steps\), given as \(B, 120\)"):
        ae.detokenize(torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 12\)"):
        ae.detokenize(torch.full((1, 120), -1))
    with pytest.raises(ValueError, match="generator.frames"):
        ae.tokenize(torch.rand(1, 1, 30, 16))
    with pytest.raises(ValueError, match="generator.levels"):
        MelFSQ(**{**TINY, "levels": []})
    with pytest.raises(ValueError, match="takes no condition"):
        ae.generate(2, condition=torch.tensor(3))


def test_the_debug_preset_trains_and_eval_reports_code_usage(only_audio, tmp_path: Path):
    run = tmp_path / "run"
    args = ["train", "pipeline=notes_vq_debug", "trainer.progress=false", f"hydra.run.dir={run}"]
    assert cli.main(args) == 0
    assert cli.main(["eval", f"checkpoint={run}", "batch_size=5", f"hydra.run.dir={tmp_path / 'eval'}"]) == 0
    scores = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert {"loss", "mel_l1", "code_perplexity", "dead_codes"} <= set(scores)
    assert 1 <= scores["code_perplexity"] <= 12 and 0 <= scores["dead_codes"] < 12
    assert (tmp_path / "eval" / "reconstructions" / "reconstructions.png").exists()


def test_the_parameter_names_and_shapes_are_those_checkpoints_were_saved_with() -> None:
    """A checkpoint holds the state_dict: its keys and shapes stay as they were (captured in
    mel_fsq_state_dict.json from the default model before its body moved to genloom_blocks)."""
    saved = json.loads((Path(__file__).parent / "mel_fsq_state_dict.json").read_text())
    assert {key: list(value.shape) for key, value in MelFSQ().state_dict().items()} == saved
