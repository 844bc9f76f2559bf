"""A discrete autoencoder over mel spectrograms: a grid of FSQ codes (stage 1 of two).

The whole model is in this file. A normalised log-mel spectrogram ``x`` ``(1, n_mels,
frames)`` in [0, 1] (see :mod:`genloom_audio.mel`) is padded with silence (0) to
multiples of ``f = 2 ** len(widths)`` on both axes and reduced by strided convolutions to
a grid ``(n_mels / f, frames / f)`` (rounded up); a 1 x 1 convolution maps each cell to
``len(levels)`` channels, which FSQ (finite scalar quantisation,
:mod:`genloom_blocks.fsq`) rounds onto a fixed grid of ``prod(levels)`` codes; a mirrored
decoder turns the codes back into a spectrogram, and the padding is cropped off.
Training minimises the mean absolute error of the reconstruction in normalised log-mel
units (``mel_l1``; 1 is the whole 80 dB range).

Why a grid over bands and frames, not one code per frame with the bands as channels: a
note is a few harmonic lines, each a local pattern that a 2-d convolution finds wherever
it lies, so each code says what a patch of the spectrogram holds. One code per step
(measured: 1-d convolutions over time, 16 codes of 1000 a clip on ``pipeline=notes_vq``)
had to name the whole spectrum of a step in one of 1000 values and, after 200 steps,
reconstructed mostly the loudness (validation ``mel_l1`` 0.107, 732 codes unused), the
harmonics lost; this grid had them in place after 98 steps (``mel_l1`` 0.065, 181 unused).

The codes are what a token model (stage 2) learns: :meth:`tokenize` reads a clip as
``token_count`` code indices in raster order (band-major: all frames of the lowest band
row first) and :meth:`detokenize` draws them, so the ``from_checkpoint`` components can
freeze this model into another pipeline. On its own it has no prior over codes:
:meth:`generate` decodes uniformly random codes (what the decoder makes of arbitrary
codes, not notes).
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


class MelFSQ(nn.Module):
    """Convolutional spectrogram autoencoder with an FSQ bottleneck; its keyword arguments are its config.

    Args:
        n_mels: mel bands (the encoder's).
        frames: frames per clip (``1 + duration * sample_rate // hop_length``).
        widths: channels of each resolution level; one halving of both axes per entry.
        levels: FSQ values per code channel; ``prod(levels)`` codes.
        blocks: residual blocks at the coarsest level, on each side of the bottleneck.
    """

    def __init__(
        self,
        *,
        n_mels: int = 80,
        frames: int = 32,
        widths: Sequence[int] = (16, 32, 64),
        levels: Sequence[int] = (8, 5, 5, 5),
        blocks: int = 1,
    ) -> None:
        super().__init__()
        widths = _check_architecture(n_mels, frames, widths, blocks)
        try:
            self.fsq = FSQ(levels)
        except ValueError as err:
            raise ValueError(f"generator.levels: {err}") from None
        d = self.fsq.code_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, padding=1),
            *(Down(w_in, w_out) for w_in, w_out in zip((widths[0], *widths[:-1]), widths, strict=True)),
            *(ResBlock(widths[-1]) for _ in range(blocks)),
            Norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], d, 1),
        )
        up = widths[::-1]
        self.decoder = nn.Sequential(
            nn.Conv2d(d, up[0], 3, padding=1),
            *(ResBlock(up[0]) for _ in range(blocks)),
            *(Up(w_in, w_out) for w_in, w_out in zip(up, (*up[1:], up[-1]), strict=True)),
            Norm(up[-1]), nn.SiLU(), nn.Conv2d(up[-1], 1, 3, padding=1),
        )
        factor = 2 ** len(widths)
        self.n_mels, self.frames = n_mels, frames
        self.padded = (math.ceil(n_mels / factor) * factor, math.ceil(frames / factor) * factor)
        self.grid = (self.padded[0] // factor, self.padded[1] // factor)
        self.sample_spec = SampleSpec(shape=(1, n_mels, frames), dtype=torch.float32)
        self.codebook_size = self.fsq.codebook_size  # Tokenizing
        self.token_count = self.grid[0] * self.grid[1]
        self._warned = False

    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Score ``batch["mel"]`` ``(B, 1, n_mels, frames)``.

        Returns ``loss`` (minimised) and ``mel_l1``, both the mean absolute error per
        spectrogram value in normalised log-mel units. How much of the codebook is used is
        a property of a whole split, reported by evaluation through :meth:`code_counts`
        (``code_perplexity``, ``dead_codes``).
        """
        x = batch["mel"]
        self._check_mel(x)
        x_hat = self._decode(self.fsq.quantize(self._encode(x)))
        l1 = (x - x_hat).abs().flatten(1).mean(1)  # (B,)
        return {"loss": l1.mean(), "mel_l1": l1.detach().mean()}

    # -- Tokenizing ----------------------------------------------------------------------

    @torch.no_grad()
    def tokenize(self, examples: Tensor) -> Tensor:
        """Spectrograms ``(B, 1, n_mels, frames)`` -> codes ``(B, token_count)`` int64, in raster order."""
        self._check_mel(examples)
        return self.fsq.codes_to_indices(self.fsq.quantize(self._encode(examples))).flatten(1)

    @torch.no_grad()
    def detokenize(self, codes: Tensor) -> Tensor:
        """Codes ``(B, token_count)`` in ``[0, codebook_size)`` -> ``(B, 1, n_mels, frames)`` in [0, 1]."""
        if codes.dim() != 2 or codes.shape[1] != self.token_count:
            raise ValueError(
                f"this autoencoder draws a clip from {self.token_count} codes ({self.grid[0]} bands x "
                f"{self.grid[1]} steps), given as "
                f"(B, {self.token_count}); got shape {tuple(codes.shape)}"
            )
        values = self.fsq.indices_to_codes(codes.to(self.fsq.levels.device))
        return self._decode(values.view(len(codes), *self.grid, -1)).clamp(0, 1)

    def code_counts(self, batch: Mapping[str, Tensor]) -> Tensor:
        """CodeUsage: how often each code occurs in the batch's clips ``(codebook_size,)``."""
        return self.fsq.histogram(self.tokenize(batch["mel"]))

    # -- Reconstructing and Generator ----------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(originals, reconstructions)`` ``(B, 1, n_mels, frames)``: clips drawn back from their codes."""
        x = batch["mel"]
        return x, self.detokenize(self.tokenize(x))

    @torch.no_grad()
    def generate(
        self, n: int, *, condition: Tensor | None = None, rng: torch.Generator | None = None
    ) -> Tensor:
        """Decode ``n`` sequences of codes drawn uniformly at random: ``(n, 1, n_mels, frames)`` in [0, 1].

        Stage 1 has no prior over its codes, so these are noises, not notes: notes come
        from a token model trained on these codes (a two-stage pipeline).
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
                "expect noise; train a token model on its codes to sample notes"
            )
            self._warned = True
        codes = torch.randint(0, self.codebook_size, (n, self.token_count), generator=rng, device=device)
        return self.detokenize(codes)

    # -- halves --------------------------------------------------------------------------

    def _encode(self, x: Tensor) -> Tensor:
        """``(B, 1, n_mels, frames)`` -> ``(B, *grid, d)``: FSQ quantises the last axis."""
        h = F.pad(x, (0, self.padded[1] - self.frames, 0, self.padded[0] - self.n_mels))  # silence
        return self.encoder(h).permute(0, 2, 3, 1)

    def _decode(self, codes: Tensor) -> Tensor:
        """``(B, *grid, d)`` -> ``(B, 1, n_mels, frames)``, unbounded."""
        return self.decoder(codes.permute(0, 3, 1, 2))[..., : self.n_mels, : self.frames]

    def _check_mel(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, self.n_mels, self.frames):
            raise ValueError(
                f"the FSQ autoencoder takes spectrograms (B, 1, {self.n_mels}, {self.frames}) "
                f"(generator.n_mels, generator.frames), got {tuple(x.shape)}; set generator.n_mels to "
                "encoder.n_mels and generator.frames to 1 + round(dataset.duration * sample_rate) "
                "// encoder.hop_length"
            )


class Norm(nn.GroupNorm):
    """GroupNorm with up to 8 groups: it normalises each clip alone (batch-independent scores)."""

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


def _check_architecture(n_mels: int, frames: int, widths: Sequence[int], blocks: int) -> tuple[int, ...]:
    widths = tuple(widths)
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"generator.widths must be a non-empty list of positive widths, got {list(widths)}")
    for key, value in (("n_mels", n_mels), ("frames", frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"generator.{key} must be a positive integer, got {value!r}")
    if blocks < 0:
        raise ValueError(f"generator.blocks must be at least 0, got {blocks}")
    return widths
