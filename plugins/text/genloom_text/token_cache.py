"""Token files: a corpus's ids written once to disk and read by every later run.

A token file holds one or more streams of ids (``"all"``, or ``"train"`` then ``"val"``) in the
narrowest unsigned type the encoder's vocabulary fits (:func:`dtype_for`: ``uint8`` for
bytes, ``uint16`` up to 65,536 ids, ``uint32`` above), so a byte corpus takes one byte of disk
per byte of text; a run reads the windows it needs (:meth:`TokenFile.window`) and holds no
more. Layout::

    [0, 64)                 b"GLTOKENS", format (u32), count (u64), header length (u64), zeros
    [64, 64 + count * w)    the ids, little-endian, w bytes each
    [.., end)               the header: JSON {"key", "dtype", "streams": {name: {"tokens", "pieces"}}}

A file is written under a temporary name beside its final one and renamed into place once
complete and synced (:class:`TokenFileWriter`), so a killed run never leaves a half file
under the real name. :func:`read` checks the magic, the format, the size the header promises
and the key, and calls anything else stale: the caller rebuilds it with a warning. The ids
themselves are not hashed on each start (a gigabyte would take seconds); a file damaged in
the middle without changing its size is not detected.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from genloom.cache import user_cache_dir
from torch import Tensor

log = logging.getLogger(__name__)

MAGIC = b"GLTOKENS"
FORMAT = 1
PREFIX = struct.Struct("<8sIQQ")  # magic, format, count, header length
DATA_OFFSET = 64  # the ids start here: aligned for any dtype
SUFFIX = ".tokens"
HEADER_LIMIT = 64 << 20  # piece lengths of a huge corpus are a few MB; beyond this it is not ours
DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32}


class StaleTokenFile(ValueError):
    """A token file that is not a complete one for its key; the message says what is wrong."""


def default_dir() -> Path:
    """Where token files go unless ``dataset.cache_dir`` says otherwise: ``<user cache>/tokens``."""
    return user_cache_dir() / "tokens"


def dtype_for(vocab_size: int) -> str:
    """The narrowest unsigned dtype that holds ids ``[0, vocab_size)``."""
    if vocab_size <= 1 << 8:
        return "uint8"
    if vocab_size <= 1 << 16:
        return "uint16"
    if vocab_size <= 1 << 32:
        return "uint32"
    raise ValueError(f"a vocabulary of {vocab_size:,} ids does not fit a token file (at most 2**32)")


@dataclass
class Stream:
    """One stream of a token file: how many ids, and (cut by text pieces) each piece's length."""

    tokens: int = 0
    pieces: list[int] | None = None


@dataclass
class TokenFile:
    """A complete token file, read by :func:`read`: its streams, mapped whole by :meth:`tensors`,
    or read a window at a time by :meth:`window`."""

    path: Path
    dtype: str
    streams: dict[str, Stream] = field(default_factory=dict)
    _file: Any = field(default=None, repr=False, compare=False)  # opened by the first window
    _starts: dict[str, int] = field(default_factory=dict, repr=False, compare=False)  # ... which fills this

    def window(self, stream: str, start: int, length: int) -> Tensor:
        """Ids ``[start, start + length)`` of ``stream`` as int64 ``(length,)``, read with ``pread``.

        Reading rather than mapping keeps the pages out of this process: a map shows every page
        an epoch touched as resident (the kernel maps whole folios around each fault), so a
        process's memory would grow to the file's size; a read costs one system call. ``pread``
        has no file position, so DataLoader workers forked with the open file share it safely.
        """
        itemsize = np.dtype(DTYPES[self.dtype]).itemsize
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - open while the dataset lives
            before = 0
            for name, entry in self.streams.items():  # where each stream's ids start, in bytes
                self._starts[name] = DATA_OFFSET + before * itemsize
                before += entry.tokens
        data = os.pread(self._file.fileno(), length * itemsize, self._starts[stream] + start * itemsize)
        return torch.from_numpy(np.frombuffer(data, dtype=DTYPES[self.dtype]).astype(np.int64))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}  # each process opens its own

    def tensors(self) -> dict[str, Tensor]:
        """``{stream: ids}``, views of one private map of the file, ``(tokens,)`` each, for whole streams."""
        count = sum(stream.tokens for stream in self.streams.values())
        out: dict[str, Tensor] = {}
        if count == 0:
            return {name: torch.empty(0, dtype=torch.long) for name in self.streams}
        with open(self.path, "rb") as f:
            # Copy on write gives a writable buffer, which torch.from_numpy wants; nothing writes
            # to it, so the pages stay the file's: page cache, mapped only where read.
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        ids = torch.from_numpy(np.frombuffer(mapped, dtype=DTYPES[self.dtype], count=count,
                                             offset=DATA_OFFSET))
        start = 0
        for name, stream in self.streams.items():
            out[name] = ids[start : start + stream.tokens]
            start += stream.tokens
        return out


