"""A discrete image autoencoder: a grid of finite-scalar-quantised codes (stage 1 of two).

The whole model is in this file. An image ``x`` ``(C, R, R)`` in [0, 1] is encoded by
strided convolutions to a grid ``(R / f, R / f)`` with ``f = 2 ** len(widths)``; a 1 x 1
convolution maps each cell to ``len(levels)`` channels, which FSQ (finite scalar
quantisation, :mod:`genloom_blocks.fsq`) rounds onto a fixed grid of ``prod(levels)``
codes; a mirrored decoder turns the codes back into pixels. Training minimises the mean
absolute error of the reconstruction (L1: sharper edges than the squared error, which
blurs what it is unsure of); FSQ needs no codebook or commitment loss.

The codes are what a token model (stage 2) learns: :meth:`tokenize` reads an image as
``token_count = (R / f) ** 2`` code indices in raster order and :meth:`detokenize` draws
them, so the ``from_checkpoint`` components can freeze this model into another pipeline.
On its own this model has no prior over codes: :meth:`generate` decodes codes drawn
uniformly at random, which shows what the decoder makes of arbitrary codes, not pictures.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from genloom.interfaces import SampleSpec
from genloom_blocks.fsq import FSQ
from torch import Tensor, nn

log = logging.getLogger(__name__)


class FSQAutoencoder(nn.Module):
    """Convolutional autoencoder with an FSQ bottleneck; its keyword arguments are its whole config.

    Args:
        resolution: side of the square images; a multiple of ``2 ** len(widths)``.
        channels: image channels, 1 or 3 (the encoder's).
        widths: channels of each resolution level; one halving per entry.
        levels: FSQ values per code channel; ``prod(levels)`` codes.
        blocks: residual blocks at the coarsest level, on each side of the bottleneck
            (the resampling levels have none: on a CPU the full-resolution blocks cost the
            most and the grid's blocks do the most).
    """

    def __init__(
        self,
        *,
        resolution: int = 32,
        channels: int = 3,
        widths: Sequence[int] = (64, 128),
        levels: Sequence[int] = (8, 5, 5, 5),
        blocks: int = 1,
    ) -> None:
        super().__init__()
        widths = _check_architecture(resolution, channels, widths, blocks)
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
        self.resolution, self.channels = resolution, channels
        self.grid = resolution // 2 ** len(widths)
        self.sample_spec = SampleSpec(shape=(channels, resolution, resolution), dtype=torch.float32)
        self.codebook_size = self.fsq.codebook_size  # Tokenizing
        self.token_count = self.grid**2
        self._warned = False

    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Score ``batch["image"]`` ``(B, C, R, R)``.

        Returns ``loss`` (minimised: the mean absolute error per pixel value), and per
        image ``l1`` (the same, detached) and ``psnr`` (dB, of the reconstruction clamped to
        [0, 1]). How much of the codebook is used is a property of a whole split, reported
        by evaluation through :meth:`code_counts` (``code_perplexity``, ``dead_codes``).
        """
        x = batch["image"]
        self._check_pixels(x)
        x_hat = self._decode(self.fsq.quantize(self._encode(x)))
        l1 = (x - x_hat).abs().flatten(1).mean(1)  # (B,)
        mse = (x - x_hat.detach().clamp(0, 1)).pow(2).flatten(1).mean(1).clamp(min=1e-10)
        return {"loss": l1.mean(), "l1": l1.detach().mean(), "psnr": (-10 * torch.log10(mse)).mean()}

    # -- Tokenizing ----------------------------------------------------------------------

    @torch.no_grad()
    def tokenize(self, examples: Tensor) -> Tensor:
        """Images ``(B, C, R, R)`` in [0, 1] -> codes ``(B, token_count)`` int64, in raster order."""
        self._check_pixels(examples)
        codes = self.fsq.quantize(self._encode(examples))  # (B, grid, grid, d)
        return self.fsq.codes_to_indices(codes).flatten(1)

    @torch.no_grad()
    def detokenize(self, codes: Tensor) -> Tensor:
        """Codes ``(B, token_count)`` in ``[0, codebook_size)`` -> images ``(B, C, R, R)`` in [0, 1]."""
        if codes.dim() != 2 or codes.shape[1] != self.token_count:
            raise ValueError(
                f"this autoencoder draws an image from {self.token_count} codes ({self.grid} x {self.grid}), "
                f"given as (B, {self.token_count}); got shape {tuple(codes.shape)}"
            )
        values = self.fsq.indices_to_codes(codes.to(self.fsq.levels.device))
        values = values.view(len(codes), self.grid, self.grid, -1)
        return self._decode(values).clamp(0, 1)

    def code_counts(self, batch: Mapping[str, Tensor]) -> Tensor:
        """CodeUsage: how often each code occurs in the batch's images ``(codebook_size,)``."""
        return self.fsq.histogram(self.tokenize(batch["image"]))

    # -- Reconstructing and Generator ----------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(originals, reconstructions)`` ``(B, C, R, R)``: images drawn back from their codes."""
        x = batch["image"]
        return x, self.detokenize(self.tokenize(x))

    @torch.no_grad()
    def generate(
        self, n: int, *, condition: Tensor | None = None, rng: torch.Generator | None = None
    ) -> Tensor:
        """Decode ``n`` grids of codes drawn uniformly at random: ``(n, C, R, R)`` in [0, 1].

        Stage 1 has no prior over its codes, so these are textures, not pictures: pictures
        come from a token model trained on these codes (a two-stage pipeline).
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
                "expect textures; train a token model on its codes to sample pictures"
            )
            self._warned = True
        codes = torch.randint(0, self.codebook_size, (n, self.token_count), generator=rng, device=device)
        return self.detokenize(codes)

    # -- halves --------------------------------------------------------------------------

    def _encode(self, x: Tensor) -> Tensor:
        return self.encoder(x).permute(0, 2, 3, 1)  # (B, grid, grid, d): FSQ quantises the last axis

    def _decode(self, codes: Tensor) -> Tensor:
        return self.decoder(codes.permute(0, 3, 1, 2))  # (B, C, R, R), unbounded

    def _check_pixels(self, x: Tensor) -> None:
        expected = (self.channels, self.resolution, self.resolution)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"the FSQ autoencoder takes images (B, {', '.join(map(str, expected))}) (generator.channels, "
                f"generator.resolution), got {tuple(x.shape)}; make the encoder's resolution "
                "and channels match the generator's"
            )


class Norm(nn.GroupNorm):
    """GroupNorm with up to 8 groups: it normalises each image alone (batch-independent scores)."""

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
    """Halve the resolution: a 4 x 4 conv at stride 2, GroupNorm, SiLU."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.resample = nn.Conv2d(width_in, width_out, 4, stride=2, padding=1)
        self.norm = Norm(width_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.norm(self.resample(x)))


class Up(nn.Module):
    """Double the resolution: GroupNorm, SiLU, a 4 x 4 transposed conv at stride 2 (no checkerboard)."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.norm = Norm(width_in)
        self.resample = nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.resample(F.silu(self.norm(x)))


def _check_architecture(
    resolution: int, channels: int, widths: Sequence[int], blocks: int
) -> tuple[int, ...]:
    widths = tuple(widths)
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"generator.widths must be a non-empty list of positive widths, got {list(widths)}")
    factor = 2 ** len(widths)
    if resolution % factor or resolution < factor:
        raise ValueError(
            f"generator.resolution={resolution} must be a multiple of 2 ** len(generator.widths) "
            f"= {factor} (one halving per width)"
        )
    if channels not in (1, 3):
        raise ValueError(f"generator.channels must be 1 or 3, got {channels}")
    if blocks < 0:
        raise ValueError(f"generator.blocks must be at least 0, got {blocks}")
    return widths
