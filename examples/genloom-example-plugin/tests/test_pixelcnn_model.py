"""The PixelCNN: causal masks, a likelihood in nats and bits, seeded and conditioned sampling."""

import math

import pytest
import torch
from genloom.interfaces import Generator
from genloom_pixelcnn.pixelcnn import PixelCNN, horizontal_mask, vertical_mask

SIDE = 6


def tiny(**options) -> PixelCNN:
    torch.manual_seed(0)
    arch = {"resolution": SIDE, "levels": 4, "channels": 8, "layers": 3, "first_kernel": 3, "kernel": 3}
    return PixelCNN(**{**arch, **options})


def batch(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    return {
        "pixels": torch.randint(0, 4, (n, 1, SIDE, SIDE), generator=rng).float() / 3,
        "condition": torch.randint(0, 10, (n,), generator=rng),
    }


def test_mask_a_hides_the_centre_and_mask_b_shows_it() -> None:
    assert vertical_mask(3, include_centre=False).tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0]]
    assert vertical_mask(3, include_centre=True).tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]
    assert horizontal_mask(5, include_centre=False).tolist() == [[1, 1, 0, 0, 0]]
    assert horizontal_mask(5, include_centre=True).tolist() == [[1, 1, 1, 0, 0]]


def dependencies(model: PixelCNN, row: int, column: int) -> torch.Tensor:
    """``(SIDE, SIDE)`` bools: which input pixels the logits at (row, column) depend on."""
    levels = torch.randint(0, 4, (1, SIDE, SIDE), generator=torch.Generator().manual_seed(1))
    # Differentiate through the one-hot input: the gradient reaches every pixel the output reads.
    one_hot = torch.nn.functional.one_hot(levels, 4).permute(0, 3, 1, 2).float().requires_grad_()
    model.network(one_hot, torch.tensor([3]))[0, :, row, column].sum().backward()
    return one_hot.grad[0].abs().sum(dim=0) > 0


def test_each_output_depends_on_exactly_the_pixels_before_it() -> None:
    model = tiny(layers=SIDE)  # enough layers to reach every earlier pixel of a 6 x 6 image
    for row in range(SIDE):
        for column in range(SIDE):
            index = row * SIDE + column
            seen = dependencies(model, row, column).flatten()
            assert not seen[index:].any(), f"pixel ({row}, {column}) sees itself or a later pixel"
            assert seen[:index].all(), f"pixel ({row}, {column}) has a blind spot"


def test_the_loss_is_the_mean_nll_per_pixel_in_nats_and_bits() -> None:
    model = tiny()
    data = batch()
    model.eval()  # no label dropout: the loss is a deterministic function of the batch
    scores = model.loss(data)
    logits = model.logits((data["pixels"][:, 0] * 3).round().long(), data["condition"])
    log_probs = torch.log_softmax(logits, dim=1)
    target = (data["pixels"] * 3).round().long()  # (B, 1, H, W)
    expected = -log_probs.gather(1, target).mean()
    assert scores["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert scores["bits_per_pixel"].item() == pytest.approx(expected.item() / math.log(2), rel=1e-5)
    assert scores["loss"].item() == pytest.approx(math.log(4), rel=0.1)  # untrained: near uniform


def test_a_few_steps_learn_a_constant_image() -> None:
    model = tiny()
    data = {"pixels": torch.full((8, 1, SIDE, SIDE), 2 / 3), "condition": torch.zeros(8, dtype=torch.long)}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(data)["loss"].backward()
        optimizer.step()
    assert model.loss(data)["bits_per_pixel"].item() < 0.1
    model.eval()
    assert torch.equal(model.generate(2, condition=torch.tensor(0)), torch.full((2, 1, SIDE, SIDE), 2 / 3))


def test_generate_matches_the_sample_spec_and_the_seed() -> None:
    model = tiny().eval()
    assert isinstance(model, Generator)
    first = model.generate(3, condition=torch.tensor(7), rng=torch.Generator().manual_seed(5))
    again = model.generate(3, condition=torch.tensor(7), rng=torch.Generator().manual_seed(5))
    other = model.generate(3, condition=torch.tensor(7), rng=torch.Generator().manual_seed(6))
    assert first.shape == (3, *model.sample_spec.shape) and model.sample_spec.matches(first[0])
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert set((first * 3).round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_samples_with_one_label_each_or_none() -> None:
    model = tiny().eval()
    per_example = model.generate(2, condition=torch.tensor([1, 2]), rng=torch.Generator().manual_seed(0))
    unconditioned = model.generate(2, rng=torch.Generator().manual_seed(0))
    assert per_example.shape == unconditioned.shape == (2, 1, SIDE, SIDE)
    with pytest.raises(ValueError, match=r"label 10 is out of range: this PixelCNN knows labels 0..9"):
        model.generate(1, condition=torch.tensor(10))
    with pytest.raises(ValueError, match="trained without labels"):
        tiny(condition="none").generate(1, condition=torch.tensor(1))


def test_pixels_off_the_level_grid_name_the_setting_to_fix() -> None:
    with pytest.raises(ValueError, match="set encoder.levels to match"):
        tiny().loss({"pixels": torch.full((2, 1, SIDE, SIDE), 0.5), "condition": torch.zeros(2).long()})
    with pytest.raises(ValueError, match="set dataset.condition=label"):
        tiny().loss({"pixels": torch.zeros(2, 1, SIDE, SIDE)})
