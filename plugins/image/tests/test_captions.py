"""caption_words: any caption -> hashed word ids, stable and without a vocabulary."""

import zlib

import pytest
import torch
from genloom_image.captions import CaptionWords
from genloom_image.rendered import COLOURS, DIGITS, LETTERS, SHAPES, SIZES, TEXTURES


def test_words_become_stable_hashed_ids_padded_with_zeros() -> None:
    ids = CaptionWords(buckets=512, max_words=6).encode("A red STAR!")
    expected = [zlib.crc32(w.encode()) % 512 + 1 for w in ("a", "red", "star")]
    assert ids.dtype == torch.long and ids.tolist() == expected + [0, 0, 0]


def test_long_captions_are_cut_and_empty_ones_are_all_padding() -> None:
    words = CaptionWords(max_words=2)
    assert words.encode("one two three").tolist() == words.encode("one two").tolist()
    assert words.encode("").tolist() == [0, 0] and words.encode("?!").tolist() == [0, 0]
    assert words.words("Très bien, 42") == ["très", "bien"]


@pytest.mark.parametrize(
    "vocabulary",
    [
        {"a", "an", "on", *SHAPES, *COLOURS, *SIZES, *TEXTURES},
        {"the", "digit", "letter", *(c.lower() for c in DIGITS + LETTERS)},
    ],
    ids=["shapes", "glyphs"],
)
def test_the_words_of_each_built_in_dataset_get_distinct_ids(vocabulary: set[str]) -> None:
    encoder = CaptionWords()
    ids = {int(encoder.encode(word)[0]) for word in vocabulary}
    assert len(ids) == len(vocabulary) and all(1 <= i <= 512 for i in ids)
