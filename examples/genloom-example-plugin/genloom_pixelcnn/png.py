"""Greyscale PNG files written with the standard library alone (``zlib`` and ``struct``).

The plugin does not depend on Pillow, so :meth:`GreyPng.decode` hands out each sample as
a ``(H, W)`` ``uint8`` numpy array (what ``numpy.asarray`` gives for a Pillow ``L`` image)
and :func:`png_bytes` encodes it: an 8-bit greyscale PNG (colour type 0, no interlace,
filter type 0 "None" on every row) that any viewer, and Pillow, opens.

A 16-pixel sample is too small to judge at a glance, so ``grid.png`` scales every sample
up by a whole factor, nearest neighbour, until a cell is at least :data:`CELL` pixels wide.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CELL = 96  # smallest side of a grid cell, in screen pixels
GUTTER = 2  # pixels between cells
GUTTER_GREY = 128  # mid-grey: visible between dark and light samples alike


class GreyPng:
    """Decoder: ``(1, H, W)`` floats in [0, 1] -> a ``(H, W)`` ``uint8`` array; writes PNGs."""

    media_type = "image"
    input_range = (0.0, 1.0)  # pixel values; outside would be clamped

    def decode(self, tensor: Tensor) -> np.ndarray:
        if tensor.dim() != 3 or tensor.shape[0] != 1:
            raise ValueError(
                f"the grey_png decoder takes one greyscale image (1, H, W), got shape "
                f"{tuple(tensor.shape)}; was the generator trained with the levels encoder?"
            )
        pixels = (tensor.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        return pixels[0].cpu().numpy()  # (H, W)

    def write(self, media: Sequence[np.ndarray], directory: Path) -> list[Path]:
        """Write ``sample_000.png``, ... and ``grid.png``, all samples on one sheet."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        digits = max(3, len(str(len(media) - 1)))
        paths = []
        for i, image in enumerate(media):
            path = directory / f"sample_{i:0{digits}d}.png"
            path.write_bytes(png_bytes(image))
            paths.append(path)
        if media:
            grid = directory / "grid.png"
            grid.write_bytes(png_bytes(contact_sheet(media, columns=math.ceil(math.sqrt(len(media))))))
            paths.append(grid)
        return paths


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of a ``(H, W)`` ``uint8`` array."""
    if image.ndim != 2 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(
            f"a greyscale PNG needs a non-empty (H, W) uint8 array, got {image.shape} {image.dtype}"
        )
    height, width = image.shape
    # 8 bits per pixel, colour type 0 (grey), deflate, adaptive filtering, no interlace
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = np.hstack([np.zeros((height, 1), np.uint8), image])  # each row opens with its filter type, 0
    data = zlib.compress(rows.tobytes(), 9)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    """length, type, data, CRC-32 of type and data (PNG spec, section 5.3)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def contact_sheet(images: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Lay ``(H, W)`` images out ``columns`` to a row, scaled up by a whole factor."""
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    scale = max(1, math.ceil(CELL / max(height, width)))
    cell_h, cell_w = height * scale, width * scale
    rows = math.ceil(len(images) / columns)
    shape = (rows * cell_h + (rows + 1) * GUTTER, columns * cell_w + (columns + 1) * GUTTER)
    sheet = np.full(shape, GUTTER_GREY, np.uint8)
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        y, x = GUTTER + row * (cell_h + GUTTER), GUTTER + column * (cell_w + GUTTER)
        big = image.repeat(scale, axis=0).repeat(scale, axis=1)
        sheet[y : y + big.shape[0], x : x + big.shape[1]] = big
    return sheet
