"""The ten digits, drawn from a 5 x 7 bitmap font embedded below: no download, no Pillow.

Each glyph is read as strokes: the centres of its lit cells, joined to their lit
neighbours (a diagonal only where no horizontal or vertical path turns the same corner,
so corners stay round instead of filling in). A digit is drawn by mapping those strokes
into the image with a random size, slant and shift, and lighting every pixel within a
random stroke radius, with a soft one-pixel edge, never touching the outermost pixels;
a little Gaussian noise goes on top.

Example ``i`` comes from its own random generator, seeded with ``(seed, i)``, so the data
is a pure function of the options: the same seed gives the same pixels on every machine,
and growing ``size`` keeps the examples already there. The first
``round(size * val_fraction)`` examples are the validation split, the rest train.
"""

from __future__ import annotations

import numpy as np
import torch
from genloom.interfaces import Encoder, Split
from torch import Tensor

FONT = {  # 5 x 7 cells, "#" lit
    0: (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    1: ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    2: (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    3: (".###.", "#...#", "....#", "..##.", "....#", "#...#", ".###."),
    4: ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    5: ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    6: ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    7: ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    8: (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    9: (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
}
GLYPH_ROWS, GLYPH_COLUMNS = 7, 5
CONDITIONS = ("none", "label")


def strokes(glyph: tuple[str, ...]) -> np.ndarray:
    """The glyph's strokes as segments ``(S, 2, 2)``: two ``(x, y)`` ends, in cell units.

    Every lit cell is a segment of length zero (a dot), so a lone cell is still drawn.
    """
    lit = {(x, y) for y, row in enumerate(glyph) for x, cell in enumerate(row) if cell == "#"}
    segments = [((x, y), (x, y)) for x, y in sorted(lit)]
    for x, y in sorted(lit):
        for dx, dy in ((1, 0), (0, 1)):
            if (x + dx, y + dy) in lit:
                segments.append(((x, y), (x + dx, y + dy)))
        for dx in (1, -1):  # the two diagonals going down
            if (x + dx, y + 1) in lit and (x + dx, y) not in lit and (x, y + 1) not in lit:
                segments.append(((x, y), (x + dx, y + 1)))
    return np.array(segments, dtype=np.float64)


STROKES = {digit: strokes(glyph) for digit, glyph in FONT.items()}


def draw_digit(digit: int, resolution: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """One digit as ``(resolution, resolution)`` float32 intensities in [0, 1], white on black."""
    r = resolution
    scale = rng.uniform(0.095, 0.115) * r  # pixels per glyph cell: 7 rows span 57-69% of the side
    slant = rng.uniform(-0.25, 0.25)  # x shift per pixel upwards from the middle
    radius = rng.uniform(0.04, 0.08) * r  # stroke half-width, pixels
    shift = rng.uniform(-0.1, 0.1, size=2) * r
    brightness = rng.uniform(0.9, 1.0)

    # Glyph cells -> image pixels: centre the glyph, scale, slant about the middle row, shift.
    ends = (STROKES[digit] - ((GLYPH_COLUMNS - 1) / 2, (GLYPH_ROWS - 1) / 2)) * scale  # (S, 2, 2)
    ends[..., 0] -= slant * ends[..., 1]
    ends += r / 2
    # Keep every stroke, soft edge included, off the outermost pixels: shift only as far as fits.
    margin = radius + 1.0
    lowest = margin - ends.min(axis=(0, 1))  # (2,) x and y
    highest = np.maximum(r - margin - ends.max(axis=(0, 1)), lowest)
    ends += np.clip(shift, lowest, highest)
    a, b = ends[:, 0], ends[:, 1]  # (S, 2) each

    ys, xs = np.mgrid[0:r, 0:r] + 0.5  # pixel centres
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (P, 2)
    direction = b - a
    length2 = np.maximum((direction**2).sum(axis=1), 1e-12)  # (S,); dots have length 0
    t = np.clip(((points[:, None] - a) * direction).sum(axis=2) / length2, 0.0, 1.0)  # (P, S)
    nearest = a + t[..., None] * direction  # (P, S, 2)
    distance = np.sqrt(((points[:, None] - nearest) ** 2).sum(axis=2)).min(axis=1)  # (P,)
    ink = np.clip(radius + 0.5 - distance, 0.0, 1.0) * brightness  # soft one-pixel edge
    image = ink.reshape(r, r) + rng.normal(0.0, noise, size=(r, r))
    return np.clip(image, 0.0, 1.0).astype(np.float32)


class Examples(torch.utils.data.Dataset):
    """Examples ``{key: tensors[key][i]}`` from tensors that share their first dimension."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: values[index] for key, values in self.tensors.items()}


class BitmapDigits:
    """Digits 0-9 from an embedded bitmap font, white on black, each with its label.

    Examples are ``{"pixels": (1, R, R) encoded, "label": digit}``, plus
    ``"condition": digit`` when ``condition=label``.

    Args:
        resolution: side of the square images, in pixels (at least 8).
        size: number of examples, both splits together.
        seed: which examples: the same seed gives the same images.
        val_fraction: the share of examples held out for validation.
        condition: ``none`` or ``label`` (the generator is steered by the digit).
        noise: standard deviation of the Gaussian noise added to every pixel.
    """

    unit = "px"

    def __init__(
        self,
        *,
        resolution: int = 16,
        size: int = 6000,
        seed: int = 0,
        val_fraction: float = 0.05,
        condition: str = "label",
        noise: float = 0.03,
    ) -> None:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
            raise ValueError(f"dataset.resolution must be an integer of at least 8, got {resolution!r}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"dataset.val_fraction must lie strictly between 0 and 1, got {val_fraction!r}")
        n_val = round(size * val_fraction)
        if n_val < 1 or size - n_val < 1:
            raise ValueError(
                f"dataset.size={size} with val_fraction={val_fraction} leaves an empty split "
                f"({size - n_val} train, {n_val} val); raise dataset.size"
            )
        if condition not in CONDITIONS:
            raise ValueError(f"dataset.condition must be one of {', '.join(CONDITIONS)}; got {condition!r}")
        if noise < 0:
            raise ValueError(f"dataset.noise must be at least 0, got {noise!r}")
        self.resolution = resolution
        self.units_per_example = resolution * resolution
        self.seed = seed
        self.condition = condition
        self.noise = noise
        self.indices = {"val": range(n_val), "train": range(n_val, size)}

    def draw(self, index: int) -> tuple[np.ndarray, int]:
        """Example ``index`` as ``(intensities (R, R) in [0, 1], digit)``."""
        rng = np.random.default_rng([self.seed, index])
        digit = int(rng.integers(10))
        return draw_digit(digit, self.resolution, rng, self.noise), digit

    def split(self, name: Split, encoder: Encoder, condition_encoder: Encoder | None = None) -> Examples:
        if name not in self.indices:
            raise ValueError(f"bitmap_digits has the splits train and val, not {name!r}")
        if condition_encoder is not None:
            raise ValueError(
                "bitmap_digits has labels, not captions: remove condition_encoder and sample "
                "with label=N"
            )
        drawn = [self.draw(i) for i in self.indices[name]]
        labels = torch.tensor([digit for _, digit in drawn], dtype=torch.long)
        tensors = {"pixels": torch.stack([encoder.encode(image) for image, _ in drawn]), "label": labels}
        if self.condition == "label":
            tensors["condition"] = labels
        return Examples(tensors)
