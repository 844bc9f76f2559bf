"""Images as pixels: any PIL image -> a ``(C, R, R)`` float tensor in [0, 1].

Every Pillow mode is accepted and brought to ``channels`` (1 grayscale, 3 RGB):

* ``1``, ``L``: grayscale, 0-255;
* ``P``: the palette's colours; a palette with a transparent index is treated as RGBA;
* ``LA``, ``RGBA``, ``PA`` (and premultiplied ``La``, ``RGBa``): composited on **white**,
  the way a viewer shows a transparent PNG on a page;
* ``I;16`` (16-bit PNG and TIFF): divided by 65535;
* ``I`` (32-bit integers): divided by 65535 when a value exceeds 255 (16-bit data that an
  older Pillow read as ``I``), by 255 otherwise (Pillow's own ``convert("I")`` scale);
* ``F`` (32-bit floats): taken as intensities in [0, 1] when they all lie there, divided by
  255 otherwise (Pillow's ``convert("F")`` scale); out-of-range values are clipped and
  NaN reads as 0;
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``...: converted to RGB by Pillow.

A photo's EXIF orientation tag is applied first (``ImageOps.exif_transpose``), so a JPEG
that a phone stored sideways with "rotate 90" in its tag is encoded upright, as a viewer
shows it. Colour becomes gray by ITU-R 601 luma (Pillow's ``convert("L")``); gray becomes colour by
repeating it. The shorter side is resized to ``resolution`` (Lanczos, which antialiases
when shrinking) and the longer side is center-cropped to it.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

ORIENTATION = 0x0112  # the EXIF tag: 1 is upright, 2-8 say how to rotate or mirror
WHITE = (255, 255, 255, 255)
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
WITH_ALPHA = ("LA", "La", "PA", "RGBA", "RGBa")


class Pixels:
    """Encoder: a PIL image -> ``FloatTensor (channels, resolution, resolution)`` in [0, 1].

    Args:
        resolution: the side of the square output, in pixels.
        channels: 1 (grayscale) or 3 (RGB).
    """

    def __init__(self, *, resolution: int = 32, channels: int = 3) -> None:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"encoder.resolution must be a positive integer, got {resolution!r}")
        if channels not in (1, 3):
            raise ValueError(f"encoder.channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        self.resolution = resolution
        self.channels = channels

    def fingerprint(self) -> str:
        """:class:`genloom.interfaces.Fingerprintable`: the output depends on these alone."""
        return f"pixels-v1 resolution={self.resolution} channels={self.channels}"

    def encode(self, media: Image.Image) -> Tensor:
        if not isinstance(media, Image.Image):
            shown = repr(media) if isinstance(media, str) else type(media).__name__
            raise ValueError(
                f"the pixels encoder encodes PIL images, got {shown}. A prompt steers only "
                "a model trained with captions (pipeline=shapes, sampled with prompt=...); "
                "a label-conditioned model takes label=N"
            )
        where = getattr(media, "filename", "") or f"a {media.width}x{media.height} {media.mode} image"
        if media.width < 1 or media.height < 1:
            raise ValueError(f"{where} is empty ({media.width}x{media.height} pixels)")
        try:
            media.load()
            image = flatten(upright(media))
        except (OSError, ValueError) as err:
            raise ValueError(f"{where} cannot be read as pixels: {err}") from err
        if self.channels == 1 and image.mode == "RGB":
            image = image.convert("L")
        image = fit(image, self.resolution)
        array = np.asarray(image, dtype=np.float32)
        if image.mode != "F":
            array = array / 255.0
        pixels = torch.from_numpy(np.array(array, copy=True))
        pixels = pixels[None] if pixels.dim() == 2 else pixels.permute(2, 0, 1)  # (C, R, R)
        if self.channels == 3 and pixels.shape[0] == 1:
            pixels = pixels.expand(3, -1, -1)
        return pixels.clamp(0.0, 1.0).contiguous()


def upright(image: Image.Image) -> Image.Image:
    """The image as a viewer shows it: its EXIF orientation (rotation, mirroring) applied."""
    if image.getexif().get(ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def flatten(image: Image.Image) -> Image.Image:
    """The image in mode ``L``, ``RGB`` or ``F`` (floats in [0, 1]); alpha composited on white."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "P":
        return flatten(image.convert("RGBA" if image.has_transparency_data else "RGB"))
    if mode in WITH_ALPHA:
        gray = mode in ("LA", "La")
        flat = Image.alpha_composite(Image.new("RGBA", image.size, WHITE), image.convert("RGBA"))
        return flat.convert("L" if gray else "RGB")
    if mode in SIXTEEN_BIT or mode in ("I", "F"):
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        peak = float(values.max())
        if mode in SIXTEEN_BIT or (mode == "I" and peak > 255):
            values = values / 65535.0
        elif mode == "I" or peak > 1.0:
            values = values / 255.0
        return Image.fromarray(np.clip(values, 0.0, 1.0).astype(np.float32))  # mode F
    return image.convert("RGB")


def fit(image: Image.Image, resolution: int) -> Image.Image:
    """Resize the shorter side to ``resolution`` and center-crop the longer one, in one resample."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    if side == resolution and width == height:
        return image
    return image.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def check_image_size(resolution: int, channels: int, halvings: int) -> None:
    """A generator's ``resolution`` and ``channels``, checked: ``halvings`` halvings must divide it."""
    factor = 2**halvings
    if resolution % factor or resolution < factor:
        raise ValueError(
            f"generator.resolution={resolution} must be a multiple of 2 ** len(generator.widths) "
            f"= {factor} (one halving per width)"
        )
    if channels not in (1, 3):
        raise ValueError(f"generator.channels must be 1 or 3, got {channels}")
