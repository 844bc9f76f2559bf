"""A discrete image autoencoder: a grid of finite-scalar-quantised codes (stage 1 of two).

An image ``x`` ``(C, R, R)`` in [0, 1] is encoded by strided convolutions to a grid ``(R /
f, R / f)`` with ``f = 2 ** len(widths)``; a 1 x 1 convolution maps each cell to
``len(levels)`` channels, which FSQ (finite scalar quantisation, :mod:`genloom_blocks.fsq`)
rounds onto a fixed grid of ``prod(levels)`` codes; a mirrored decoder turns the codes back
into pixels. The convolutions, the quantiser and the token interface are the shared body
in :mod:`genloom_blocks.fsq_autoencoder` (the audio plugin's ``mel_fsq`` is the same body
over spectrograms); this file says what an image is and how a reconstruction is scored.
Training minimises the mean absolute error of the reconstruction (L1: sharper edges than
the squared error, which blurs what it is unsure of); FSQ needs no codebook or commitment
loss.

The codes are what a token model (stage 2) learns: :meth:`tokenize` reads an image as
``token_count = (R / f) ** 2`` code indices in raster order and :meth:`detokenize` draws
them, so the ``from_checkpoint`` components can freeze this model into another pipeline.
On its own this model has no prior over codes: :meth:`generate` decodes codes drawn
uniformly at random, which shows what the decoder makes of arbitrary codes, not pictures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from genloom.interfaces import SampleSpec
from genloom_blocks.fsq_autoencoder import FSQGridAutoencoder
from torch import Tensor

from genloom_image.pixels import check_image_size


class FSQAutoencoder(FSQGridAutoencoder):
    """Convolutional image autoencoder with an FSQ bottleneck; its keyword arguments are its whole config.

    Args:
        resolution: side of the square images; a multiple of ``2 ** len(widths)``.
        channels: image channels, 1 or 3 (the encoder's).
        widths: channels of each resolution level; one halving per entry.
        levels: FSQ values per code channel; ``prod(levels)`` codes.
        blocks: residual blocks at the coarsest level, on each side of the bottleneck.
    """

    key = "image"
    noun = "image"

    def __init__(
        self,
        *,
        resolution: int = 32,
        channels: int = 3,
        widths: Sequence[int] = (64, 128),
        levels: Sequence[int] = (8, 5, 5, 5),
        blocks: int = 1,
    ) -> None:
        check_image_size(resolution, channels, len(tuple(widths)))
        side = resolution // 2 ** len(tuple(widths))
        super().__init__(channels=channels, widths=widths, levels=levels, blocks=blocks, grid=(side, side))
        self.resolution, self.channels = resolution, channels
        self.sample_spec = SampleSpec(shape=(channels, resolution, resolution), dtype=torch.float32)

    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Score ``batch["image"]`` ``(B, C, R, R)``.

        Returns ``loss`` (minimised: the mean absolute error per pixel value), and per
        image ``l1`` (the same, detached) and ``psnr`` (dB, of the reconstruction clamped to
        [0, 1]). How much of the codebook is used is a property of a whole split, reported
        by evaluation through :meth:`code_counts` (``code_perplexity``, ``dead_codes``).
        """
        x = batch["image"]
        self.check_input(x)
        x_hat = self.reconstruction(x)
        l1 = (x - x_hat).abs().flatten(1).mean(1)  # (B,)
        mse = (x - x_hat.detach().clamp(0, 1)).pow(2).flatten(1).mean(1).clamp(min=1e-10)
        return {"loss": l1.mean(), "l1": l1.detach().mean(), "psnr": (-10 * torch.log10(mse)).mean()}

    def check_input(self, x: Tensor) -> None:
        expected = (self.channels, self.resolution, self.resolution)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"the FSQ autoencoder takes images (B, {', '.join(map(str, expected))}) (generator.channels, "
                f"generator.resolution), got {tuple(x.shape)}; make the encoder's resolution "
                "and channels match the generator's"
            )
