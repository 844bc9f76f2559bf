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
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from genloom.folders import describe_kind, glob_files, refuse_file_system_root, walk_files
from genloom.interfaces import Encoder, Fitting, Split, TokenBytes
from torch import Tensor

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
        return iter(self._splits.pieces()["train"])


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
        self, *, path: str, block_size: int, val_fraction: float = 0.1, encoding: str = "utf-8"
    ) -> None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(
                f"dataset.encoding {encoding!r} is not an encoding Python knows; "
                "use a codec name such as utf-8, latin-1 or utf-16"
            ) from None
        self.units_per_example = block_size
        self.files = _find_text_files(path)
        fallback = codecs.lookup(encoding).name
        self.encodings: dict[Path, str] = {}
        texts = []
        for file in self.files:
            text, self.encodings[file] = _read_text(file, None if fallback == "utf-8" else encoding)
            texts.append(text)
        _log_encodings(path, self.encodings)
        text = "\n\n".join(texts)
        if not text.strip():
            raise ValueError(f"dataset.path {path!r}: the {len(self.files)} file(s) it names hold no text")
        self._splits = TextSplits(
            text,
            source=f"dataset.path {path!r} ({len(self.files)} file(s))",
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
        return iter(self._splits.pieces()["train"])


class TextSplits:
    """A text cut into train and validation windows of token ids (see the module docstring).

    The text is encoded the first time a split is asked for and again only when the
    encoder changes, so asking for ``train`` then ``val`` encodes it once.
    """

    def __init__(self, text: str, *, source: str, block_size: int, val_fraction: float) -> None:
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
        self._encoded: tuple[Encoder, dict[str, TokenWindows]] | None = None

    def split(self, name: Split, encoder: Encoder) -> TokenWindows:
        if name not in ("train", "val"):
            raise ValueError(f"unknown split {name!r}; the splits are 'train' and 'val'")
        if self._encoded is None or self._encoded[0] is not encoder:
            if isinstance(encoder, Fitting):
                splits = self.cut_pieces(encoder)
            else:
                splits = self._cut(self._encode(encoder, self.text))
            if isinstance(encoder, TokenBytes):
                lengths = encoder.token_bytes()
                for windows in splits.values():
                    windows.token_bytes = lengths
            self._encoded = (encoder, splits)
        return self._encoded[1][name]

    def pieces(self) -> dict[str, list[str]]:
        """The text cut into pieces of characters, every k-th for validation (module docstring)."""
        n = len(self.text)
        every = round(1 / self.val_fraction)
        # Small texts get shorter pieces, so that validation still receives one in `every`.
        length = max(1, min(WINDOWS_PER_CHUNK * self.block_size * CHARS_PER_TOKEN, n // every))
        pieces: dict[str, list[str]] = {"train": [], "val": []}
        for i, start in enumerate(range(0, n, length)):
            pieces["val" if i % every == every - 1 else "train"].append(self.text[start : start + length])
        return pieces

    def cut_pieces(self, encoder: Encoder) -> dict[str, TokenWindows]:
        """Windows inside each piece of :meth:`pieces`, which a fitting encoder is cut by."""
        window = self.block_size + 1
        splits = {}
        for split, texts in self.pieces().items():
            streams, starts, offset = [], [], 0
            for text in texts:
                tokens = self._encode(encoder, text)
                starts.extend(range(offset, offset + len(tokens) - window + 1, self.block_size))
                streams.append(tokens)
                offset += len(tokens)
            stream = torch.cat(streams) if streams else torch.empty(0, dtype=torch.long)
            splits[split] = TokenWindows(stream, torch.tensor(starts, dtype=torch.long), self.block_size)
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

    def _cut(self, tokens: Tensor) -> dict[str, TokenWindows]:
        n, block = len(tokens), self.block_size
        window = block + 1
        every = round(1 / self.val_fraction)
        # Small corpora get shorter chunks, so that there are enough for validation to
        # receive one in `every`.
        windows_per_chunk = max(1, min(WINDOWS_PER_CHUNK, (n // every - 1) // block))
        chunk_len = windows_per_chunk * block + 1
        starts: dict[str, list[int]] = {"train": [], "val": []}
        for i, chunk_start in enumerate(range(0, n, chunk_len)):
            chunk_end = min(chunk_start + chunk_len, n)
            split = "val" if i % every == every - 1 else "train"
            starts[split].extend(range(chunk_start, chunk_end - window + 1, block))
        if not starts["train"] or not starts["val"]:
            needed = every * window
            hint = "add text"
            if n // every - 1 >= 2:
                hint += f" or lower generator.block_size (for example to {n // every - 1})"
            raise ValueError(
                f"{self.source} is too short for a context of {block} tokens: its {n} tokens "
                f"give {len(starts['train'])} training and {len(starts['val'])} validation "
                f"windows of {window} tokens (generator.block_size + 1). With "
                f"dataset.val_fraction={self.val_fraction} it needs at least {needed} tokens: "
                f"{hint}."
            )
        return {
            split: TokenWindows(tokens, torch.tensor(split_starts), block)
            for split, split_starts in starts.items()
        }


class TokenWindows(torch.utils.data.Dataset):
    """Examples ``{"tokens": LongTensor (block_size + 1,)}`` cut from one token stream.

    ``starts`` holds each window's offset in the stream; windows are views, not copies.
    With ``token_bytes`` set (the bytes each id stands for, ``(vocab_size,)``) an example also
    holds ``"bytes"``: how many bytes its targets (``tokens[1:]``) cover, int64 ``()``.
    """

    def __init__(self, tokens: Tensor, starts: Tensor, block_size: int) -> None:
        self.tokens = tokens
        self.starts = starts
        self.window = block_size + 1
        self.token_bytes: Tensor | None = None  # set by TextSplits for a TokenBytes encoder

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        start = int(self.starts[index])
        tokens = self.tokens[start : start + self.window]
        if self.token_bytes is None:
            return {"tokens": tokens}
        return {"tokens": tokens, "bytes": self.token_bytes[tokens[1:]].sum()}


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


def _read_text(file: Path, fallback: str | None) -> tuple[str, str]:
    """``(text, how it was decoded)``: by its byte-order mark, else as UTF-8, else as ``fallback``."""
    data = file.read_bytes()
    for bom, codec, name in BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(codec)
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{file} starts with a {name.upper()} byte-order mark but is not {name.upper()} "
                    f"text: byte offset {len(bom) + err.start} holds "
                    f"{data[len(bom) + err.start : len(bom) + err.start + 1]!r} ({err.reason}). "
                    "Re-save it as text, or leave it out of dataset.path"
                ) from err
            return _refuse_nul(file, text, codec, offset=len(bom)), f"{name} (BOM)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        if fallback is None:
            raise ValueError(
                f"{file} is neither UTF-8 nor marked by a byte-order mark: byte offset {err.start} "
                f"holds {data[err.start : err.start + 1]!r} ({err.reason}). If it is text in a "
                "legacy encoding, name that encoding as the fallback, for example "
                "dataset.encoding=latin-1 (or cp1252, shift_jis...): files that are UTF-8 or start "
                "with a byte-order mark are still read as such, only the others use it. If it "
                "is a binary file, leave it out of dataset.path"
            ) from err
        valid_utf8 = False
    else:
        if fallback is None or "\x00" not in text:
            return _refuse_nul(file, text, "utf-8"), "utf-8"
        valid_utf8 = True  # with NULs: UTF-16 without a mark, or binary
    try:
        text = data.decode(fallback)
    except UnicodeDecodeError as err:
        if valid_utf8:
            _refuse_nul(file, data.decode("utf-8"), "utf-8")  # binary: say so
        raise ValueError(
            f"{file} is neither UTF-8 nor {fallback} text (dataset.encoding): byte offset "
            f"{err.start} holds {data[err.start : err.start + 1]!r} ({err.reason}). Set "
            "dataset.encoding to the encoding of the files that are not UTF-8, or leave this "
            "one out of dataset.path"
        ) from err
    return _refuse_nul(file, text, fallback), fallback


def _refuse_nul(file: Path, text: str, encoding: str, offset: int = 0) -> str:
    nul = text.find("\x00")
    if nul >= 0:
        where = offset + len(text[:nul].encode(encoding))
        raise ValueError(
            f"{file} looks binary: it holds a NUL byte at byte offset {where}. "
            "dataset.path must name text files only; leave this file out of it"
        )
    return text


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
