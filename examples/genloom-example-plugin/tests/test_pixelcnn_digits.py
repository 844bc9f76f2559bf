"""The bitmap digits: an embedded font, drawn deterministically, disjoint splits, K levels."""

import numpy as np
import pytest
import torch
from genloom_pixelcnn.digits import FONT, BitmapDigits, strokes
from genloom_pixelcnn.levels import Levels


def test_the_font_has_ten_5x7_glyphs_drawn_as_strokes() -> None:
    assert sorted(FONT) == list(range(10))
    assert all(len(glyph) == 7 and {len(row) for row in glyph} == {5} for glyph in FONT.values())
    assert len(strokes(FONT[1])) == 10 + 9  # 10 lit cells as dots, 9 joins to a lit neighbour
    # The round corners of the zero are joined diagonally; its straight sides are not filled in.
    assert [[1, 0], [0, 1]] in strokes(FONT[0]).tolist()


def test_the_same_seed_draws_the_same_digits() -> None:
    first = BitmapDigits(size=40, seed=3)
    image, digit = first.draw(7)
    again, same = BitmapDigits(size=400, seed=3).draw(7)  # a bigger dataset keeps its examples
    other, _ = BitmapDigits(size=40, seed=4).draw(7)
    assert np.array_equal(image, again) and digit == same
    assert not np.array_equal(image, other)
    assert image.shape == (16, 16) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_splits_are_disjoint_labelled_and_on_k_levels() -> None:
    data = BitmapDigits(size=40, val_fraction=0.25, seed=0)
    train, val = data.split("train", Levels(levels=4)), data.split("val", Levels(levels=4))
    assert (len(train), len(val)) == (30, 10)
    assert data.units_per_example == 256 and data.unit == "px"
    example = train[0]
    assert example["pixels"].shape == (1, 16, 16)
    assert set((example["pixels"] * 3).unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert example["condition"] == example["label"] == data.draw(10)[1]
    val_pixels = {val[i]["pixels"].numpy().tobytes() for i in range(len(val))}
    assert not any(train[i]["pixels"].numpy().tobytes() in val_pixels for i in range(len(train)))
    assert "condition" not in BitmapDigits(size=40, condition="none").split("val", Levels())[0]


def test_a_digit_is_white_on_black_and_inside_the_frame() -> None:
    data = BitmapDigits(size=200, noise=0.0)
    for i in range(50):
        image, _ = data.draw(i)
        assert max(image[[0, -1]].max(), image[:, [0, -1]].max()) < 1e-6  # the outermost pixels: black
        assert 0.04 < (image > 0.5).mean() < 0.5  # a thin one to a bold eight


def test_bad_options_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="leaves an empty split"):
        BitmapDigits(size=4, val_fraction=0.05)
    with pytest.raises(ValueError, match="remove condition_encoder"):
        BitmapDigits(size=40).split("train", Levels(), condition_encoder=Levels())


def test_levels_rounds_to_k_evenly_spaced_values() -> None:
    image = np.array([[0.0, 0.2, 0.49], [0.51, 0.9, 1.4]], dtype=np.float32)
    assert Levels(levels=2).encode(image).tolist() == [[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]]
    from_tensor = Levels(levels=4).encode(torch.from_numpy(image))
    assert torch.allclose(from_tensor[0, 1], torch.tensor([2 / 3, 1.0, 1.0]))
    assert Levels(levels=3).encode(np.array([[0, 128, 255]], dtype=np.uint8)).tolist() == [[[0.0, 0.5, 1.0]]]
    with pytest.raises(ValueError, match="sampled with label=N, not prompt="):
        Levels().encode("a three")
    with pytest.raises(ValueError, match=r"got shape \(3, 4, 4\)"):
        Levels().encode(np.zeros((3, 4, 4)))
