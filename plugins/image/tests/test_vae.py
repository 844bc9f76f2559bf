"""The VAE: its loss and metrics, sampling options, conditions, and its two halves."""

import json
import math
from pathlib import Path

import pytest
import torch
from genloom_image.vae import VAE, VAEDecoder, VAEEncoder
from PIL import Image

ARCH = {"resolution": 8, "channels": 3, "widths": [4, 8], "latent_channels": 2}


def tiny(**options) -> VAE:
    torch.manual_seed(0)
    return VAE(**{**ARCH, "condition_dim": 8, **options})


def batch(size: int = 4, **extra) -> dict[str, torch.Tensor]:
    return {"image": torch.rand(size, 3, 8, 8, generator=torch.Generator().manual_seed(1)), **extra}


def test_the_loss_is_recon_plus_beta_kl_per_pixel_value_and_elbo_their_negative_sum() -> None:
    model = tiny(beta=2.0).eval()
    with torch.no_grad():
        scores = model.loss(batch())
    assert set(scores) == {"loss", "recon", "kl", "elbo", "psnr"}
    assert scores["loss"] == pytest.approx(float(scores["recon"] + 2 * scores["kl"]) / (3 * 8 * 8), rel=1e-5)
    assert scores["elbo"] == pytest.approx(-float(scores["recon"] + scores["kl"]), rel=1e-5)
    assert scores["kl"] >= 0 and 0 < scores["psnr"] < 60
    assert torch.equal(model.loss(batch())["loss"], scores["loss"])  # evaluation noise is seeded


def test_psnr_in_eval_mode_scores_the_posterior_mean_reconstruction() -> None:
    model = tiny().eval()
    originals, reconstructions = model.reconstruct(batch())
    mse = (originals - reconstructions).pow(2).flatten(1).mean(1)
    assert model.loss(batch())["psnr"] == pytest.approx(float((-10 * torch.log10(mse)).mean()), rel=1e-4)


def test_training_lowers_the_loss() -> None:
    model = tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = batch(8)
    first = model.loss(data)["loss"].item()
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(data)["loss"].backward()
        optimizer.step()
    assert model.loss(data)["loss"].item() < first - 0.5


def test_generate_draws_images_seeded_and_scaled_by_temperature() -> None:
    model = tiny().eval()
    draw = lambda **o: model.generate(3, rng=torch.Generator().manual_seed(5), **o)  # noqa: E731
    images = draw()
    assert images.shape == (3, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, draw())
    assert not torch.equal(images[0], images[1])
    still = draw(temperature=0.0)  # the prior's mean only: every sample alike
    assert torch.equal(still[0], still[1])
    with pytest.raises(ValueError, match="temperature"):
        draw(temperature=-1.0)


def test_a_label_steers_generation_and_wrong_conditions_are_explained() -> None:
    model = tiny(condition="label", num_classes=3).eval()
    rng = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    one = model.generate(2, condition=torch.tensor(1), rng=rng())
    two = model.generate(2, condition=torch.tensor(2), rng=rng())
    assert not torch.allclose(one, two)
    mixed = model.generate(2, condition=torch.tensor([1, 2]), rng=rng())
    assert torch.equal(mixed[0], one[0]) and torch.equal(mixed[1], two[1])
    with pytest.raises(ValueError, match="label=3 is not a class.*labels 0..2. The model was trained"):
        model.generate(1, condition=torch.tensor(3))
    with pytest.raises(ValueError, match="conditioned on labels.*label=N"):
        model.generate(1, condition=torch.tensor([5, 9, 2, 0]))  # an encoded prompt
    with pytest.raises(ValueError, match="the data holds label 7, which is not a class"):
        model.train().loss(batch(2, condition=torch.tensor([0, 7])))


def test_captions_steer_generation_and_other_conditions_are_refused() -> None:
    model = tiny(condition="caption", caption_buckets=16).eval()
    red, blue = torch.tensor([3, 5, 0, 0]), torch.tensor([3, 9, 0, 0])
    rng = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert not torch.allclose(
        model.generate(1, condition=red, rng=rng()), model.generate(1, condition=blue, rng=rng())
    )
    assert model.generate(2).shape == (2, 3, 8, 8)  # no caption: the "no condition" embedding
    with pytest.raises(ValueError, match='conditioned on captions.*prompt="a caption"'):
        model.generate(1, condition=torch.tensor(2))
    with pytest.raises(ValueError, match="outside 0..16"):
        model.generate(1, condition=torch.tensor([3, 40]))
    with pytest.raises(ValueError, match="set dataset.condition=caption"):
        model.loss(batch())
    with pytest.raises(ValueError, match="trained without a condition"):
        tiny().generate(1, condition=torch.tensor(1))


