"""Text corpora: the CPython documentation that ships with Python, or your own text files.

Both are cut the same way (:class:`TextSplits`). The text is encoded once per encoder,
and the token stream is cut into chunks of up to eight windows; every k-th chunk
(k = round(1 / val_fraction)) goes to validation. Validation is thereby spread over the
whole corpus rather than taken from its end, and since chunks do not overlap, no
validation token is ever trained on. Inside a chunk, examples are windows of
``block_size + 1`` tokens (inputs and next-token targets) taken every ``block_size``
tokens. Nothing is random: the same text, encoder and options always give the same split.

An encoder fitted on the training split (:class:`genloom.interfaces.Fitting`, a trained BPE)
must not learn from validation text, yet where a token chunk falls in the text is known only
once the text is encoded. For such an encoder the text is cut first, into pieces of
characters (each about as long as a chunk of :data:`CHARS_PER_TOKEN`-character tokens), every
k-th piece for validation; the encoder learns from the training pieces alone
(``fitting_media``), and each piece is encoded and cut into windows on its own.

When the encoder says how many bytes each id stands for (:class:`genloom.interfaces.TokenBytes`,
a BPE), each example also carries ``"bytes"``, the UTF-8 bytes its targets cover, so that bits
per byte are counted per byte. The bytes encoder needs none: each of its tokens is one byte.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from genloom.checkpoint import write_atomic
from genloom.folders import describe_kind, glob_files, refuse_file_system_root, walk_files
from genloom.interfaces import Encoder, Fingerprinted, Fitting, Split, TokenBytes
from torch import Tensor

from genloom_text import token_cache as token_cache_module
from genloom_text.token_cache import TokenFile, TokenFileWriter
from genloom_text.tokenizer import ByteTokenizer

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst", ".adoc", ".org", ".tex")
"""What a folder given as ``dataset.path`` is searched for. Prose and markup only: source
code and data files are left out unless you name them with a glob (``'src/**/*.py'``)."""

WINDOWS_PER_CHUNK = 8
CHARS_PER_TOKEN = 4  # about what a trained BPE's token covers in English or code: sizes the pieces
BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32"), (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32"),
    (codecs.BOM_UTF8, "utf-8", "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"), (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
)
SHOWN_FILES = 3  # files named in the summary of encodings
CHUNK_BYTES = 1 << 22  # files are read, decoded and tokenised 4 MiB at a time
MEMO_DIR = "files"  # beside the token files: what reading each corpus file found (FileText)


class PydocCorpus:
    """The documentation text that ships with CPython (``pydoc_data.topics``), ~465 K characters.

    It needs no download, which makes it the default corpus of the demo. Topics are joined
    in sorted order with blank lines between them.

    Examples (batch keys): ``"tokens"``, int64 ``(block_size + 1,)``, the encoder's ids
    (0-255 for ``bytes``): inputs ``[:-1]``, next-token targets ``[1:]``; ``"bytes"``, int64
    ``()``, the UTF-8 bytes the targets cover, with an encoder such as ``bpe``. No condition.
    """

    unit = "tok"

    def __init__(self, *, block_size: int, val_fraction: float = 0.1) -> None:
        self.units_per_example = block_size
        self._splits = TextSplits(
            _pydoc_text(),
            source="the pydoc corpus (pydoc_data.topics)",
            block_size=block_size,
            val_fraction=val_fraction,
        )

    def split(
        self, name: Split, encoder: Encoder, condition_encoder: Encoder | None = None
    ) -> TokenWindows:
        """Windows of the split; plain text carries no condition, so ``condition_encoder`` is unused."""
        return self._splits.split(name, encoder)

    def fitting_media(self) -> Iterator[str]:
        """The training pieces of the text, for an encoder fitted on them (a trained BPE)."""
        return self._splits.train_pieces()


class TextFiles:
    """Your text, from ``path``: a file, a folder, or a glob.

    * a file is read whatever its name;
    * a folder is searched recursively for files ending in one of :data:`TEXT_SUFFIXES`
      (hidden files and folders, such as ``.git``, are skipped);
    * a glob (``'notes/**/*.md'``, ``**`` matching any depth) reads every file it
      matches, which is how to train on other kinds of text such as code.

    Files are read in sorted order and joined with blank lines. Each file is decoded by
    what it is: a byte-order mark (UTF-8, UTF-16 or UTF-32; the mark itself is dropped),
    else UTF-8 if it is valid UTF-8, else ``encoding``, the fallback for legacy files
    (``latin-1``, ``cp1252``...; the default ``utf-8`` means none). A folder that mixes
    UTF-8 and Latin-1 files is thereby read right with ``encoding=latin-1``. One log line
    says how many files used which encoding and names those that fell back. A file that
    none of these decode (or that holds NUL bytes) is an error naming it and the byte offset.

    The text is never held whole: files are read :data:`CHUNK_BYTES` at a time. With
    ``token_cache`` (the default) and an encoder that is
    :class:`~genloom.interfaces.Fingerprinted` (``bytes``, ``bpe``, ``hf_tokenizer``), the ids
    are written once to a token file in ``cache_dir`` (default ``~/.cache/genloom/tokens``,
    :func:`genloom_text.token_cache.default_dir`), keyed by the files' contents and the
    tokenizer; every later run reads its windows from it, so start-up does not tokenise
    again and resident memory does not grow with the corpus. ``token_cache=false`` holds int64 ids in
    memory instead (8 bytes per token).

    Examples (batch keys): ``"tokens"``, int64 ``(block_size + 1,)``, the encoder's ids
    (0-255 for ``bytes``): inputs ``[:-1]``, next-token targets ``[1:]``; ``"bytes"``, int64
    ``()``, the UTF-8 bytes the targets cover, with an encoder such as ``bpe``. No condition.

    Attributes:
        files: the files read, in order.
        encodings: ``{file: how it was decoded}``: ``"utf-8"``, ``"utf-8 (BOM)"``,
            ``"utf-16 (BOM)"``, ``"utf-32 (BOM)"`` or the fallback's name.
    """

    unit = "tok"

    def __init__(
        self, *, path: str, block_size: int, val_fraction: float = 0.1, encoding: str = "utf-8",
        token_cache: bool = True, cache_dir: str | None = None,
    ) -> None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(
                f"dataset.encoding {encoding!r} is not an encoding Python knows; "
                "use a codec name such as utf-8, latin-1 or utf-16"
            ) from None
        if not isinstance(token_cache, bool):
            raise ValueError(f"dataset.token_cache must be true or false, got {token_cache!r}")
        if cache_dir is not None and not isinstance(cache_dir, str):
            raise ValueError(f"dataset.cache_dir must be a folder's path or null, got {cache_dir!r}")
        self.units_per_example = block_size
        self.files = _find_text_files(path)
        fallback = codecs.lookup(encoding).name
        directory = None
        if token_cache:
            directory = Path(cache_dir).expanduser() if cache_dir else token_cache_module.default_dir()
        text = FileText(self.files, None if fallback == "utf-8" else encoding,
                        memo=None if directory is None else directory / MEMO_DIR)
        self.encodings = text.encodings
        _log_encodings(path, self.encodings)
        if text.blank:
            raise ValueError(f"dataset.path {path!r}: the {len(self.files)} file(s) it names hold no text")
        self._splits = TextSplits(
            text,
            source=f"dataset.path {path!r} ({len(self.files)} file(s))",
            block_size=block_size,
            val_fraction=val_fraction,
            cache_dir=directory,
        )

    def split(
        self, name: Split, encoder: Encoder, condition_encoder: Encoder | None = None
    ) -> TokenWindows:
        """Windows of the split; plain text carries no condition, so ``condition_encoder`` is unused."""
        return self._splits.split(name, encoder)

    def fitting_media(self) -> Iterator[str]:
        """The training pieces of the text, for an encoder fitted on them (a trained BPE)."""
        return self._splits.train_pieces()


class FileText:
    """The text of ``files`` joined by blank lines, read :data:`CHUNK_BYTES` at a time.

    Construction reads each file once to choose how it is decoded (its byte-order mark, UTF-8,
    else the fallback), to refuse what is not text, and to count its characters and hash its
    bytes (the token cache's key); :meth:`chunks` reads the files again. The whole text is
    never in memory at once. With ``memo`` (a folder), what a file's reading found is kept
    there, keyed by its path and ``stat`` (size, mtime, ctime, inode), so that a later run
    reads only the files that changed: ctime cannot be set back by a tool that copies
    times, and a file written in the last two seconds is not memoised.

    Attributes:
        encodings: ``{file: how it was decoded}`` (see :class:`TextFiles`).
        chars: the characters of the joined text.
        size: the bytes of the joined text as UTF-8, for a UTF-8 corpus.
        blank: whether the text is whitespace only.
        digest: sha256 of the files' bytes and how each was decoded, in order.
    """

    def __init__(self, files: list[Path], fallback: str | None, memo: Path | None = None) -> None:
        self.files = files
        self.encodings: dict[Path, str] = {}
        self._scans: dict[Path, _Scan] = {}
        self.chars = self.size = 2 * max(0, len(files) - 1)  # the blank lines between files
        self.blank = True
        digest = hashlib.sha256()
        for file in files:
            scan = _recalled(file, fallback, memo)
            if scan is None:
                scan = _survey(file, fallback)
                _memoise(file, fallback, memo, scan)
            self.encodings[file] = scan.name
            self._scans[file] = scan
            self.chars += scan.chars
            self.size += scan.size - scan.skip
            self.blank = self.blank and scan.blank
            digest.update(f"{scan.codec}:{scan.skip}:{scan.sha256}\n".encode())
        self.digest = digest.hexdigest()

    def chunks(self) -> Iterator[str]:
        """The joined text in order, in pieces of up to :data:`CHUNK_BYTES` bytes' worth."""
        for i, file in enumerate(self.files):
            if i:
                yield "\n\n"
            scan = self._scans[file]
            yield from _decoded(file, scan.codec, scan.skip)

    def utf8_chunks(self) -> Iterator[bytes]:
        """The joined text as UTF-8, in pieces: a UTF-8 file's own bytes, others decoded and encoded.

        A UTF-8 file was checked to be valid UTF-8 when surveyed, so its bytes are its text's
        UTF-8 and need no decoding; they are hashed again, and a file that no longer hashes
        as surveyed (it changed since) is an error rather than ids that do not match the key.
        """
        for i, file in enumerate(self.files):
            if i:
                yield b"\n\n"
            scan = self._scans[file]
            if scan.codec != "utf-8":
                yield from (text.encode("utf-8") for text in _decoded(file, scan.codec, scan.skip))
                continue
            digest = hashlib.sha256()
            with open(file, "rb") as f:
                digest.update(f.read(scan.skip))
                while data := f.read(CHUNK_BYTES):
                    digest.update(data)
                    yield data
            if digest.hexdigest() != scan.sha256:
                raise ValueError(f"{file} changed while it was being read; run again once it is complete")


class TextSplits:
    """A text cut into train and validation windows of token ids (see the module docstring).

    ``text`` is a string or a :class:`FileText`. It is encoded the first time a split is asked
    for and again only when the encoder changes, so asking for ``train`` then ``val`` encodes
    it once. With ``cache_dir`` and a :class:`~genloom.interfaces.Fingerprinted` encoder the ids
    go to a token file there (:mod:`genloom_text.token_cache`), read back by every later run
    with the same text and tokenizer instead of encoding again, and windows are read from
    it; the windows are the same as those cut in memory.
    """

    def __init__(
        self, text: str | FileText, *, source: str, block_size: int, val_fraction: float,
        cache_dir: Path | None = None,
    ) -> None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"dataset.block_size must be a positive integer, got {block_size!r}")
        if not 0 < val_fraction <= 0.5:
            raise ValueError(
                f"dataset.val_fraction must be in (0, 0.5], got {val_fraction!r}; "
                "0.1 keeps one chunk in ten for validation"
            )
        self.text = text
        self.source = source
        self.block_size = block_size
        self.val_fraction = val_fraction
        self.cache_dir = cache_dir
        self._encoded: tuple[Encoder, dict[str, TokenWindows]] | None = None

    def split(self, name: Split, encoder: Encoder) -> TokenWindows:
        if name not in ("train", "val"):
            raise ValueError(f"unknown split {name!r}; the splits are 'train' and 'val'")
        if self._encoded is None or self._encoded[0] is not encoder:
            splits = self._windows(encoder)
            if isinstance(encoder, TokenBytes):
                lengths = encoder.token_bytes()
                for windows in splits.values():
                    windows.token_bytes = lengths
            self._encoded = (encoder, splits)
        return self._encoded[1][name]

    def pieces(self) -> dict[str, list[str]]:
        """The text cut into pieces of characters, every k-th for validation (module docstring)."""
        pieces: dict[str, list[str]] = {"train": [], "val": []}
        for split, piece in self._pieces():
            pieces[split].append(piece)
        return pieces

    def train_pieces(self) -> Iterator[str]:
        """The training pieces of :meth:`pieces`, one at a time."""
        return (piece for split, piece in self._pieces() if split == "train")

    def cut_pieces(self, encoder: Encoder) -> dict[str, TokenWindows]:
        """Windows inside each piece of :meth:`pieces`, which a fitting encoder is cut by."""
        streams: dict[str, list[Tensor]] = {"train": [], "val": []}
        for split, piece in self._pieces():
            streams[split].append(self._encode(encoder, piece))
        return self._piece_windows(
            {split: torch.cat(ids) if ids else torch.empty(0, dtype=torch.long)
             for split, ids in streams.items()},
            {split: [len(t) for t in ids] for split, ids in streams.items()},
            encoder,
        )

    def _windows(self, encoder: Encoder) -> dict[str, TokenWindows]:
        fitting = isinstance(encoder, Fitting)
        if self.cache_dir is not None and isinstance(encoder, Fingerprinted):
            return self._mapped(encoder, fitting=fitting)
        if self.cache_dir is not None:
            log.info("encoder %s cannot name its vocabulary (genloom.interfaces.Fingerprinted), so "
                     "%s is not token-cached: its ids are held in memory",
                     type(encoder).__name__, self.source)
        if fitting:
            return self.cut_pieces(encoder)
        return self._cut(self._encode(encoder, self._whole()))

    def _mapped(self, encoder: Fingerprinted, *, fitting: bool) -> dict[str, TokenWindows]:
        """Windows over the token file for this text and ``encoder``, written first if need be."""
        key = self._cache_key(encoder, fitting=fitting)
        path = token_cache_module.path_for(self.cache_dir, key)
        try:
            stored = token_cache_module.read(path, key)
        except token_cache_module.StaleTokenFile as err:
            if path.exists():
                log.warning("the token cache %s cannot be used (%s); tokenising %s again",
                            path, err, self.source)
            stored = self._tokenise(encoder, fitting=fitting, key=key, path=path)
        else:
            count = sum(stream.tokens for stream in stored.streams.values())
            log.info("token cache hit: %s tokens from %s", f"{count:,}", path)
        tensors = stored.tensors()
        if fitting:
            return self._piece_windows(tensors, {s: stored.streams[s].pieces or [] for s in tensors},
                                       encoder, mapped=stored)
        return self._cut(tensors["all"], mapped=stored)

    def _tokenise(self, encoder: Fingerprinted, *, fitting: bool, key: str, path: Path) -> TokenFile:
        """Encode the text in pieces into a new token file at ``path``; a progress bar on long work."""
        from tqdm.auto import tqdm

        name = type(encoder).__name__
        start = time.perf_counter()
        writer = TokenFileWriter(path, key=key, dtype=token_cache_module.dtype_for(encoder.vocab_size),
                                 encoder=name)
        as_utf8 = _ids_are_utf8(encoder) and isinstance(self.text, FileText)
        total, unit = (self.text.size, "B") if as_utf8 else (self._chars(), "char")
        try:
            with writer, tqdm(total=total, unit=unit, unit_scale=True, desc="tokenise",
                              delay=2, disable=None, dynamic_ncols=True) as bar:
                if as_utf8:  # the ids are the bytes: no int64 in between
                    writer.open("all")
                    for data in self.text.utf8_chunks():
                        writer.append(np.frombuffer(data, dtype=np.uint8))
                        bar.update(len(data))
                elif fitting:  # the pieces a fitted encoder is cut by (module docstring), val after train
                    held: list[np.ndarray] = []
                    writer.open("train", pieces=True)
                    for split, piece in self._pieces():
                        ids = writer.narrow(self._encode(encoder, piece))
                        if split == "train":
                            writer.append(ids)
                        else:
                            held.append(ids)
                        bar.update(len(piece))
                    writer.open("val", pieces=True)
                    for ids in held:
                        writer.append(ids)
                elif isinstance(encoder, ByteTokenizer):  # any cut gives the same ids
                    writer.open("all")
                    for text in self._chunks():
                        writer.append(writer.narrow(self._encode(encoder, text)))
                        bar.update(len(text))
                else:  # ids at a cut could differ from those of the whole text: encode it whole
                    writer.open("all")
                    writer.append(writer.narrow(self._encode(encoder, self._whole())))
                    bar.update(self._chars())
                stored = writer.commit()
        except OSError as err:
            if isinstance(self.text, FileText) and err.filename in {str(f) for f in self.text.files}:
                raise  # a corpus file, not the cache
            raise ValueError(
                f"the token cache cannot be written in {path.parent} ({err.strerror or err}); set "
                "dataset.cache_dir to a writable folder with room for the corpus's ids, or "
                "dataset.token_cache=false to hold them in memory"
            ) from None
        seconds = time.perf_counter() - start
        count = sum(s.tokens for s in stored.streams.values())
        log.info("tokenised %s with %s once: %s characters into %s tokens in %.1f s; cached in %s",
                 self.source, name, f"{self._chars():,}", f"{count:,}", seconds, path)
        return stored

    def _cache_key(self, encoder: Fingerprinted, *, fitting: bool) -> str:
        """sha256 of what the ids are a function of: the text, the encoder, and (fitted) the cut."""
        text = self.text.digest if isinstance(self.text, FileText) else hashlib.sha256(
            self.text.encode("utf-8", "surrogatepass")).hexdigest()
        record = {
            "format": token_cache_module.FORMAT, "text": text,
            "encoder": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
            "fingerprint": encoder.fingerprint(),
            # pieces (which a fitted encoder is cut by) depend on these; a plain stream does not
            "pieces": ([self.block_size, self.val_fraction, WINDOWS_PER_CHUNK, CHARS_PER_TOKEN]
                       if fitting else None),
        }
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()

    def _chunks(self) -> Iterator[str]:
        if isinstance(self.text, FileText):
            return self.text.chunks()
        return (self.text[i : i + CHUNK_BYTES] for i in range(0, len(self.text), CHUNK_BYTES))

    def _chars(self) -> int:
        return self.text.chars if isinstance(self.text, FileText) else len(self.text)

    def _whole(self) -> str:
        return "".join(self._chunks()) if isinstance(self.text, FileText) else self.text

    def _pieces(self) -> Iterator[tuple[Split, str]]:
        """``(split, piece)`` in text order, read chunk by chunk (see :meth:`pieces`)."""
        every = round(1 / self.val_fraction)
        # Small texts get shorter pieces, so that validation still receives one in `every`.
        length = max(1, min(WINDOWS_PER_CHUNK * self.block_size * CHARS_PER_TOKEN, self._chars() // every))
        i, rest = 0, ""
        for chunk in self._chunks():
            text = rest + chunk
            whole = len(text) // length * length
            for start in range(0, whole, length):
                yield ("val" if i % every == every - 1 else "train"), text[start : start + length]
                i += 1
            rest = text[whole:]
        if rest:
            yield ("val" if i % every == every - 1 else "train"), rest

    def _piece_windows(
        self, tokens: dict[str, Tensor], lengths: dict[str, list[int]], encoder: Encoder,
        mapped: TokenFile | None = None,
    ) -> dict[str, TokenWindows]:
        """Windows inside each piece: ``lengths[split]`` are the pieces' ids in ``tokens[split]``."""
        window = self.block_size + 1
        splits = {}
        for split in ("train", "val"):
            starts, offset = [], 0
            for length in lengths[split]:
                last = max(offset, offset + length - window + 1)
                starts.append(torch.arange(offset, last, self.block_size))
                offset += length
            starts_all = torch.cat(starts) if starts else torch.empty(0, dtype=torch.long)
            splits[split] = TokenWindows(tokens[split], starts_all, self.block_size,
                                         mapped=None if mapped is None else (mapped, split))
        if not len(splits["train"]) or not len(splits["val"]):
            raise ValueError(
                f"{self.source} is too short for a context of {self.block_size} tokens of "
                f"{type(encoder).__name__}: cut into pieces of text (every "
                f"{round(1 / self.val_fraction)}th for validation), it gives {len(splits['train'])} "
                f"training and {len(splits['val'])} validation windows of {window} tokens "
                "(generator.block_size + 1): add text or lower generator.block_size."
            )
        return splits

    def _encode(self, encoder: Encoder, text: str) -> Tensor:
        tokens = encoder.encode(text)
        if not isinstance(tokens, Tensor) or tokens.dim() != 1 or tokens.is_floating_point():
            got = (
                f"shape {tuple(tokens.shape)} and dtype {tokens.dtype}"
                if isinstance(tokens, Tensor)
                else type(tokens).__name__
            )
            raise ValueError(
                f"{self.source} needs an encoder that turns text into a 1-D tensor of token "
                f"ids; {type(encoder).__name__} returned {got}"
            )
        return tokens.long()

    def _cut(self, tokens: Tensor, mapped: TokenFile | None = None) -> dict[str, TokenWindows]:
        """Windows of one token stream, ``(n,)``: chunks of up to eight, every k-th chunk for validation."""
        n, block = len(tokens), self.block_size
        window = block + 1
        every = round(1 / self.val_fraction)
        # Small corpora get shorter chunks, so that there are enough for validation to
        # receive one in `every`.
        windows_per_chunk = max(1, min(WINDOWS_PER_CHUNK, (n // every - 1) // block))
        chunk_len = windows_per_chunk * block + 1
        offsets = torch.arange(windows_per_chunk) * block  # (W,) windows inside a whole chunk
        chunks = torch.arange(-(-n // chunk_len))  # (C,) the last may be partial
        is_val = chunks % every == every - 1
        split_starts = {}
        for split, mine in (("train", chunks[~is_val]), ("val", chunks[is_val])):
            starts = (mine[:, None] * chunk_len + offsets).flatten()  # (C_split * W,), in order
            # only the last chunk can be partial: drop its windows that run past the end
            split_starts[split] = starts[: int(torch.searchsorted(starts, n - window, right=True))]
        if not len(split_starts["train"]) or not len(split_starts["val"]):
            needed = every * window
            hint = "add text"
            if n // every - 1 >= 2:
                hint += f" or lower generator.block_size (for example to {n // every - 1})"
            raise ValueError(
                f"{self.source} is too short for a context of {block} tokens: its {n} tokens "
                f"give {len(split_starts['train'])} training and {len(split_starts['val'])} validation "
                f"windows of {window} tokens (generator.block_size + 1). With "
                f"dataset.val_fraction={self.val_fraction} it needs at least {needed} tokens: "
                f"{hint}."
            )
        return {
            split: TokenWindows(tokens, starts, block, mapped=None if mapped is None else (mapped, "all"))
            for split, starts in split_starts.items()
        }


class TokenWindows(torch.utils.data.Dataset):
    """Examples ``{"tokens": LongTensor (block_size + 1,)}`` cut from one token stream.

    ``starts`` holds each window's offset in the stream; windows are views of an int64
    stream, or read one at a time from a token file (``mapped``: the file and the stream's
    name; :meth:`TokenFile.window`) and widened to int64, so that resident memory does not
    grow with the corpus. ``tokens`` is then the stream's memory map, which is not pickled
    with the dataset: a DataLoader worker started by spawn maps the file itself rather than
    receiving a copy of the ids.
    With ``token_bytes`` set (the bytes each id stands for, ``(vocab_size,)``) an example also
    holds ``"bytes"``: how many bytes its targets (``tokens[1:]``) cover, int64 ``()``.
    """

    def __init__(self, tokens: Tensor, starts: Tensor, block_size: int, *,
                 mapped: tuple[TokenFile, str] | None = None) -> None:
        self.tokens = tokens
        self.starts = starts
        self.window = block_size + 1
        self.mapped = mapped
        self.token_bytes: Tensor | None = None  # set by TextSplits for a TokenBytes encoder

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        start = int(self.starts[index])
        if self.mapped is None:
            tokens = self.tokens[start : start + self.window]  # (window,), a view
        else:
            tokens = self.mapped[0].window(self.mapped[1], start, self.window)  # (window,), read
        if self.token_bytes is None:
            return {"tokens": tokens}
        return {"tokens": tokens, "bytes": self.token_bytes[tokens[1:]].sum()}

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        if self.mapped is not None:
            state["tokens"] = None  # mapped again on unpickling
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if self.mapped is not None:
            file, stream = self.mapped
            self.tokens = file.tensors()[stream]


def _ids_are_utf8(encoder: Encoder) -> bool:
    """Whether ``encoder``'s ids are the UTF-8 bytes of the text: ``bytes``, not a subclass changing that.

    A text's bytes are then written as they are (a UTF-8 file's own bytes), with no int64 ids
    made and narrowed again. Other encoders' text goes through ``encode``: in chunks where any
    cut gives the same ids (a subclass of ``bytes``); a BPE or a Hugging Face tokenizer may
    merge across a cut (or add special tokens per call), so their text is encoded whole.
    """
    return isinstance(encoder, ByteTokenizer) and type(encoder).encode is ByteTokenizer.encode


def _pydoc_text() -> str:
    try:
        from pydoc_data.topics import topics
    except ImportError as err:
        raise ValueError(
            "dataset 'pydoc' reads pydoc_data, which this Python installation lacks "
            "(some distributions strip it); train on your own text instead with "
            "dataset=text_files dataset.path=PATH"
        ) from err
    return "\n\n".join(topics[name] for name in sorted(topics))


def _find_text_files(path: str) -> list[Path]:
    """The files ``dataset.path`` names, sorted; an error that says what to do if none."""
    if any(char in path for char in "*?["):
        files = glob_files(path)
        if not files:
            raise ValueError(
                f"dataset.path {path!r} matches no files (relative to {Path.cwd()}); "
                "check the pattern, for example 'notes/**/*.md'"
            )
        return files
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"dataset.path {path!r} does not exist (looked for {root.resolve()}); set it to "
            "a text file, a folder of text files, or a glob such as 'notes/**/*.md'"
        )
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ValueError(
            f"dataset.path {path!r} is {describe_kind(root)}, not a text file or folder; set it "
            "to a text file, a folder of text files, or a glob such as 'notes/**/*.md'"
        )
    refuse_file_system_root(root, what="text files", shown=path)
    candidates = walk_files(root)
    files = [p for p in candidates if p.suffix.lower() in TEXT_SUFFIXES]
    if not files:
        found = f"{len(candidates)} other file(s)" if candidates else "no files at all"
        raise ValueError(
            f"dataset.path {path!r} is a folder with no text files: it was searched "
            f"recursively for {', '.join(TEXT_SUFFIXES)} and holds {found}. Put text "
            "there, or name other files with a glob such as "
            f"dataset.path='{root.as_posix()}/**/*.py'"
        )
    return files


@dataclass
class _Scan:
    """What reading one file through once found (:func:`_scan`)."""

    codec: str
    skip: int  # bytes of a byte-order mark before the text
    name: str = ""  # how it was decoded, for TextFiles.encodings
    chars: int = 0
    blank: bool = True
    nul: int | None = None  # byte offset of the first NUL
    sha256: str = ""
    size: int = 0  # bytes of the file


class _Undecodable(Exception):
    """A file's bytes at ``offset`` do not decode: ``byte`` (as ``repr``) and the codec's ``reason``."""

    def __init__(self, offset: int, byte: bytes, reason: str) -> None:
        super().__init__(offset, byte, reason)
        self.offset, self.byte, self.reason = offset, byte, reason


def _survey(file: Path, fallback: str | None) -> _Scan:
    """How ``file`` is decoded: by its byte-order mark, else as UTF-8, else as ``fallback``.

    An error names the file and byte offset when none of these decode it, or when it holds
    a NUL byte (binary), and says what to do.
    """
    with open(file, "rb") as f:
        head = f.read(4)
    for bom, codec, name in BOMS:
        if head.startswith(bom):
            try:
                scan = _scan(file, codec, len(bom))
            except _Undecodable as err:
                raise ValueError(
                    f"{file} starts with a {name.upper()} byte-order mark but is not {name.upper()} "
                    f"text: byte offset {err.offset} holds {err.byte!r} ({err.reason}). "
                    "Re-save it as text, or leave it out of dataset.path"
                ) from None
            scan.name = f"{name} (BOM)"
            return _refuse_nul(file, scan)
    utf8_nul = None  # where a file that is valid UTF-8 holds a NUL (UTF-16 without a mark, or binary)
    try:
        scan = _scan(file, "utf-8", 0)
    except _Undecodable as err:
        if fallback is None:
            raise ValueError(
                f"{file} is neither UTF-8 nor marked by a byte-order mark: byte offset {err.offset} "
                f"holds {err.byte!r} ({err.reason}). If it is text in a "
                "legacy encoding, name that encoding as the fallback, for example "
                "dataset.encoding=latin-1 (or cp1252, shift_jis...): files that are UTF-8 or start "
                "with a byte-order mark are still read as such, only the others use it. If it "
                "is a binary file, leave it out of dataset.path"
            ) from None
    else:
        scan.name = "utf-8"
        if fallback is None or scan.nul is None:
            return _refuse_nul(file, scan)
        utf8_nul = scan.nul
    try:
        scan = _scan(file, fallback, 0)
    except _Undecodable as err:
        if utf8_nul is not None:
            _refuse_nul(file, _Scan("utf-8", 0, nul=utf8_nul))  # binary: say so
        raise ValueError(
            f"{file} is neither UTF-8 nor {fallback} text (dataset.encoding): byte offset "
            f"{err.offset} holds {err.byte!r} ({err.reason}). Set "
            "dataset.encoding to the encoding of the files that are not UTF-8, or leave this "
            "one out of dataset.path"
        ) from None
    scan.name = fallback
    return _refuse_nul(file, scan)


def _scan(file: Path, codec: str, skip: int) -> _Scan:
    """Decode ``file`` (after ``skip`` bytes) as ``codec`` :data:`CHUNK_BYTES` at a time, keeping nothing.

    Raises :class:`_Undecodable` at the first byte that does not decode.
    """
    scan = _Scan(codec, skip)
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    digest = hashlib.sha256()
    consumed = skip  # bytes decoded so far; those the decoder still holds are not counted
    with open(file, "rb") as f:
        digest.update(f.read(skip))
        while True:
            data = f.read(CHUNK_BYTES)
            digest.update(data)
            held = decoder.getstate()[0]
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:  # err.start counts from the first byte held
                raise _Undecodable(consumed + err.start, err.object[err.start : err.start + 1],
                                   err.reason) from None
            nul = text.find("\x00") if scan.nul is None else -1
            if nul >= 0:
                scan.nul = consumed + len(text[:nul].encode(codec))
            scan.chars += len(text)
            scan.blank = scan.blank and (not text or text.isspace())
            consumed += len(held) + len(data) - len(decoder.getstate()[0])
            if not data:
                break
    scan.sha256 = digest.hexdigest()
    scan.size = consumed
    return scan


def _memo_path(file: Path, memo: Path) -> Path:
    return memo / f"{hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:32]}.json"


def _identity(file: Path) -> list[int]:
    st = file.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _recalled(file: Path, fallback: str | None, memo: Path | None) -> _Scan | None:
    """What an earlier reading of ``file`` found, if it has not changed since; else None."""
    if memo is None:
        return None
    try:
        kept = json.loads(_memo_path(file, memo).read_text())
        if kept["identity"] == _identity(file) and kept["fallback"] == fallback:
            return _Scan(**kept["scan"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no memo, or not one of ours: read the file
    return None


def _memoise(file: Path, fallback: str | None, memo: Path | None, scan: _Scan) -> None:
    identity = _identity(file)
    if memo is None or time.time_ns() - identity[1] < 2_000_000_000:  # may still be being written
        return
    try:
        memo.mkdir(parents=True, exist_ok=True)
        record = {"identity": identity, "fallback": fallback, "scan": dataclasses.asdict(scan)}
        write_atomic(_memo_path(file, memo), json.dumps(record))
    except OSError as err:  # only costs the next run a reading of the file
        log.debug("cannot memoise %s in %s: %s", file, memo, err)


def _decoded(file: Path, codec: str, skip: int) -> Iterator[str]:
    """The text of ``file`` in pieces, decoded as :func:`_survey` chose."""
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    with open(file, "rb") as f:
        f.seek(skip)
        while True:
            data = f.read(CHUNK_BYTES)
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError:
                raise ValueError(f"{file} changed while it was being read (it no longer decodes as "
                                 f"{codec}); run again once it is complete") from None
            if text:
                yield text
            if not data:
                return


def _refuse_nul(file: Path, scan: _Scan) -> _Scan:
    if scan.nul is not None:
        raise ValueError(
            f"{file} looks binary: it holds a NUL byte at byte offset {scan.nul}. "
            "dataset.path must name text files only; leave this file out of it"
        )
    return scan


def _log_encodings(path: str, encodings: dict[Path, str]) -> None:
    """One line: how many files were read with which encoding, naming those that fell back."""
    counts: dict[str, list[Path]] = {}
    for file, encoding in encodings.items():
        counts.setdefault(encoding, []).append(file)
    order = ["utf-8", "utf-8 (BOM)", "utf-16 (BOM)", "utf-32 (BOM)"]
    parts = [", ".join(f"{len(counts[e])} {e}" for e in order if e in counts)]
    for encoding, files in counts.items():
        if encoding not in order:
            shown = ", ".join(_shown(f, path) for f in files[:SHOWN_FILES])
            more = f" and {len(files) - SHOWN_FILES} more" if len(files) > SHOWN_FILES else ""
            parts.append(f"{len(files)} {encoding} (the dataset.encoding fallback): {shown}{more}")
    summary = "; ".join(part for part in parts if part)
    log.info("text_files: read %d file(s) from %s: %s", len(encodings), path, summary)


def _shown(file: Path, path: str) -> str:
    root = Path(path).expanduser()
    return file.relative_to(root).as_posix() if root.is_dir() and file.is_relative_to(root) else str(file)