def path_for(directory: Path, key: str) -> Path:
    return directory / f"{key[:32]}{SUFFIX}"


def read(path: Path, key: str) -> TokenFile:
    """The token file at ``path`` if it is complete and made for ``key``; :class:`StaleTokenFile` if not."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(PREFIX.size)
            if len(prefix) < PREFIX.size:
                raise StaleTokenFile(f"it is {size} bytes, shorter than the {DATA_OFFSET}-byte prefix")
            magic, fmt, count, header_len = PREFIX.unpack(prefix)
            if magic != MAGIC or fmt != FORMAT:
                raise StaleTokenFile(f"it is not a token file of format {FORMAT}")
            if header_len > HEADER_LIMIT:
                raise StaleTokenFile(f"its header claims {header_len:,} bytes")
            f.seek(max(0, size - header_len))
            header = json.loads(f.read(header_len))
    except OSError as err:
        raise StaleTokenFile(f"it cannot be read: {err}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise StaleTokenFile(f"its header is not JSON: {err}") from None
    try:
        dtype = header["dtype"]
        streams = {name: Stream(int(s["tokens"]), s.get("pieces")) for name, s in header["streams"].items()}
        found_key = header["key"]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StaleTokenFile("its header lacks the key, dtype or streams") from None
    if found_key != key:
        raise StaleTokenFile("it was written for another corpus or tokenizer")
    if dtype not in DTYPES:
        raise StaleTokenFile(f"its dtype {dtype!r} is none of {', '.join(DTYPES)}")
    expected = DATA_OFFSET + count * np.dtype(DTYPES[dtype]).itemsize + header_len
    if size != expected:
        raise StaleTokenFile(f"it is {size:,} bytes where its {count:,} ids need {expected:,} (truncated?)")
    if sum(s.tokens for s in streams.values()) != count or any(
        s.pieces is not None and sum(s.pieces) != s.tokens for s in streams.values()
    ):
        raise StaleTokenFile("its streams do not add up to the ids it holds")
    return TokenFile(path, dtype, streams)


class TokenFileWriter:
    """Writes a token file stream by stream, under a temporary name until :meth:`commit`.

    Use as a context manager: leaving it without a commit (an error, Ctrl-C) removes the
    temporary file. Streams are written one after another (:meth:`open`, then :meth:`append`
    its ids); ids outside the dtype's range are refused (:meth:`narrow`), naming ``encoder``.
    """

    def __init__(self, path: Path, *, key: str, dtype: str, encoder: str) -> None:
        self.path, self.key, self.dtype, self.encoder = path, key, dtype, encoder
        self.streams: dict[str, Stream] = {}
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._file: Any = None
        self._stream = Stream()
        self._high = np.iinfo(DTYPES[dtype]).max

    def __enter__(self) -> TokenFileWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed by commit or __exit__
        self._file.write(bytes(DATA_OFFSET))  # the prefix, filled in by commit
        return self

    def open(self, stream: str, *, pieces: bool = False) -> None:
        """Start ``stream``: the ids appended from now on are its own (``pieces``: one piece each)."""
        self._stream = Stream(pieces=[] if pieces else None)
        self.streams[stream] = self._stream

    def narrow(self, ids: Tensor) -> np.ndarray:
        """``ids`` ``(T,)`` in the file's dtype; an id outside its range is an error naming the encoder."""
        array = ids.numpy()
        if len(array):
            low, high = int(array.min()), int(array.max())
            if low < 0 or high > self._high:
                raise ValueError(
                    f"encoder {self.encoder} returned id {low if low < 0 else high}, outside the "
                    f"[0, {self._high}] its vocab_size promises; its ids cannot be stored as {self.dtype}"
                )
        return array.astype(DTYPES[self.dtype])

    def append(self, ids: np.ndarray) -> None:
        """Add ids from :meth:`narrow` to the stream opened last."""
        self._file.write(ids.tobytes())
        self._stream.tokens += len(ids)
        if self._stream.pieces is not None:
            self._stream.pieces.append(len(ids))

    def commit(self) -> TokenFile:
        """Write the header, sync, and rename the file into place."""
        header = json.dumps({
            "key": self.key, "dtype": self.dtype,
            "streams": {name: {"tokens": s.tokens, "pieces": s.pieces} for name, s in self.streams.items()},
        }).encode()
        self._file.write(header)
        count = sum(s.tokens for s in self.streams.values())
        self._file.seek(0)
        self._file.write(PREFIX.pack(MAGIC, FORMAT, count, len(header)))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)
        return TokenFile(self.path, self.dtype, self.streams)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)
