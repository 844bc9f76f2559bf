"""Pixels back to images, written as PNG files with a contact sheet to look at.

A 32-pixel sample is too small to judge at a glance, so the sheets (``grid.png``,
``reconstructions.png``) scale every image up by a whole factor with nearest-neighbour
resampling, until a cell is at least :data:`CELL` pixels wide: each generated pixel stays
a crisp square, nothing is smoothed over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

CELL = 96  # smallest side of a cell on a sheet, in screen pixels
GUTTER = 2  # pixels between cells
PAIR_GAP = 8  # pixels between one original-reconstruction pair and the next
SHEET_BACKGROUND = (128, 128, 128)  # mid-gray: visible between dark and light images alike


class PngDecoder:
    """Decoder: ``(C, H, W)`` floats in [0, 1] (C = 1 or 3) -> a PIL image (``L`` or ``RGB``)."""

    media_type = "image"
    input_range = (0.0, 1.0)  # pixel values; outside would be clamped

    def decode(self, tensor: Tensor) -> Image.Image:
        if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
            raise ValueError(
                f"the png decoder takes one image (C, H, W) with 1 or 3 channels, got shape "
                f"{tuple(tensor.shape)}; was the generator trained with the pixels encoder?"
            )
        pixels = (tensor.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        if pixels.shape[0] == 1:
            return Image.fromarray(pixels[0].numpy())  # mode L
        return Image.fromarray(pixels.permute(1, 2, 0).numpy())  # mode RGB

    def write(self, media: Sequence[Image.Image], directory: Path) -> list[Path]:
        """Write ``sample_000.png``, ... and ``grid.png``, a contact sheet of them all."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        digits = max(3, len(str(len(media) - 1)))
        paths = []
        for i, image in enumerate(media):
            path = directory / f"sample_{i:0{digits}d}.png"
            image.save(path)
            paths.append(path)
        if media:
            columns = math.ceil(math.sqrt(len(media)))
            grid = directory / "grid.png"
            contact_sheet([[image] for image in media], columns).save(grid)
            paths.append(grid)
        return paths

    def write_comparison(self, originals: Tensor, reconstructions: Tensor, directory: Path) -> list[Path]:
        """Write ``reconstructions.png``: each original with its reconstruction on its right."""
        if originals.shape != reconstructions.shape:
            raise ValueError(
                f"originals {tuple(originals.shape)} and reconstructions "
                f"{tuple(reconstructions.shape)} must have the same shape"
            )
        pairs = [[self.decode(a), self.decode(b)] for a, b in zip(originals, reconstructions, strict=True)]
        columns = max(1, round(math.sqrt(len(pairs) / 2)))  # pairs are two cells wide: keep it squarish
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "reconstructions.png"
        contact_sheet(pairs, columns).save(path)
        return [path]


def contact_sheet(groups: Sequence[Sequence[Image.Image]], columns: int) -> Image.Image:
    """Lay out groups of images (a group sits side by side) ``columns`` groups to a row.

    Images are scaled up by the whole factor that makes the largest at least :data:`CELL`
    pixels wide, with nearest-neighbour resampling.
    """
    width = max(image.width for group in groups for image in group)
    height = max(image.height for group in groups for image in group)
    scale = max(1, math.ceil(CELL / max(width, height)))
    cell_w, cell_h = width * scale, height * scale
    per_group = max(len(group) for group in groups)
    group_w = per_group * cell_w + (per_group - 1) * GUTTER
    gap = PAIR_GAP if per_group > 1 else GUTTER
    rows = math.ceil(len(groups) / columns)
    sheet = Image.new(
        "RGB",
        (columns * group_w + (columns + 1) * gap, rows * cell_h + (rows + 1) * gap),
        SHEET_BACKGROUND,
    )
    for g, group in enumerate(groups):
        row, column = divmod(g, columns)
        x = gap + column * (group_w + gap)
        y = gap + row * (cell_h + gap)
        for i, image in enumerate(group):
            big = image.convert("RGB").resize(
                (image.width * scale, image.height * scale), Image.Resampling.NEAREST
            )
            sheet.paste(big, (x + i * (cell_w + GUTTER), y))
    return sheet
