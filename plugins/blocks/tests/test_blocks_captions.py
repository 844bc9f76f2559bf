"""caption_words: any caption -> hashed word ids, stable and without a vocabulary."""

import zlib

import pytest
import torch
from genloom_blocks.captions import CaptionWords


def crc(word: str, buckets: int) -> int:
    return zlib.crc32(word.encode()) % buckets + 1


def test_words_become_stable_hashed_ids_padded_with_zeros() -> None:
    ids = CaptionWords(buckets=512, max_words=6).encode("A red STAR!")
    assert ids.dtype == torch.long and ids.tolist() == [crc(w, 512) for w in ("a", "red", "star")] + [0, 0, 0]


def test_a_sharp_stays_in_its_word_and_other_punctuation_splits() -> None:
    words = CaptionWords()
    assert words.words("a plucked C#4, then D#") == ["a", "plucked", "c#4", "then", "d#"]
    assert words.words("red-star_2") == ["red", "star", "2"]
    assert words.encode("C#4")[0] == crc("c#4", 512)


def test_long_captions_are_cut_and_empty_ones_are_all_padding() -> None:
    words = CaptionWords(max_words=2)
    assert words.encode("one two three").tolist() == words.encode("one two").tolist()
    assert words.encode("").tolist() == [0, 0] and words.encode("?!").tolist() == [0, 0]
    assert words.words("Très bien, 42") == ["très", "bien"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"buckets": 0}, "condition_encoder.buckets must be a positive integer, got 0"),
        ({"max_words": True}, "condition_encoder.max_words must be a positive integer, got True"),
    ],
)
def test_bad_options_name_the_key(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CaptionWords(**options)
    with pytest.raises(ValueError, match="caption_words encodes text, got int"):
        CaptionWords().encode(3)
