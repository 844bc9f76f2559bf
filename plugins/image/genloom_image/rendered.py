"""Images rendered with Pillow: coloured shapes with captions, and MNIST-like glyphs.

Both need no download. Example ``i`` is drawn from its own random generator, seeded with
``(seed, i)``, so a dataset is a pure function of its options: the same seed gives the
same pixels on every machine (with the same Pillow, whose drawing may change between
versions), and growing ``size`` keeps the examples already there. The
first ``round(size * val_fraction)`` examples are the validation split, the rest train.
Each is drawn at :data:`SUPERSAMPLE` times the resolution and shrunk with area averaging,
which antialiases edges.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time

import numpy as np
from genloom.interfaces import Encoder, Split
from PIL import Image, ImageDraw, ImageFont

from genloom_image.examples import EncodedExamples, check_condition, check_condition_encoder, make_examples

log = logging.getLogger(__name__)

SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross")
COLOURS = {
    "red": (225, 35, 35),
    "green": (40, 185, 60),
    "blue": (45, 95, 235),
    "yellow": (245, 220, 40),
    "purple": (150, 60, 210),
    "orange": (250, 140, 25),
    "white": (245, 245, 245),
}
SIZES = {"small": (0.22, 0.27), "large": (0.33, 0.42)}  # radius, as a fraction of the side
TEXTURES = ("stripes", "checker", "noise")

DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CHARACTERS = {"digits": DIGITS, "letters": LETTERS, "both": DIGITS + LETTERS}


class Shapes:
    """Coloured shapes on plain or textured backgrounds, each with a caption.

    A shape (:data:`SHAPES`; its index is the label) in one of :data:`COLOURS`, small or
    large, placed at random near the middle, on a dark plain background or, for
    ``textured_fraction`` of the examples, on stripes, a checkerboard or noise. Captions
    name the shape always and each other attribute with some probability ("a red star",
    "a small red star", "a star on stripes", "an orange diamond"), so short prompts are
    ones the model saw.

    Args:
        resolution: side of the square images, in pixels.
        size: number of examples, both splits together.
        seed: which examples: the same seed gives the same images.
        val_fraction: the share of examples held out for validation.
        condition: what ``example["condition"]`` holds: ``none``, ``label`` (the shape
            index) or ``caption`` (the caption, encoded by the pipeline's condition encoder).
        textured_fraction: the share of examples on a textured background.
        spread: how far from the middle a shape's centre may lie, as a fraction of the
            side (each way); 0 centres every shape, 0.5 lets shapes go anywhere they fit.
            A small VAE learns shapes much faster when they do not wander far.

    Examples (batch keys): ``"image"``, the encoder's output (``pixels``: float32
    ``(C, R, R)`` in [0, 1]); ``"label"``, int64 ``()``, the shape index in ``0 .. 6``;
    ``"condition"``: the label (``condition=label``) or the caption's word ids, int64
    ``(max_words,)`` (``condition=caption``), absent for ``none``.
    """

    unit = "img"
    units_per_example = 1
    classes = SHAPES

    def __init__(
        self,
        *,
        resolution: int = 32,
        size: int = 10000,
        seed: int = 0,
        val_fraction: float = 0.1,
        condition: str = "none",
        textured_fraction: float = 0.1,
        spread: float = 0.2,
    ) -> None:
        check_condition(condition, captions=True)
        if not 0 <= textured_fraction <= 1:
            raise ValueError(f"dataset.textured_fraction must lie in [0, 1], got {textured_fraction!r}")
        if not 0 <= spread <= 0.5:
            raise ValueError(f"dataset.spread must lie in [0, 0.5], got {spread!r}")
        self.indices = _split_indices(size, val_fraction)
        self.resolution = _check_resolution(resolution)
        self.seed = seed
        self.condition = condition
        self.textured_fraction = textured_fraction
        self.spread = spread

    def split(
        self, name: Split, encoder: Encoder, condition_encoder: Encoder | None = None
    ) -> EncodedExamples:
        return _render_split(self, name, encoder, condition_encoder, what="shapes")

    def render(self, index: int) -> tuple[Image.Image, int, str]:
        """Example ``index`` as ``(RGB image, shape index, caption)``."""
        rng = random.Random(self.seed * 1_000_003 + index)
        shape = rng.randrange(len(SHAPES))
        colour = rng.choice(list(COLOURS))
        size = rng.choice(list(SIZES))
        textured = rng.random() < self.textured_fraction
        texture = rng.choice(TEXTURES) if textured else None

        side = self.resolution * SUPERSAMPLE
        image = _background(side, texture, rng)
        low, high = SIZES[size]
        radius = rng.uniform(low, high) * side
        room = min(self.spread * side, max(0.0, side / 2 - radius - 0.04 * side))  # stay inside
        centre = tuple(side / 2 + rng.uniform(-room, room) for _ in range(2))
        _draw_shape(ImageDraw.Draw(image), SHAPES[shape], centre, radius, COLOURS[colour])

        words = []
        if rng.random() < 0.5:
            words.append(size)
        if rng.random() < 0.8:
            words.append(colour)
        words.append(SHAPES[shape])
        if texture is not None and rng.random() < 0.5:
            words += ["on", texture]
        words.insert(0, "an" if words[0][0] in "aeiou" else "a")
        image = image.resize((self.resolution, self.resolution), Image.Resampling.BOX)
        return image, shape, " ".join(words)


class Glyphs:
    """MNIST-like characters: white on black, drawn with Pillow's built-in font.

    Each character is drawn at a random size, stroke width, rotation, slant and offset.
    The label is the character's index in ``characters`` (digits first, so with
    ``characters: digits`` or ``both`` label 7 is "7"); the caption is "the digit 7" or
    "the letter A".

    Args:
        resolution: side of the square images, in pixels.
        size: number of examples, both splits together.
        seed: which examples: the same seed gives the same images.
        val_fraction: the share of examples held out for validation.
        condition: what ``example["condition"]`` holds: ``none``, ``label`` (the character
            index) or ``caption`` (the caption, encoded by the pipeline's condition encoder).
        characters: ``digits`` (10 classes), ``letters`` (A-Z, 26) or ``both`` (36).

    Examples (batch keys): ``"image"``, the encoder's output (``pixels``: float32
    ``(C, R, R)`` in [0, 1], white glyph on black); ``"label"``, int64 ``()``, the index in
    ``classes``; ``"condition"``: the label (``condition=label``) or the caption's word
    ids, int64 ``(max_words,)`` (``condition=caption``), absent for ``none``.
    """

    unit = "img"
    units_per_example = 1

    def __init__(
        self,
        *,
        resolution: int = 32,
        size: int = 10000,
        seed: int = 0,
        val_fraction: float = 0.1,
        condition: str = "none",
        characters: str = "digits",
    ) -> None:
        check_condition(condition, captions=True)
        if characters not in CHARACTERS:
            raise ValueError(f"dataset.characters must be one of {', '.join(CHARACTERS)}; got {characters!r}")
        self.indices = _split_indices(size, val_fraction)
        self.resolution = _check_resolution(resolution)
        self.seed = seed
        self.condition = condition
        self.classes = tuple(CHARACTERS[characters])

    def split(
        self, name: Split, encoder: Encoder, condition_encoder: Encoder | None = None
    ) -> EncodedExamples:
        return _render_split(self, name, encoder, condition_encoder, what="glyphs")

    def render(self, index: int) -> tuple[Image.Image, int, str]:
        """Example ``index`` as ``(L image, character index, caption)``."""
        rng = random.Random(self.seed * 1_000_003 + index)
        label = rng.randrange(len(self.classes))
        char = self.classes[label]
        side = self.resolution * SUPERSAMPLE
        image = Image.new("L", (side, side), 0)
        font = _font(round(side * rng.uniform(0.55, 0.85)))
        stroke = rng.randint(0, side // 48)
        ImageDraw.Draw(image).text(
            (side / 2, side / 2), char, fill=255, font=font, anchor="mm", stroke_width=stroke, stroke_fill=255
        )
        # One affine map: rotate, slant and shift about the centre (output -> input coordinates).
        angle = math.radians(rng.uniform(-15, 15))
        slant = rng.uniform(-0.25, 0.25)
        dx, dy = (rng.uniform(-0.1, 0.1) * side for _ in range(2))
        cos, sin = math.cos(angle), math.sin(angle)
        a, b, d, e = cos, sin + slant * cos, -sin, cos - slant * sin
        c = side / 2 - a * (side / 2 + dx) - b * (side / 2 + dy)
        f = side / 2 - d * (side / 2 + dx) - e * (side / 2 + dy)
        affine = (a, b, c, d, e, f)
        image = image.transform(image.size, Image.Transform.AFFINE, affine, Image.Resampling.BILINEAR)
        image = image.resize((self.resolution, self.resolution), Image.Resampling.BOX)
        kind = "digit" if char in DIGITS else "letter"
        return image, label, f"the {kind} {char}"


def _render_split(
    dataset: Shapes | Glyphs, name: Split, encoder: Encoder, condition_encoder: Encoder | None, what: str
) -> EncodedExamples:
    check_condition_encoder(dataset.condition, condition_encoder)
    start = time.perf_counter()
    images, labels, captions = [], [], []
    for index in dataset.indices[name]:
        image, label, caption = dataset.render(index)
        images.append(encoder.encode(image))
        labels.append(label)
        captions.append(caption)
    examples = make_examples(
        images, labels, captions, condition=dataset.condition, condition_encoder=condition_encoder
    )
    log.info("rendered %d %s %s in %.1f s", len(examples), name, what, time.perf_counter() - start)
    return examples


def _split_indices(size: int, val_fraction: float) -> dict[str, range]:
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"dataset.size must be an integer of at least 2 (one per split), got {size!r}")
    if not 0 < val_fraction <= 0.5:
        raise ValueError(f"dataset.val_fraction must lie in (0, 0.5], got {val_fraction!r}")
    n_val = min(max(1, round(size * val_fraction)), size - 1)
    return {"val": range(n_val), "train": range(n_val, size)}


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"dataset.resolution must be an integer of at least 4, got {resolution!r}")
    return resolution


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise ValueError(
            "the glyphs dataset draws with Pillow's scalable built-in font, which needs Pillow "
            "built with FreeType (the wheels on PyPI are); this Pillow lacks it"
        )
    return font


def _background(side: int, texture: str | None, rng: random.Random) -> Image.Image:
    """A dark background, plain or textured, so that every shape colour stands out."""
    dark = rng.randint(10, 60)
    if texture is None:
        return Image.new("RGB", (side, side), (dark, dark, dark))
    light = dark + rng.randint(30, 60)
    y, x = np.mgrid[0:side, 0:side]
    if texture == "stripes":
        period = rng.uniform(0.08, 0.2) * side
        angle = rng.uniform(0, math.pi)
        mask = ((x * math.cos(angle) + y * math.sin(angle)) // (period / 2)) % 2 == 0
        gray = np.where(mask, light, dark)
    elif texture == "checker":
        cell = max(1, round(rng.uniform(0.08, 0.2) * side))
        gray = np.where((x // cell + y // cell) % 2 == 0, light, dark)
    else:  # noise, in blocks of one output pixel so that it survives the downsampling
        noise = np.random.default_rng(rng.getrandbits(64))
        cells = noise.integers(dark, light + 1, size=(side // SUPERSAMPLE,) * 2)
        gray = np.kron(cells, np.ones((SUPERSAMPLE, SUPERSAMPLE), dtype=cells.dtype))
    return Image.fromarray(np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2))  # mode RGB


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], r: float, fill: tuple[int, int, int]
) -> None:
    cx, cy = centre

    def ring(count: int, radius: float, phase: float) -> list[tuple[float, float]]:
        angles = [phase + 2 * math.pi * k / count for k in range(count)]
        return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]

    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = 0.82 * r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        draw.polygon(ring(3, r, -math.pi / 2), fill=fill)
    elif shape == "star":
        outer, inner = ring(5, r, -math.pi / 2), ring(5, 0.42 * r, -math.pi / 2 + math.pi / 5)
        draw.polygon([p for pair in zip(outer, inner, strict=True) for p in pair], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)], fill=fill)
    elif shape == "hexagon":
        draw.polygon(ring(6, r, 0.0), fill=fill)
    else:  # cross
        arm = 0.3 * r
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=fill)
