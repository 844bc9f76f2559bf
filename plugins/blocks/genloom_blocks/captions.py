"""Captions as hashed words: any caption encodes, with no vocabulary file to keep in sync.

Each word (a run of letters and digits in any script, lowercased, with a ``#`` and what
follows it kept in the word, so that a note name such as ``C#4`` stays one word) becomes
``crc32(word) % buckets + 1``; 0 is padding. crc32 is stable across processes and Python
versions (unlike ``hash``), so a checkpoint's captions mean the same thing wherever it is
sampled. Two words may share a bucket: the presets choose a ``buckets`` at which the words
of their dataset all get distinct ids (tested in each plugin: 512 for the image datasets,
1060 for the synthesised notes, where crc32 values agree in their low bits often enough
that no power of two up to 4096 does).

This is the ``caption_words`` condition encoder (registered by :mod:`genloom_blocks.plugin`);
the image and audio plugins' caption presets use it. :func:`encode_captions` is how their
datasets encode all captions with whichever condition encoder a pipeline names.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

WORD = re.compile(r"[^\W_]+(?:#[^\W_]*)?")  # letters and digits, any script; "c#4" is one word


class CaptionWords:
    """Encoder: a caption -> ``LongTensor (max_words,)`` of word ids in ``1..buckets``, 0-padded.

    Words past ``max_words`` are dropped. An empty caption encodes to all padding, which a
    conditioned generator reads as "no condition".

    Args:
        buckets: how many word ids there are; a generator's caption embedding must have
            as many (the VAEs' ``caption_buckets``).
        max_words: the length of every encoded caption.
    """

    def __init__(self, *, buckets: int = 512, max_words: int = 8) -> None:
        for key, value in (("buckets", buckets), ("max_words", max_words)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"condition_encoder.{key} must be a positive integer, got {value!r}")
        self.buckets = buckets
        self.max_words = max_words

    def words(self, caption: str) -> list[str]:
        """The words of ``caption`` that are encoded, in order."""
        if not isinstance(caption, str):
            raise ValueError(f"caption_words encodes text, got {type(caption).__name__}")
        return WORD.findall(caption.lower())[: self.max_words]

    def encode(self, caption: str) -> Tensor:
        ids = [zlib.crc32(word.encode("utf-8")) % self.buckets + 1 for word in self.words(caption)]
        return torch.tensor(ids + [0] * (self.max_words - len(ids)), dtype=torch.long)


def encode_captions(condition_encoder: Any, captions: Sequence[str]) -> Tensor:
    """A dataset's captions -> ``(N, ...)``: in batches when the encoder offers ``encode_many``
    (a pretrained sentence encoder runs its transformer once per batch of distinct captions,
    not once per example), else one ``encode`` per caption."""
    encode_many = getattr(condition_encoder, "encode_many", None)
    if encode_many is not None:
        return encode_many(list(captions))
    return torch.stack([condition_encoder.encode(caption) for caption in captions])
