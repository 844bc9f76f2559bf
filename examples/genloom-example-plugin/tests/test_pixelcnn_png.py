"""Greyscale PNGs from the standard library: real files, the exact pixels, a scaled-up grid."""

import struct
import zlib

import numpy as np
import pytest
import torch
from genloom_pixelcnn.png import CELL, GUTTER, GUTTER_GREY, SIGNATURE, GreyPng, contact_sheet, png_bytes


def read_png(data: bytes) -> np.ndarray:
    """A minimal reader for the files png_bytes writes: checks every chunk's CRC."""
    assert data[:8] == SIGNATURE
    chunks, offset = {}, 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind}"
        chunks[kind] = chunks.get(kind, b"") + body
        offset += 12 + length
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
    width, height, *settings = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert settings == [8, 0, 0, 0, 0]  # 8-bit grey, deflate, filter method 0, no interlace
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, width + 1)
    assert not rows[:, 0].any()  # filter type None on every row
    return rows[:, 1:]


def test_png_bytes_round_trip_the_pixels() -> None:
    image = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7) * 7
    assert np.array_equal(read_png(png_bytes(image)), image)
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(image.astype(np.float32))


def test_pillow_opens_the_files_when_it_is_installed(tmp_path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    image = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (3, 1))
    (tmp_path / "a.png").write_bytes(png_bytes(image))
    with image_module.open(tmp_path / "a.png") as opened:
        assert opened.mode == "L" and np.array_equal(np.asarray(opened), image)


def test_decode_gives_a_uint8_array_and_rejects_colour() -> None:
    pixels = GreyPng().decode(torch.tensor([[[0.0, 1 / 3], [2 / 3, 1.5]]]))
    assert pixels.dtype == np.uint8 and pixels.tolist() == [[0, 85], [170, 255]]
    with pytest.raises(ValueError, match=r"got shape \(3, 2, 2\)"):
        GreyPng().decode(torch.zeros(3, 2, 2))


def test_write_saves_every_sample_and_a_scaled_up_grid(tmp_path) -> None:
    media = [np.full((16, 16), 50 * i, np.uint8) for i in range(5)]
    paths = GreyPng().write(media, tmp_path)
    assert [p.name for p in paths] == [f"sample_00{i}.png" for i in range(5)] + ["grid.png"]
    assert np.array_equal(read_png(paths[3].read_bytes()), media[3])
    grid = read_png((tmp_path / "grid.png").read_bytes())
    assert grid.shape == (2 * CELL + 3 * GUTTER, 3 * CELL + 4 * GUTTER)  # 3 columns, 2 rows of 16 x 6
    assert grid[GUTTER, GUTTER + 2 * (CELL + GUTTER)] == 100  # third cell of the first row: sample 2
    assert grid[-GUTTER - 1, -GUTTER - 1] == GUTTER_GREY  # the sixth cell is empty


def test_a_sheet_keeps_every_pixel_square() -> None:
    sheet = contact_sheet([np.array([[0, 255]], np.uint8)], columns=1)
    scale = CELL // 2
    assert sheet.shape == (scale + 2 * GUTTER, 2 * scale + 2 * GUTTER)
    assert sheet[GUTTER : GUTTER + scale, GUTTER : GUTTER + scale].max() == 0
    assert sheet[GUTTER : GUTTER + scale, GUTTER + scale : GUTTER + 2 * scale].min() == 255
