"""The rendered datasets: deterministic pixels, labels and captions that agree, clean splits."""

import pytest
import torch
from genloom_blocks.captions import CaptionWords
from genloom_image.pixels import Pixels
from genloom_image.rendered import DIGITS, LETTERS, SHAPES, Glyphs, Shapes

RGB, GRAY = Pixels(resolution=16, channels=3), Pixels(resolution=16, channels=1)


@pytest.mark.parametrize("kind", [Shapes, Glyphs])
def test_the_same_seed_gives_the_same_pixels_and_another_seed_others(kind) -> None:
    def images(seed: int) -> torch.Tensor:
        return kind(resolution=16, size=12, seed=seed).split("train", RGB).tensors["image"]

    assert torch.equal(images(0), images(0))
    assert not torch.equal(images(0), images(1))


@pytest.mark.parametrize("kind", [Shapes, Glyphs])
def test_splits_are_disjoint_and_carry_the_condition_asked_for(kind) -> None:
    dataset = kind(resolution=16, size=20, val_fraction=0.25, condition="caption")
    train, val = dataset.split("train", RGB, CaptionWords()), dataset.split("val", RGB, CaptionWords())
    assert (len(train), len(val)) == (15, 5)
    assert set(train[0]) == {"image", "label", "condition"}
    assert train[0]["image"].shape == (3, 16, 16) and train[0]["condition"].shape == (8,)
    assert not any(torch.equal(a, b) for a in train.tensors["image"] for b in val.tensors["image"])
    labelled = kind(resolution=16, size=20, condition="label").split("val", RGB)
    assert torch.equal(labelled.tensors["condition"], labelled.tensors["label"])
    assert "condition" not in kind(resolution=16, size=20).split("val", RGB)[0]


def test_shape_captions_always_name_the_labelled_shape() -> None:
    dataset = Shapes(resolution=16, size=200)
    renders = [dataset.render(i) for i in range(200)]
    assert all(SHAPES[label] in caption.split() for _, label, caption in renders)
    assert all(
        caption.split()[0] == ("an" if caption.split()[1][0] in "aeiou" else "a") for _, _, caption in renders
    )
    assert {label for _, label, _ in renders} == set(range(len(SHAPES)))
    assert any(len(caption.split()) == 2 for *_, caption in renders)  # "a star": short prompts are seen


def test_glyph_labels_index_the_characters_digits_first() -> None:
    digits = Glyphs(resolution=16, size=50)
    image, label, caption = digits.render(0)
    assert image.mode == "L" and caption == f"the digit {DIGITS[label]}"
    both = Glyphs(resolution=16, size=300, characters="both")
    assert both.classes[7] == "7" and both.classes[10] == "A" and len(both.classes) == 36
    captions = {both.render(i)[2] for i in range(300)}
    assert any(c.startswith("the letter ") for c in captions)
    letters = Glyphs(resolution=16, size=50, characters="letters")
    _, label, caption = letters.render(0)
    assert caption == f"the letter {LETTERS[label]}"


def test_glyphs_are_white_on_black_and_fill_a_fair_part_of_the_image() -> None:
    image = Glyphs(resolution=32, size=10).split("val", GRAY).tensors["image"][0]
    corners = torch.stack([image[0, 0, 0], image[0, 0, -1], image[0, -1, 0], image[0, -1, -1]])
    assert corners.max() < 0.05 and image.max() > 0.9
    assert 0.05 < (image > 0.5).float().mean() < 0.5


def test_options_that_cannot_work_are_errors_that_name_the_key() -> None:
    with pytest.raises(ValueError, match="dataset.condition must be one of none, label, caption"):
        Shapes(condition="colour")
    with pytest.raises(ValueError, match="dataset.characters"):
        Glyphs(characters="kanji")
    with pytest.raises(ValueError, match="dataset.size"):
        Glyphs(size=1)
    with pytest.raises(ValueError, match="dataset.val_fraction"):
        Shapes(val_fraction=0.9)
    with pytest.raises(ValueError, match="condition_encoder=caption_words"):
        Shapes(resolution=16, size=4, condition="caption").split("train", RGB)