def test_condition_dropout_trains_some_examples_without_their_condition() -> None:
    model = tiny(condition="label", num_classes=3, condition_dropout=0.5).train()
    ids = model.condition_ids.batch({"condition": torch.zeros(1000, dtype=torch.long)}, 1000, train=True)
    assert 400 < int((ids == 3).sum()) < 600  # index num_classes means "no condition"
    assert torch.equal(
        model.condition_ids.batch({"condition": torch.zeros(4, dtype=torch.long)}, 4, train=False),
        torch.zeros(4, dtype=torch.long),
    )


def test_the_halves_hold_the_vaes_weights_and_work_as_components() -> None:
    model = tiny().eval()
    encoder, decoder = VAEEncoder(**ARCH, condition_dim=8), VAEDecoder(**ARCH, condition_dim=8)
    state = model.state_dict()

    def half(prefix: str) -> dict[str, torch.Tensor]:
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

    encoder.load_state_dict(half("encoder."))  # strict: exactly the VAE's encoder.* weights
    decoder.load_state_dict(half("decoder."))
    assert len(state) == 1 + len(encoder.state_dict()) + len(decoder.state_dict())  # + log_sigma

    image = Image.new("RGB", (8, 8), (200, 30, 30))
    latent = encoder.encode(image)  # (latent_channels, R / 4, R / 4)
    assert latent.shape == (2, 2, 2)
    pixels = torch.tensor([200 / 255, 30 / 255, 30 / 255])[:, None, None].expand(3, 8, 8)[None]
    assert torch.allclose(latent, model.encoder(pixels)[0][0], atol=1e-6)
    picture = decoder.decode(latent)
    assert isinstance(picture, Image.Image) and picture.size == (8, 8)
    _, reconstruction = model.reconstruct({"image": pixels})
    shown = torch.tensor(picture.getpixel((3, 3))) / 255
    assert torch.allclose(shown, reconstruction[0, :, 3, 3], atol=1 / 255)


def test_architecture_options_that_cannot_work_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"generator.resolution=12 must be a multiple of .* = 8"):
        VAE(resolution=12, widths=[4, 4, 4])
    with pytest.raises(ValueError, match="generator.condition must be one of"):
        VAE(condition="colour")
    with pytest.raises(ValueError, match="generator.beta"):
        VAE(beta=-1.0)
    with pytest.raises(ValueError, match=r"takes images \(B, 3, 8, 8\)"):
        tiny().loss({"image": torch.rand(2, 1, 8, 8)})
    assert math.isfinite(tiny().loss(batch())["loss"].item())


@pytest.mark.parametrize("condition", ["none", "label"])
def test_evaluation_is_a_per_example_average_whatever_the_batch_size(condition) -> None:
    from genloom.distributed import Placement
    from genloom.trainer import evaluate

    model = tiny(condition=condition, num_classes=3)
    images = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    data = [{"image": image, "condition": torch.tensor(i % 3)} for i, image in enumerate(images)]
    cpu = Placement(torch.device("cpu"))
    scores = [evaluate(model, data, batch_size=size, max_batches=None, placement=cpu) for size in (1, 3, 8)]
    for other in scores[1:]:
        assert other == pytest.approx(scores[0], rel=1e-5, abs=1e-6)
    assert model.training  # evaluation gives the training mode back


@pytest.mark.parametrize("condition", ["none", "label", "caption"])
def test_the_parameter_names_and_shapes_are_those_checkpoints_were_saved_with(condition: str) -> None:
    """A checkpoint holds the VAE's state_dict: its keys and shapes stay as they were (captured in
    vae_state_dict.json from the VAE before its conditioning layers moved to genloom_blocks)."""
    saved = json.loads((Path(__file__).parent / "vae_state_dict.json").read_text())[condition]
    built = {key: list(value.shape) for key, value in VAE(condition=condition).state_dict().items()}
    assert built == saved
