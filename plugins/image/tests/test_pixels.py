"""The pixels encoder: every Pillow mode, any size, to (C, R, R) floats in [0, 1]."""

import numpy as np
import pytest
import torch
from genloom_image.pixels import Pixels
from PIL import Image

WHITE_ALPHA_0 = 1.0  # a fully transparent pixel shows the white it is composited on


def solid(mode: str, value, size=(6, 4)) -> Image.Image:
    return Image.new(mode, size, value)


@pytest.mark.parametrize(
    ("image", "gray"),
    [
        (solid("1", 1), 1.0),
        (solid("L", 51), 0.2),
        (solid("LA", (51, 255)), 0.2),
        (solid("LA", (51, 0)), WHITE_ALPHA_0),
        (solid("RGB", (51, 51, 51)), 0.2),
        (solid("RGBA", (51, 51, 51, 0)), WHITE_ALPHA_0),
        (Image.fromarray(np.full((4, 6), 13107, dtype=np.uint16)), 0.2),  # I;16
        (Image.fromarray(np.full((4, 6), 13107, dtype=np.int32)), 0.2),  # I, 16-bit values
        (Image.fromarray(np.full((4, 6), 51, dtype=np.int32)), 0.2),  # I, 8-bit values
        (Image.fromarray(np.full((4, 6), 0.2, dtype=np.float32)), 0.2),  # F in [0, 1]
        (Image.fromarray(np.full((4, 6), 51.0, dtype=np.float32)), 0.2),  # F on Pillow's 0-255 scale
    ],
    ids=[
        "1",
        "L",
        "LA",
        "LA-transparent",
        "RGB",
        "RGBA-transparent",
        "I;16",
        "I-16bit",
        "I-8bit",
        "F",
        "F-255",
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_becomes_pixels_in_the_unit_range(image: Image.Image, gray: float, channels: int) -> None:
    pixels = Pixels(resolution=4, channels=channels).encode(image)
    assert pixels.shape == (channels, 4, 4) and pixels.dtype == torch.float32
    assert torch.allclose(pixels, torch.full_like(pixels, gray), atol=1 / 255)


def test_palette_images_with_and_without_transparency() -> None:
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 1 is red
    red = Pixels(resolution=4, channels=3).encode(palette)
    assert red[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    palette.info["transparency"] = 1  # now index 1 is transparent: white shows through
    assert Pixels(resolution=4, channels=3).encode(palette).min() == 1.0


def test_colour_becomes_gray_by_luma_and_gray_repeats_into_colour() -> None:
    red = Pixels(resolution=2, channels=1).encode(solid("RGB", (255, 0, 0)))
    assert red.shape == (1, 2, 2) and red[0, 0, 0].item() == pytest.approx(0.299, abs=1 / 255)
    gray = Pixels(resolution=2, channels=3).encode(solid("L", 255))
    assert gray.shape == (3, 2, 2) and gray.min() == 1.0


def test_the_shorter_side_is_resized_and_the_longer_center_cropped() -> None:
    wide = np.zeros((32, 64, 3), dtype=np.uint8)
    wide[:, :16] = (255, 0, 0)  # left quarter red
    wide[:, 16:48] = (0, 255, 0)  # middle half green: exactly the center square
    wide[:, 48:] = (0, 0, 255)
    kept = Pixels(resolution=32, channels=3).encode(Image.fromarray(wide))
    assert torch.equal(kept, torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, 32, 32))
    shrunk = Pixels(resolution=8, channels=3).encode(Image.fromarray(wide[:, :40]))  # 40 x 32
    assert shrunk.shape == (3, 8, 8)  # from columns 4-35: 12 red, then 20 green
    assert shrunk[0, :, :2].min() > 0.99 and shrunk[1, :, 4:].min() > 0.99


def test_bad_input_is_a_value_error_that_says_what_to_do(tmp_path) -> None:
    with pytest.raises(ValueError, match="encodes PIL images, got 'a red star'.*label=N"):
        Pixels().encode("a red star")
    with pytest.raises(ValueError, match="resolution"):
        Pixels(resolution=0)
    with pytest.raises(ValueError, match="channels must be 1 .* or 3"):
        Pixels(channels=4)
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:4000])
    with pytest.raises(ValueError, match="cut.png cannot be read"):
        Pixels().encode(Image.open(tmp_path / "cut.png"))
