"""The body of a discrete 2-d autoencoder: convolutions down to a grid of FSQ codes and back up.

The image plugin's ``image_fsq`` (pixels) and the audio plugin's ``mel_fsq`` (log-mel
spectrograms) are this model over their own tensors: each says what its batches hold
(:attr:`FSQGridAutoencoder.key`), how an input is checked and padded to the grid and how
the output is cropped back, and scores its reconstructions in its own units. What they
share is here: strided convolutions reduce an input ``(B, C, H, W)`` by ``f = 2 **
len(widths)`` on both axes; a 1 x 1 convolution maps each cell to ``len(levels)`` channels,
which FSQ (:mod:`genloom_blocks.fsq`) rounds onto ``prod(levels)`` codes; a mirrored
decoder draws the codes back. It also implements the ``Tokenizing`` and ``CodeUsage``
protocols of ``genloom.interfaces``: the code grid read in raster order (rows first) is a
sequence a token model can learn, which is how a two-stage pipeline uses it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genloom_blocks.fsq import FSQ

log = logging.getLogger(__name__)


class FSQGridAutoencoder(nn.Module):
    """Convolutional autoencoder with an FSQ bottleneck over a ``grid`` of cells.

    Subclasses set :attr:`key` and :attr:`noun`, implement :meth:`loss` and
    :meth:`check_input`, and override :meth:`pad` and :meth:`crop` when their inputs are not
    multiples of the reduction factor. The state-dict keys are ``encoder.*``, ``decoder.*``
    and ``fsq.*``.

    Args:
        channels: channels of the input (and of the output).
        widths: channels of each resolution level; one halving of both axes per entry.
        levels: FSQ values per code channel; ``prod(levels)`` codes.
        blocks: residual blocks at the coarsest level, on each side of the bottleneck
            (the resampling levels have none: on a CPU the full-resolution blocks cost the
            most and the grid's blocks do the most).
        grid: the code grid ``(rows, columns)`` of one input.
    """

    key = "x"  # the batch entry the model reads
    noun = "input"  # what one input is called in messages: "image", "clip"

    def __init__(
        self, *, channels: int, widths: Sequence[int], levels: Sequence[int], blocks: int,
        grid: tuple[int, int],
    ) -> None:
        super().__init__()
        widths = check_widths(widths, blocks)
        try:
            self.fsq = FSQ(levels)
        except ValueError as err:
            raise ValueError(f"generator.levels: {err}") from None
        d = self.fsq.code_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, widths[0], 3, padding=1),
            *(Down(w_in, w_out) for w_in, w_out in zip((widths[0], *widths[:-1]), widths, strict=True)),
            *(ResBlock(widths[-1]) for _ in range(blocks)),
            Norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], d, 1),
        )
        up = widths[::-1]
        self.decoder = nn.Sequential(
            nn.Conv2d(d, up[0], 3, padding=1),
            *(ResBlock(up[0]) for _ in range(blocks)),
            *(Up(w_in, w_out) for w_in, w_out in zip(up, (*up[1:], up[-1]), strict=True)),
            Norm(up[-1]), nn.SiLU(), nn.Conv2d(up[-1], channels, 3, padding=1),
        )
        self.grid = grid
        self.codebook_size = self.fsq.codebook_size  # Tokenizing
        self.token_count = grid[0] * grid[1]
        self._warned = False

    # -- what a subclass says ------------------------------------------------------------

    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def check_input(self, x: Tensor) -> None:
        """Raise a ``ValueError`` that says what to set when ``x`` is not a batch of inputs."""
        raise NotImplementedError

    def pad(self, x: Tensor) -> Tensor:
        """An input batch, padded to multiples of the reduction factor (unchanged here)."""
        return x

    def crop(self, x: Tensor) -> Tensor:
        """The decoder's output, cropped back to the input's size (unchanged here)."""
        return x

    def describe_grid(self) -> str:
        return f"{self.grid[0]} x {self.grid[1]}"

    # -- Tokenizing ----------------------------------------------------------------------

    @torch.no_grad()
    def tokenize(self, examples: Tensor) -> Tensor:
        """Inputs ``(B, C, H, W)`` -> codes ``(B, token_count)`` int64, in raster order."""
        self.check_input(examples)
        return self.fsq.codes_to_indices(self.fsq.quantize(self.encode(examples))).flatten(1)

    @torch.no_grad()
    def detokenize(self, codes: Tensor) -> Tensor:
        """Codes ``(B, token_count)`` in ``[0, codebook_size)`` -> outputs ``(B, C, H, W)`` in [0, 1]."""
        if codes.dim() != 2 or codes.shape[1] != self.token_count:
            raise ValueError(
                f"this autoencoder draws {'an' if self.noun[0] in 'aeiou' else 'a'} {self.noun} from "
                f"{self.token_count} codes ({self.describe_grid()}), given as (B, {self.token_count}); "
                f"got shape {tuple(codes.shape)}"
            )
        values = self.fsq.indices_to_codes(codes.to(self.fsq.levels.device))
        return self.decode(values.view(len(codes), *self.grid, -1)).clamp(0, 1)

    def code_counts(self, batch: Mapping[str, Tensor]) -> Tensor:
        """CodeUsage: how often each code occurs in the batch's inputs ``(codebook_size,)``."""
        return self.fsq.histogram(self.tokenize(batch[self.key]))

    # -- Reconstructing and Generator ----------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(originals, reconstructions)``: the batch's inputs drawn back from their codes."""
        x = batch[self.key]
        return x, self.detokenize(self.tokenize(x))

    @torch.no_grad()
    def generate(
        self, n: int, *, condition: Tensor | None = None, rng: torch.Generator | None = None
    ) -> Tensor:
        """Decode ``n`` grids of codes drawn uniformly at random: ``(n, C, H, W)`` in [0, 1].

        Stage 1 has no prior over its codes, so these are textures, not samples of the
        data: those come from a token model trained on these codes (a two-stage pipeline).
        """
        if n < 1:
            raise ValueError(f"n={n} must be at least 1")
        if condition is not None:
            raise ValueError(
                "an FSQ autoencoder takes no condition (it is stage 1 of a two-stage pipeline); "
                "sample it without prompt= or label="
            )
        device = self.fsq.levels.device
        if rng is not None and rng.device.type != device.type:
            raise ValueError(
                f"rng is a generator on {rng.device} but the model is on {device}; "
                f"create it with torch.Generator(device={str(device)!r})"
            )
        if not self._warned:
            log.warning(
                "sampling an FSQ autoencoder decodes uniformly random codes (stage 1 has no prior): "
                "expect textures; train a token model on its codes to sample %ss", self.noun
            )
            self._warned = True
        codes = torch.randint(0, self.codebook_size, (n, self.token_count), generator=rng, device=device)
        return self.detokenize(codes)

    # -- halves --------------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        """Inputs ``(B, C, H, W)`` -> latents ``(B, *grid, d)``: FSQ quantises the last axis."""
        return self.encoder(self.pad(x)).permute(0, 2, 3, 1)

    def decode(self, codes: Tensor) -> Tensor:
        """Code values ``(B, *grid, d)`` -> outputs ``(B, C, H, W)``, unbounded."""
        return self.crop(self.decoder(codes.permute(0, 3, 1, 2)))

    def reconstruction(self, x: Tensor) -> Tensor:
        """``x`` through the bottleneck, differentiably (the straight-through rounding): training's view."""
        return self.decode(self.fsq.quantize(self.encode(x)))


class Norm(nn.GroupNorm):
    """GroupNorm with up to 8 groups: it normalises each input alone (batch-independent scores)."""

    def __init__(self, width: int) -> None:
        super().__init__(math.gcd(8, width), width)


class ResBlock(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x))))))``, widths unchanged."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = Norm(width), nn.Conv2d(width, width, 3, padding=1)
        self.norm2, self.conv2 = Norm(width), nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Down(nn.Module):
    """Halve both axes: a 4 x 4 conv at stride 2, GroupNorm, SiLU."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.resample = nn.Conv2d(width_in, width_out, 4, stride=2, padding=1)
        self.norm = Norm(width_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.norm(self.resample(x)))


class Up(nn.Module):
    """Double both axes: GroupNorm, SiLU, a 4 x 4 transposed conv at stride 2 (no checkerboard)."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.norm = Norm(width_in)
        self.resample = nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.resample(F.silu(self.norm(x)))


def check_widths(widths: Sequence[int], blocks: int) -> tuple[int, ...]:
    """``generator.widths`` and ``generator.blocks``, checked: what a clear error says otherwise."""
    widths = tuple(widths)
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"generator.widths must be a non-empty list of positive widths, got {list(widths)}")
    if blocks < 0:
        raise ValueError(f"generator.blocks must be at least 0, got {blocks}")
    return widths
