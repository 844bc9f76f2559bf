"""Text as UTF-8 bytes: every string maps to token ids 0-255 and back without loss.

A byte vocabulary needs no training and no files, never meets an unknown character, and
keeps the model small (256 embeddings); the price is longer sequences than a BPE would give.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor


class ByteTokenizer:
    """Encoder: a string -> its UTF-8 bytes as a ``LongTensor`` of shape ``(T,)``."""

    vocab_size = 256

    def fingerprint(self) -> str:
        """:class:`genloom.interfaces.Fingerprinted`: the ids are the UTF-8 bytes, nothing else."""
        return "utf-8 bytes"

    def encode(self, text: str) -> Tensor:
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer encodes str, got {type(text).__name__}")
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"text holds {text[err.start]!r} at character {err.start}, a lone surrogate "
                "that UTF-8 cannot encode; it usually comes from a file or file name read "
                "with errors='surrogateescape': read the source with its real encoding"
            ) from err
        if not data:
            # torch.frombuffer refuses an empty buffer.
            return torch.empty(0, dtype=torch.long)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()  # (T,)


class ByteDecoder:
    """Decoder: byte ids -> text; also writes samples and decodes streams as they arrive.

    Negative ids are padding (a sampled row that already stopped) and are skipped. Bytes
    that are not valid UTF-8, which an undertrained model produces, become U+FFFD.
    """

    media_type = "text"
    input_range = (0, 255)  # byte ids (samples carry no -1 padding: generate() drops it)

    def decode(self, tokens: Tensor) -> str:
        return _byte_string(tokens).decode("utf-8", errors="replace")

    def write(self, media: Sequence[str], directory: Path) -> list[Path]:
        """Write ``sample_000.txt``, ... and a ``samples.md`` gallery holding them all."""
        return write_texts(media, directory)

    def incremental(self) -> Callable[[Tensor], str]:
        """A function that takes the next ids of one sample and returns the text they complete.

        A character whose bytes arrive in different chunks is returned once its last byte
        has arrived, so a terminal never shows half of an accented letter or an emoji.
        """
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def decode_chunk(tokens: Tensor) -> str:
            return decoder.decode(_byte_string(tokens))

        return decode_chunk


def write_texts(media: Sequence[str], directory: Path) -> list[Path]:
    """Write ``sample_000.txt``, ... and a ``samples.md`` gallery holding them all; return the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(len(media) - 1)))
    paths = []
    sections = ["# Samples\n"]
    for i, text in enumerate(media):
        path = directory / f"sample_{i:0{digits}d}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
        fence = _fence_for(text)
        sections.append(f"## {path.stem}\n\n{fence}text\n{text}\n{fence}\n")
    gallery = directory / "samples.md"
    gallery.write_text("\n".join(sections), encoding="utf-8")
    paths.append(gallery)
    return paths


def byte_symbols() -> list[str]:
    """The character that stands for each byte, in byte order: GPT-2's byte-level table.

    Printable Latin-1 bytes stand for themselves; the others (controls, space, NUL...) are
    shifted to ``chr(256 + n)``, so that every token of a byte-level BPE (``bpe``) or of
    the byte tokenizer ``genloom export format=hf`` writes is a printable string.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in symbols)
    symbols.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return [symbols[b] for b in range(256)]


def _byte_string(tokens: Tensor) -> bytes:
    ids = [i for i in tokens.reshape(-1).tolist() if i >= 0]
    if any(i > 255 for i in ids):
        raise ValueError(
            f"token id {max(ids)} is not a byte; the bytes decoder reads ids 0-255. "
            "Was the generator trained with a different encoder?"
        )
    return bytes(ids)


def _fence_for(text: str) -> str:
    """A Markdown code fence longer than any run of backticks inside ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)
