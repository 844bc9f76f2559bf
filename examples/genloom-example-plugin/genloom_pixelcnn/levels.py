"""Greyscale images as a few intensity levels: the alphabet the PixelCNN predicts in.

A PixelCNN models each pixel as a categorical choice among ``K`` values, so the encoder
rounds intensities to the nearest of ``0, 1/(K-1), ..., 1``; the generator reads level
``k`` back as ``round(pixel * (K - 1))``. Keeping the values in [0, 1] (rather than handing
over integer ids) lets the decoder treat them like any other greyscale image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


class Levels:
    """Encoder: a greyscale image -> ``FloatTensor (1, H, W)`` on ``levels`` evenly spaced values.

    Accepts a numpy array or a tensor of shape ``(H, W)`` or ``(1, H, W)``: floats are
    intensities in [0, 1] (clipped), ``uint8`` is divided by 255, so anything
    ``numpy.asarray`` turns into a greyscale array (a Pillow ``L`` image too) encodes.

    Args:
        levels: how many intensity values remain, at least 2 (2 is black and white).
    """

    def __init__(self, *, levels: int = 4) -> None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"encoder.levels must be an integer of at least 2, got {levels!r}")
        self.levels = levels

    def encode(self, media: Any) -> Tensor:
        if isinstance(media, str):
            raise ValueError(
                f"the levels encoder encodes greyscale images, got the text {media!r}; "
                "a label-conditioned PixelCNN is sampled with label=N, not prompt="
            )
        if isinstance(media, Tensor):
            media = media.detach().cpu().numpy()
        array = np.asarray(media)
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 2 or 0 in array.shape:
            raise ValueError(
                f"the levels encoder takes one greyscale image of shape (H, W) or (1, H, W), "
                f"got shape {array.shape}"
            )
        if array.dtype == np.uint8:
            intensity = array.astype(np.float32) / 255.0
        elif np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
            intensity = np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0)
        else:
            raise ValueError(f"the levels encoder takes numbers, got an array of {array.dtype}")
        steps = self.levels - 1
        quantised = np.round(intensity * steps) / steps
        return torch.from_numpy(quantised.astype(np.float32))[None]  # (1, H, W)
