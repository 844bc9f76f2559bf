"""A caption as a fixed-length prefix of byte ids, for a token prior over media codes.

A two-stage pipeline's token model (the ``transformer`` with ``media_vocab`` set) reads
its condition as a prefix of the same sequence as the media codes: ids ``[0, K)`` are the
codes, and a caption's bytes come after them, at ``offset + byte``. The prefix has a fixed
length so that every example's media codes start at the same position.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

log = logging.getLogger(__name__)

BYTE_IDS = 257
"""How many ids a byte prefix takes above its offset: the 256 byte values, then the pad."""

PAD = 256
"""The pad's id above the offset."""

REPORTED_TRUNCATIONS = 5  # warnings before the encoder stops reporting cut captions


class PrefixBytes:
    """Encoder: a caption -> ``LongTensor (length,)`` of ``offset + byte``, padded with ``offset + 256``.

    A caption longer than ``length`` bytes keeps its first ``length`` bytes (never half a
    character), with a warning, for the first few captions cut by this encoder (the one a
    sample's prompt goes through, as the dataset's captions do). An empty caption is all
    padding.

    Args:
        offset: the id of byte 0; set it to the token model's ``media_vocab`` so that the
            bytes sit just above the media codes (two-stage presets link the two).
        length: the length of every encoded caption, in bytes; the token model's
            ``caption_length`` must be the same.
    """

    def __init__(self, *, offset: int = 0, length: int = 32) -> None:
        for key, value, least in (("offset", offset, 0), ("length", length, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(
                    f"condition_encoder.{key} must be an integer of at least {least}, got {value!r}"
                )
        self.offset = offset
        self.length = length
        self.truncated = 0  # captions cut so far

    def encode(self, caption: str) -> Tensor:
        if not isinstance(caption, str):
            raise ValueError(f"prefix_bytes encodes text, got {type(caption).__name__}")
        data = caption.encode("utf-8", errors="replace")
        if len(data) > self.length:
            kept = data[: self.length].decode("utf-8", errors="ignore").encode("utf-8")
            self._report(caption, len(data), kept)
            data = kept
        ids = [self.offset + byte for byte in data]
        ids += [self.offset + PAD] * (self.length - len(ids))
        return torch.tensor(ids, dtype=torch.long)  # (length,)

    def _report(self, caption: str, size: int, kept: bytes) -> None:
        self.truncated += 1
        if self.truncated > REPORTED_TRUNCATIONS:
            return
        log.warning(
            "caption %r is %d bytes, longer than condition_encoder.length=%d: only %r is used%s",
            caption, size, self.length, kept.decode("utf-8"),
            "; further cut captions are not reported" if self.truncated == REPORTED_TRUNCATIONS else "",
        )
