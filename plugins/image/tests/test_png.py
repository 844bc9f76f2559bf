"""The png decoder: pixels to images, sample files, a contact sheet, reconstructions side by side."""

import pytest
import torch
from genloom_image.pixels import Pixels
from genloom_image.png import CELL, GUTTER, PAIR_GAP, PngDecoder
from PIL import Image


def test_decode_inverts_the_pixels_encoder() -> None:
    pixels = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    image = PngDecoder().decode(pixels)
    assert image.mode == "RGB" and image.size == (8, 8)
    assert torch.allclose(Pixels(resolution=8).encode(image), pixels, atol=0.5 / 255 + 1e-6)
    assert PngDecoder().decode(pixels[:1]).mode == "L"


def test_decode_clamps_and_rejects_what_is_not_an_image() -> None:
    assert PngDecoder().decode(torch.full((1, 2, 2), 7.0)).getextrema() == (255, 255)
    with pytest.raises(ValueError, match=r"got shape \(4, 2, 2\)"):
        PngDecoder().decode(torch.zeros(4, 2, 2))


def test_write_saves_every_sample_and_a_scaled_up_grid(tmp_path) -> None:
    images = [PngDecoder().decode(torch.full((1, 32, 32), i / 4)) for i in range(5)]
    paths = PngDecoder().write(images, tmp_path)
    assert [p.name for p in paths] == [f"sample_00{i}.png" for i in range(5)] + ["grid.png"]
    assert Image.open(paths[3]).getpixel((0, 0)) == round(3 / 4 * 255)
    grid = Image.open(tmp_path / "grid.png")
    cell = CELL  # 32 px scaled up 3 times, nearest neighbour
    assert grid.size == (3 * cell + 4 * GUTTER, 2 * cell + 3 * GUTTER)  # 3 columns, 2 rows
    x, y = GUTTER + 2 * (cell + GUTTER), GUTTER  # third cell of the first row: sample 2
    assert grid.getpixel((x, y)) == grid.getpixel((x + cell - 1, y + cell - 1)) == (128, 128, 128)


def test_write_comparison_puts_each_original_left_of_its_reconstruction(tmp_path) -> None:
    originals = torch.zeros(2, 3, 32, 32)
    reconstructions = torch.ones(2, 3, 32, 32)
    (path,) = PngDecoder().write_comparison(originals, reconstructions, tmp_path)
    assert path.name == "reconstructions.png"
    sheet = Image.open(path)
    assert sheet.size == (2 * CELL + GUTTER + 2 * PAIR_GAP, 2 * CELL + 3 * PAIR_GAP)  # a column of 2 pairs
    y = PAIR_GAP + 10
    assert sheet.getpixel((PAIR_GAP + 10, y)) == (0, 0, 0)  # original
    assert sheet.getpixel((PAIR_GAP + CELL + GUTTER + 10, y)) == (255, 255, 255)  # reconstruction
