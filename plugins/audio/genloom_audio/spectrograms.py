"""Mel spectrograms as pictures: one image per clip, laid out on a sheet to look at.

A normalised log-mel spectrogram ``(n_mels, frames)`` in [0, 1] (see :mod:`genloom_audio.mel`)
is drawn with low frequencies at the bottom, through a perceptually ordered colour map
(dark purple for silence at -80 dB, through red and orange, to pale yellow at 0 dB), and
scaled up by whole factors with nearest-neighbour resampling until it is at least
:data:`CELL` pixels each way: every frame and band stays a crisp block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw
from torch import Tensor

CELL = 128  # smallest side of a spectrogram on a sheet, in screen pixels
GUTTER = 2  # pixels between the two spectrograms of a pair
GAP = 8  # pixels between one cell (or pair) and the next
CAPTION = 14  # pixels above each cell for its caption
SHEET_BACKGROUND = (40, 40, 40)
TEXT = (230, 230, 230)
# Anchor colours of the map at 0, 0.25, 0.5, 0.75, 1 (close to matplotlib's "magma").
ANCHORS = torch.tensor(
    [[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]], dtype=torch.float32
)


def colour(unit: Tensor) -> Image.Image:
    """``(n_mels, frames)`` in [0, 1] -> an RGB image, low bands at the bottom, not yet scaled."""
    if unit.dim() == 3:
        unit = unit[0]
    position = unit.detach().float().cpu().clamp(0, 1).flip(0) * (len(ANCHORS) - 1)
    low = position.floor().long().clamp(max=len(ANCHORS) - 2)
    weight = (position - low)[..., None]
    rgb = ANCHORS[low] * (1 - weight) + ANCHORS[low + 1] * weight  # (n_mels, frames, 3)
    return Image.fromarray(rgb.round().to(torch.uint8).numpy(), "RGB")


def sheet(
    groups: Sequence[Sequence[Tensor]], captions: Sequence[str], columns: int | None = None
) -> Image.Image:
    """Lay out groups of spectrograms (a group sits side by side, under its caption) on one image."""
    images = [[colour(unit) for unit in group] for group in groups]
    width = max(image.width for group in images for image in group)
    height = max(image.height for group in images for image in group)
    scale_x, scale_y = math.ceil(CELL / width), math.ceil(CELL / height)
    cell_w, cell_h = width * scale_x, height * scale_y
    per_group = max(len(group) for group in images)
    group_w = per_group * cell_w + (per_group - 1) * GUTTER
    columns = columns or max(1, math.ceil(math.sqrt(len(images) / per_group)))
    rows = math.ceil(len(images) / columns)
    page = Image.new(
        "RGB",
        (columns * group_w + (columns + 1) * GAP, rows * (cell_h + CAPTION) + (rows + 1) * GAP),
        SHEET_BACKGROUND,
    )
    draw = ImageDraw.Draw(page)
    for g, (group, caption) in enumerate(zip(images, captions, strict=True)):
        row, column = divmod(g, columns)
        x = GAP + column * (group_w + GAP)
        y = GAP + row * (cell_h + CAPTION + GAP)
        draw.text((x, y + 1), caption, fill=TEXT)
        for i, image in enumerate(group):
            big = image.resize((image.width * scale_x, image.height * scale_y), Image.Resampling.NEAREST)
            page.paste(big, (x + i * (cell_w + GUTTER), y + CAPTION))
    return page
