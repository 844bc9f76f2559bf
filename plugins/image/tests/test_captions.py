"""caption_words (genloom-blocks) on the image datasets: their words get distinct ids at the presets' 512."""

import pytest
from genloom_blocks.captions import CaptionWords
from genloom_image.rendered import COLOURS, DIGITS, LETTERS, SHAPES, SIZES, TEXTURES


@pytest.mark.parametrize(
    "vocabulary",
    [
        {"a", "an", "on", *SHAPES, *COLOURS, *SIZES, *TEXTURES},
        {"the", "digit", "letter", *(c.lower() for c in DIGITS + LETTERS)},
    ],
    ids=["shapes", "glyphs"],
)
def test_the_words_of_each_built_in_dataset_get_distinct_ids(vocabulary: set[str]) -> None:
    encoder = CaptionWords(buckets=512)
    ids = {int(encoder.encode(word)[0]) for word in vocabulary}
    assert len(ids) == len(vocabulary) and all(1 <= i <= 512 for i in ids)
