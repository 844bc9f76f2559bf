"""mel_vae: the loss and metrics it reports, sampling under a condition, shapes and errors."""

import json
from pathlib import Path

import pytest
import torch
from genloom_audio.vae import MelVAE

TINY = {"n_mels": 30, "frames": 13, "widths": [4, 8], "latent_dim": 3, "condition_dim": 8}


def batch(size: int = 4, condition: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    mel = torch.rand(size, 1, 30, 13, generator=torch.Generator().manual_seed(0))
    return {"mel": mel} if condition is None else {"mel": mel, "condition": condition}


def test_the_loss_reports_recon_kl_elbo_and_mel_l1() -> None:
    torch.manual_seed(0)
    model = MelVAE(**TINY).eval()
    with torch.no_grad():
        out = model.loss(batch())
    assert set(out) == {"loss", "recon", "kl", "elbo", "mel_l1"}
    assert out["elbo"] == pytest.approx(-(out["recon"] + out["kl"]).item())
    assert out["loss"] == pytest.approx(((out["recon"] + out["kl"]) / (30 * 13)).item(), rel=1e-5)
    x, x_hat = model.reconstruct(batch())
    assert out["mel_l1"] == pytest.approx((x - x_hat).abs().mean().item(), rel=1e-5)
    with torch.no_grad():
        assert torch.equal(model.loss(batch())["loss"], out["loss"])  # evaluation noise is seeded


def test_odd_sizes_are_padded_inside_and_cropped_back() -> None:
    model = MelVAE(**TINY)
    samples = model.generate(3, rng=torch.Generator().manual_seed(1))
    assert samples.shape == (3, 1, 30, 13) and samples.min() >= 0 and samples.max() <= 1
    assert model.sample_spec.shape == (1, 30, 13)


def test_the_label_steers_generation_and_the_seed_fixes_it() -> None:
    torch.manual_seed(0)
    model = MelVAE(**TINY, condition="label", num_classes=5).eval()
    with torch.no_grad():  # give the untrained condition paths some weight
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)

    def draw(label: int | None, seed: int = 0) -> torch.Tensor:
        condition = None if label is None else torch.tensor(label)
        return model.generate(2, condition=condition, rng=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))
    assert not torch.equal(draw(1), draw(None))
    assert not torch.equal(draw(1), draw(1, seed=5))
    still = model.generate(2, condition=torch.tensor(3), temperature=0.0)
    assert torch.equal(still[0], still[1])


def test_a_caption_model_reads_word_ids() -> None:
    model = MelVAE(**TINY, condition="caption", caption_buckets=50)
    ids = torch.tensor([3, 7, 0, 0])
    assert model.generate(2, condition=ids).shape == (2, 1, 30, 13)
    assert model.loss(batch(2, ids.expand(2, -1)))["loss"].isfinite()
    with pytest.raises(ValueError, match="outside 0..50"):
        model.generate(1, condition=torch.tensor([51]))
    with pytest.raises(ValueError, match='with prompt="a caption", not label='):
        model.generate(1, condition=torch.tensor(2))


def test_labels_out_of_range_are_clear_errors() -> None:
    model = MelVAE(**TINY, condition="label", num_classes=5)
    with pytest.raises(ValueError, match=r"label=7 is not a class.*labels 0..4. The model was trained"):
        model.generate(1, condition=torch.tensor(7))
    with pytest.raises(ValueError, match="the data holds label 9"):
        model.train().loss(batch(2, torch.tensor([1, 9])))
    with pytest.raises(ValueError, match="the batch has no 'condition'; set dataset.condition"):
        model.loss(batch())


def test_a_condition_for_an_unconditioned_model_is_refused() -> None:
    with pytest.raises(ValueError, match="trained without a condition"):
        MelVAE(**TINY).generate(1, condition=torch.tensor(0))


def test_a_spectrogram_of_the_wrong_size_names_the_keys_to_set() -> None:
    with pytest.raises(ValueError, match="generator.frames to 1 \\+ round"):
        MelVAE(**TINY).loss({"mel": torch.rand(2, 1, 30, 14)})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"widths": []}, "generator.widths must be a non-empty list"),
        ({"latent_dim": 0}, "generator.latent_dim must be a positive integer"),
        ({"condition": "pitch"}, "generator.condition must be one of none, label, caption"),
        ({"beta": -1.0}, "generator.beta must be at least 0"),
        ({"condition_dropout": 1.0}, r"generator.condition_dropout must lie in \[0, 1\)"),
    ],
)
def test_bad_options_name_the_key(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MelVAE(**{**TINY, **options})


@pytest.mark.parametrize("condition", ["none", "label"])
def test_evaluation_is_a_per_example_average_whatever_the_batch_size(condition) -> None:
    from genloom.distributed import Placement
    from genloom.trainer import evaluate

    torch.manual_seed(0)
    model = MelVAE(**TINY, condition=condition, num_classes=3)
    mels = torch.rand(8, 1, 30, 13, generator=torch.Generator().manual_seed(2))
    data = [{"mel": mel, "condition": torch.tensor(i % 3)} for i, mel in enumerate(mels)]
    cpu = Placement(torch.device("cpu"))
    scores = [evaluate(model, data, batch_size=size, max_batches=None, placement=cpu) for size in (1, 3, 8)]
    for other in scores[1:]:
        assert other == pytest.approx(scores[0], rel=1e-5, abs=1e-6)
    assert model.training  # evaluation gives the training mode back


@pytest.mark.parametrize("condition", ["none", "label", "caption"])
def test_the_parameter_names_and_shapes_are_those_checkpoints_were_saved_with(condition: str) -> None:
    """A checkpoint holds the VAE's state_dict: its keys and shapes stay as they were (captured in
    mel_vae_state_dict.json from the VAE before its conditioning layers moved to genloom_blocks)."""
    saved = json.loads((Path(__file__).parent / "mel_vae_state_dict.json").read_text())[condition]
    built = {key: list(value.shape) for key, value in MelVAE(condition=condition).state_dict().items()}
    assert built == saved


def test_a_caption_embedding_steers_the_clip() -> None:
    torch.manual_seed(0)
    model = MelVAE(**TINY, condition="caption", caption_embedding_dim=6).eval()
    captions = torch.nn.functional.normalize(torch.randn(4, 6), dim=1)  # as hf_sentence gives
    assert torch.isfinite(model.loss(batch(condition=captions))["loss"])
    one, other = (model.generate(2, condition=c, temperature=0.0) for c in captions[:2])
    assert one.shape == (2, 1, 30, 13) and not torch.allclose(one, other)
    with pytest.raises(ValueError, match="are word ids.*condition_encoder=hf_sentence"):
        model.loss(batch(condition=torch.randint(1, 9, (4, 3))))
