"""Finite scalar quantisation: the grid, its indices, and the straight-through gradient."""

import itertools

import pytest
import torch
from genloom_blocks.fsq import FSQ


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [8, 6, 5], [2, 3], [4]])
def test_every_index_round_trips_through_its_code(levels):
    fsq = FSQ(levels)
    assert fsq.codebook_size == torch.tensor(levels).prod().item()
    indices = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(indices)
    assert codes.shape == (fsq.codebook_size, len(levels))
    assert torch.equal(fsq.codes_to_indices(codes), indices)
    # Distinct indices are distinct grid points, and quantising a grid point leaves it there.
    assert len({tuple(c.tolist()) for c in codes}) == fsq.codebook_size
    assert codes.min() >= -1 and codes.max() <= 1


@pytest.mark.parametrize("level", [2, 3, 4, 5, 6, 7, 8])
def test_each_channel_takes_exactly_its_number_of_values_with_zero_on_a_value(level):
    fsq = FSQ([level])
    z = torch.linspace(-20, 20, 20001)[:, None]
    values = fsq.quantize(z).unique()
    assert len(values) == level  # even counts too: the paper's offset, not level - 1 or level + 1
    assert fsq.bound(torch.zeros(1, 1)).round().item() == 0
    expected = {(d - level // 2) / (level // 2) for d in range(level)}
    assert {round(v, 6) for v in values.tolist()} == {round(v, 6) for v in expected}


def test_quantising_snaps_to_the_grid_and_indices_match():
    fsq = FSQ([8, 5, 5, 5])
    z = torch.randn(64, 4) * 3
    values, indices = fsq(z)
    assert indices.dtype == torch.int64 and indices.shape == (64,)
    assert torch.equal(values, fsq.indices_to_codes(indices))
    assert indices.min() >= 0 and indices.max() < fsq.codebook_size


def test_gradients_flow_straight_through_the_rounding():
    fsq = FSQ([8, 5, 5, 5])
    z = torch.randn(16, 4, requires_grad=True)
    values, _ = fsq(z)
    values.sum().backward()
    assert z.grad is not None and (z.grad > 0).all()  # d round / dz is 0; the STE passes tanh's slope
    bounded = z.detach().clone().requires_grad_()
    (fsq.bound(bounded) / (fsq.levels // 2)).sum().backward()
    assert torch.allclose(z.grad, bounded.grad)


def test_the_projection_maps_wide_vectors_and_back():
    fsq = FSQ([5, 5, 5], dim=16)
    z = torch.randn(2, 7, 16, requires_grad=True)
    values, indices = fsq(z)
    assert values.shape == (2, 7, 16) and indices.shape == (2, 7)
    assert torch.allclose(fsq.indices_to_values(indices), values)
    values.square().sum().backward()
    assert all(p.grad is not None for p in fsq.parameters())


def test_each_vector_is_quantised_alone():
    fsq = FSQ([8, 5, 5, 5], dim=8)
    z = torch.randn(10, 8)
    _, together = fsq(z)
    alone = torch.cat([fsq(z[i : i + 1])[1] for i in range(10)])
    assert torch.equal(together, alone)


def test_histogram_counts_every_code():
    fsq = FSQ([2, 3])
    counts = fsq.histogram(torch.tensor([[0, 0, 5], [1, 5, 5]]))
    assert counts.tolist() == [2, 1, 0, 0, 0, 3]


def test_bad_levels_and_indices_say_what_is_wrong():
    with pytest.raises(ValueError, match="counts >= 2"):
        FSQ([8, 1])
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        FSQ([2, 3]).indices_to_codes(torch.tensor([6]))
    with pytest.raises(ValueError, match="width 2"):
        FSQ([2, 3])(torch.zeros(1, 3))


def test_the_grid_is_the_cartesian_product_in_mixed_radix_order():
    fsq = FSQ([2, 3])
    digits = [(a, b) for b, a in itertools.product(range(3), range(2))]  # the first level varies fastest
    codes = fsq.indices_to_codes(torch.arange(6))
    assert [(int(c[0]) + 1, int(c[1]) + 1) for c in codes] == digits


def test_low_precision_input_is_quantised_in_float32():
    fsq = FSQ([8, 5, 5, 5])
    z = torch.randn(32, 4)
    assert fsq.quantize(z.bfloat16()).dtype == torch.float32
    assert torch.equal(fsq(z.bfloat16())[1], fsq(z.bfloat16().float())[1])
