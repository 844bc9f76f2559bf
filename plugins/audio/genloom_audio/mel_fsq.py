"""A discrete autoencoder over mel spectrograms: a grid of FSQ codes (stage 1 of two).

A normalised log-mel spectrogram ``x`` ``(1, n_mels,
frames)`` in [0, 1] (see :mod:`genloom_audio.mel`) is padded with silence (0) to
multiples of ``f = 2 ** len(widths)`` on both axes and reduced by strided convolutions to
a grid ``(n_mels / f, frames / f)`` (rounded up); a 1 x 1 convolution maps each cell to
``len(levels)`` channels, which FSQ (finite scalar quantisation,
:mod:`genloom_blocks.fsq`) rounds onto a fixed grid of ``prod(levels)`` codes; a mirrored
decoder turns the codes back into a spectrogram, and the padding is cropped off.
Training minimises the mean absolute error of the reconstruction in normalised log-mel
units (``mel_l1``; 1 is the whole 80 dB range).
The convolutions, the quantiser and the token interface are the shared body in
:mod:`genloom_blocks.fsq_autoencoder` (the image plugin's ``image_fsq`` is the same body over
pixels); this file says what a clip is, how it is padded and how a reconstruction is scored.

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

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from genloom.interfaces import SampleSpec
from genloom_blocks.fsq_autoencoder import FSQGridAutoencoder
from torch import Tensor


class MelFSQ(FSQGridAutoencoder):
    """Convolutional spectrogram autoencoder with an FSQ bottleneck; its keyword arguments are its config.

    Args:
        n_mels: mel bands (the encoder's).
        frames: frames per clip (``1 + duration * sample_rate // hop_length``).
        widths: channels of each resolution level; one halving of both axes per entry.
        levels: FSQ values per code channel; ``prod(levels)`` codes.
        blocks: residual blocks at the coarsest level, on each side of the bottleneck.
    """

    key = "mel"
    noun = "clip"

    def __init__(
        self,
        *,
        n_mels: int = 80,
        frames: int = 32,
        widths: Sequence[int] = (16, 32, 64),
        levels: Sequence[int] = (8, 5, 5, 5),
        blocks: int = 1,
    ) -> None:
        for key, value in (("n_mels", n_mels), ("frames", frames)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"generator.{key} must be a positive integer, got {value!r}")
        factor = 2 ** len(tuple(widths))
        padded = (math.ceil(n_mels / factor) * factor, math.ceil(frames / factor) * factor)
        super().__init__(channels=1, widths=widths, levels=levels, blocks=blocks,
                         grid=(padded[0] // factor, padded[1] // factor))
        self.n_mels, self.frames, self.padded = n_mels, frames, padded
        self.sample_spec = SampleSpec(shape=(1, n_mels, frames), dtype=torch.float32)

    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Score ``batch["mel"]`` ``(B, 1, n_mels, frames)``.

        Returns ``loss`` (minimised) and ``mel_l1``, both the mean absolute error per
        spectrogram value in normalised log-mel units. How much of the codebook is used is
        a property of a whole split, reported by evaluation through :meth:`code_counts`
        (``code_perplexity``, ``dead_codes``).
        """
        x = batch["mel"]
        self.check_input(x)
        l1 = (x - self.reconstruction(x)).abs().flatten(1).mean(1)  # (B,)
        return {"loss": l1.mean(), "mel_l1": l1.detach().mean()}

    def pad(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, self.padded[1] - self.frames, 0, self.padded[0] - self.n_mels))  # silence

    def crop(self, x: Tensor) -> Tensor:
        return x[..., : self.n_mels, : self.frames]

    def describe_grid(self) -> str:
        return f"{self.grid[0]} bands x {self.grid[1]} steps"

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, self.n_mels, self.frames):
            raise ValueError(
                f"the FSQ autoencoder takes spectrograms (B, 1, {self.n_mels}, {self.frames}) "
                f"(generator.n_mels, generator.frames), got {tuple(x.shape)}; set generator.n_mels to "
                "encoder.n_mels and generator.frames to 1 + round(dataset.duration * sample_rate) "
                "// encoder.hop_length"
            )
