"""The genloom hooks of the PixelCNN example: what it registers, by import path only.

genloom imports this module (named by the ``genloom`` entry point in pyproject.toml) for
every command, ``genloom plugins`` included, so it stays light: no torch, no numpy, no
model code. Each component is imported the first time a pipeline builds it.
"""

from __future__ import annotations

from collections.abc import Callable

from genloom.hookspecs import hookimpl


@hookimpl
def genloom_register_components(register: Callable[..., None]) -> None:
    register(
        "generator",
        "pixelcnn",
        "genloom_pixelcnn.pixelcnn:PixelCNN",
        summary="gated PixelCNN: greyscale pixels one at a time, a softmax over K levels, optional label",
    )
    register(
        "dataset",
        "bitmap_digits",
        "genloom_pixelcnn.digits:BitmapDigits",
        summary="the ten digits from an embedded 5x7 bitmap font, shifted, slanted, thickened (no download)",
    )
    register(
        "encoder",
        "levels",
        "genloom_pixelcnn.levels:Levels",
        summary="a greyscale image (array or tensor) -> (1, H, W) floats quantised to K levels",
    )
    register(
        "decoder",
        "grey_png",
        "genloom_pixelcnn.png:GreyPng",
        summary="pixels -> (H, W) uint8 arrays; writes greyscale PNGs and a grid.png with the stdlib only",
    )


@hookimpl
def genloom_register_config(register: Callable[[str], None]) -> None:
    register("genloom_pixelcnn.conf")
