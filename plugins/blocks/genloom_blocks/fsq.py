"""Finite scalar quantisation (FSQ): a discrete bottleneck with no codebook to learn.

Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple". Each of the ``d =
len(levels)`` channels of a latent vector is bounded to ``levels[i]`` values and rounded;
the code of the vector is the tuple of its rounded values, read as one mixed-radix number

    index = sum_i digit_i * prod_{j < i} levels[j],   digit_i in 0 .. levels[i] - 1

so the implicit codebook is the grid of ``codebook_size = prod(levels)`` points. There is
no codebook loss, no commitment loss and no codebook to collapse: rounding is made
differentiable by the straight-through estimator (the gradient of the identity), and the
grid is fixed, so every code stays reachable.

Bounding. Channel ``i`` is squashed with ``tanh`` onto ``levels[i]`` integer values
centred on 0. An odd count L has the values ``-(L - 1) / 2 .. (L - 1) / 2``; an even count
has no value at 0, so (the paper's offset) the tanh is shifted by ``atanh(0.5 / half)``
and its output by ``-0.5``: ``z -> tanh(z + shift) * half - 0.5`` with ``half = (L - 1) /
2`` lands in ``(-L / 2, L / 2 - 1)`` and rounds to the L integers ``-L / 2 .. L / 2 - 1``,
with ``z = 0`` on the value 0. ``half`` is taken ``1e-3`` wider than ``(L - 1) / 2``:
that keeps ``atanh`` defined for ``L = 2`` (where ``0.5 / half`` would be 1) and changes
no rounding. The rounded values are divided by ``L // 2`` (codes in [-1, 1]).

This module names no modality: the image and audio plugins wrap it in their autoencoders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

BOUND_EPS = 1e-3  # widens the bound a little: atanh stays defined for two levels


class FSQ(nn.Module):
    """Quantise the last axis of a tensor onto a fixed grid of ``prod(levels)`` codes.

    Args:
        levels: how many values each quantised channel takes; each at least 2. The paper's
            choices: ``[8, 5, 5, 5]`` (1000 codes), ``[8, 6, 5]`` (240), ``[7, 5, 5, 5, 5]``.
        dim: width of the vectors to quantise; when it differs from ``len(levels)`` a
            linear map projects them down before and back up after quantising. None: the
            input already has ``len(levels)`` channels.
    """

    def __init__(self, levels: Sequence[int], dim: int | None = None) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or any(level < 2 for level in levels):
            raise ValueError(f"FSQ levels must be a non-empty list of counts >= 2, got {levels}")
        self.levels_list = levels
        self.codebook_size = math.prod(levels)
        self.code_dim = len(levels)
        self.dim = self.code_dim if dim is None else dim
        if self.dim < 1:
            raise ValueError(f"FSQ dim must be at least 1, got {dim}")
        projected = self.dim != self.code_dim
        self.project_in = nn.Linear(self.dim, self.code_dim) if projected else nn.Identity()
        self.project_out = nn.Linear(self.code_dim, self.dim) if projected else nn.Identity()
        # Derived from `levels` (the config), so not part of the saved weights.
        level_tensor = torch.tensor(levels, dtype=torch.long)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]], dtype=torch.long), dim=0)
        self.register_buffer("levels", level_tensor, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``z`` ``(..., dim)`` -> its quantised value ``(..., dim)`` and code indices ``(...)`` int64.

        The value passes gradients straight through the rounding to ``z``.
        """
        self._check_width(z)
        codes = self.quantize(self.project_in(z))
        return self.project_out(codes), self.codes_to_indices(codes)

    def quantize(self, z: Tensor) -> Tensor:
        """``(..., len(levels))`` -> the nearest grid point in [-1, 1], straight-through, in float32.

        Float32 whatever the input (under bf16 autocast too): rounding a bf16 value near a
        bin's edge could land on the neighbouring code."""
        bounded = self.bound(z.float())
        rounded = bounded + (bounded.round() - bounded).detach()  # straight-through estimator
        return rounded / (self.levels // 2).to(z.dtype)

    def bound(self, z: Tensor) -> Tensor:
        """Squash each channel onto ``levels[i]`` integer values (see the module docstring)."""
        levels = self.levels.to(z.dtype)
        half = (levels - 1) * (1 + BOUND_EPS) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Grid points ``(..., len(levels))`` in [-1, 1] -> indices ``(...)`` in ``[0, codebook_size)``."""
        half_width = self.levels // 2
        digits = (codes * half_width.to(codes.dtype)).round().long() + half_width  # (..., d) in 0..L-1
        return (digits * self.basis).sum(-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Indices ``(...)`` -> their grid points ``(..., len(levels))`` in [-1, 1]; the inverse of
        :meth:`codes_to_indices`. Raise ``ValueError`` for an index outside ``[0, codebook_size)``."""
        if indices.is_floating_point():
            raise ValueError(f"FSQ indices must be integers, got dtype {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"FSQ indices must lie in [0, {self.codebook_size}) (levels {self.levels_list}), "
                f"got values in [{int(indices.min())}, {int(indices.max())}]"
            )
        digits = (indices.long()[..., None] // self.basis) % self.levels  # (..., d)
        half_width = self.levels // 2
        return (digits - half_width).float() / half_width.float()

    def indices_to_values(self, indices: Tensor) -> Tensor:
        """Indices ``(...)`` -> what :meth:`forward` returns for them ``(..., dim)`` (projected back up)."""
        codes = self.indices_to_codes(indices).to(self.basis.device)
        if isinstance(self.project_out, nn.Linear):
            codes = codes.to(self.project_out.weight.dtype)
        return self.project_out(codes)

    def histogram(self, indices: Tensor) -> Tensor:
        """How often each code occurs in ``indices``: ``(codebook_size,)`` int64."""
        return torch.bincount(indices.flatten(), minlength=self.codebook_size)

    def _check_width(self, z: Tensor) -> None:
        if z.shape[-1] != self.dim:
            raise ValueError(
                f"FSQ quantises vectors of width {self.dim} on the last axis, got {tuple(z.shape)}"
            )

