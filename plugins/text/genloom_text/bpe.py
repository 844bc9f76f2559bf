"""A byte-level BPE trained on the training split with the ``tokenizers`` library.

Text is first seen as its UTF-8 bytes (ids 0-255 are the 256 bytes, in byte order, exactly
as the bytes encoder numbers them), then frequent pairs are merged into new ids 256, 257...
in the order they were learnt. Any string, whatever its characters, encodes and decodes back
to itself: there is no normaliser, no unknown token and no special token. Shorter sequences
than bytes give a Transformer of the same context more text to read, at the price of a larger
embedding table and a vocabulary to fit (:mod:`genloom.fitting` stores it in each checkpoint
as ``tokenizer.json``, the ``tokenizers`` library's own format).
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from genloom_text.tokenizer import ByteTokenizer, byte_symbols, write_texts

MIN_VOCAB = 256  # the bytes themselves: a BPE of 256 has learnt no merge
MAX_VOCAB = 1 << 20
MIN_FREQUENCY = 2  # a pair seen once is not worth an id


class BpeTokenizer:
    """Encoder: a string -> ids of a byte-level BPE fitted on the training split, ``(T,)`` int64.

    ``genloom train`` fits it (:meth:`fit`) before the splits are encoded; a checkpoint
    restores it (:meth:`load_fitted`). ``vocab_size`` is the most ids it learns: a corpus
    with fewer pairs worth merging (seen at least twice) gives a smaller vocabulary, which
    :attr:`vocab_size` then reports.
    """

    def __init__(self, *, vocab_size: int = 2048) -> None:
        whole = isinstance(vocab_size, int) and not isinstance(vocab_size, bool)
        if not whole or not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
            raise ValueError(
                f"encoder.vocab_size must be a whole number from {MIN_VOCAB} (the bytes alone) to "
                f"{MAX_VOCAB:,}, got {vocab_size!r}; 2048 suits a few MB of text"
            )
        self.vocab_size = vocab_size
        self._tokenizer = None  # a tokenizers.Tokenizer once fitted or loaded
        self._lengths: Tensor | None = None

    # -- genloom.interfaces.Fitting -----------------------------------------------------

    def fit(self, media: Iterable[str]) -> None:
        """Learn up to ``vocab_size - 256`` merges from ``media`` (deterministic).

        ``media`` is read once, one item at a time: the trainer keeps word counts, which
        grow with the vocabulary of the text rather than its length, so a corpus larger
        than memory can be fitted. A progress bar counts the characters read.
        """
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from tqdm.auto import tqdm

        read = {"chars": 0}

        def texts() -> Iterator[str]:
            with tqdm(desc="fit bpe", unit="char", unit_scale=True, delay=2, disable=None,
                      dynamic_ncols=True) as bar:
                for text in media:
                    if text:
                        read["chars"] += len(text)
                        bar.update(len(text))
                        yield text

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=self.vocab_size, min_frequency=MIN_FREQUENCY, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
        )
        tokenizer.train_from_iterator(texts(), trainer=trainer)
        if not read["chars"]:
            raise ValueError("encoder bpe has no training text to learn its vocabulary from")
        self.load_fitted(_bytes_first(tokenizer.to_str()))

    def fitted_state(self) -> str:
        """The tokenizer as the ``tokenizers`` library writes ``tokenizer.json``."""
        return self._fitted().to_str(pretty=True)

    def load_fitted(self, state: str) -> None:
        """Restore a :meth:`fitted_state`, refusing any tokenizer that would not be lossless."""
        from tokenizers import Tokenizer

        vocab = _check_state(state)
        try:
            tokenizer = Tokenizer.from_str(state)
        except Exception as err:  # noqa: BLE001 - the library raises plain Exception on bad files
            raise ValueError(f"the tokenizers library cannot read it: {err}") from None
        self._tokenizer = tokenizer
        self._lengths = torch.tensor([len(token) for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])])
        self.vocab_size = len(vocab)

    # -- genloom.interfaces.Encoder / TokenBytes ----------------------------------------

    def encode(self, text: str) -> Tensor:
        ByteTokenizer().encode(text)  # the same checks (a str, no lone surrogate)
        if not text:
            return torch.empty(0, dtype=torch.long)
        return torch.tensor(self._fitted().encode(text).ids, dtype=torch.long)  # (T,)

    def fingerprint(self) -> str:
        """:class:`genloom.interfaces.Fingerprinted`: the sha256 of the fitted ``tokenizer.json``."""
        return hashlib.sha256(self.fitted_state().encode()).hexdigest()

    def token_bytes(self) -> Tensor:
        """``(vocab_size,)`` int64: the UTF-8 bytes each id stands for."""
        self._fitted()
        return self._lengths

    def _fitted(self):  # noqa: ANN202 - tokenizers.Tokenizer, imported lazily
        if self._tokenizer is None:
            raise ValueError(
                "encoder bpe has not been fitted: `genloom train` fits it on the training split, "
                "and a checkpoint restores it from its tokenizer.json"
            )
        return self._tokenizer


class BpeDecoder:
    """Decoder: BPE ids -> text through the fitted vocabulary; writes and streams like ``bytes``.

    Negative ids (padding) are skipped; an id the vocabulary lacks (a generator with room
    for more ids than the corpus gave merges) and bytes that are not valid UTF-8 become U+FFFD.
    """

    media_type = "text"

    def __init__(self) -> None:
        self._pieces: list[bytes] | None = None

    def load_fitted(self, state: str) -> None:
        """Read the id -> bytes table from the encoder's fitted ``tokenizer.json``."""
        vocab = _check_state(state)
        symbol_byte = {s: b for b, s in enumerate(byte_symbols())}
        tokens = sorted(vocab, key=vocab.__getitem__)
        self._pieces = [bytes(symbol_byte[c] for c in token) for token in tokens]

    def decode(self, tokens: Tensor) -> str:
        return self._bytes(tokens).decode("utf-8", errors="replace")

    def write(self, media: Sequence[str], directory: Path) -> list[Path]:
        """Write ``sample_000.txt``, ... and a ``samples.md`` gallery holding them all."""
        return write_texts(media, directory)

    def incremental(self) -> Callable[[Tensor], str]:
        """A function that takes the next ids of one sample and returns the text they complete.

        A character whose bytes span several tokens (or chunks) is returned once whole.
        """
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda tokens: decoder.decode(self._bytes(tokens))

    def _bytes(self, tokens: Tensor) -> bytes:
        if self._pieces is None:
            raise ValueError("decoder bpe has no vocabulary: it reads the fitted encoder's tokenizer.json")
        unknown = "\ufffd".encode()
        pieces = self._pieces
        return b"".join(pieces[i] if i < len(pieces) else unknown
                        for i in tokens.reshape(-1).tolist() if i >= 0)


def _bytes_first(state: str) -> str:
    """``state`` renumbered so that ids 0-255 are the bytes in byte order, then the merges as learnt.

    The trainer numbers the initial alphabet by its symbols' code points, which scatters the
    bytes (a newline is not id 10). Merges name tokens by their strings, so renumbering the
    vocabulary changes nothing else, and the same corpus still gives the same file.
    """
    data = json.loads(state)
    vocab: dict[str, int] = data["model"]["vocab"]
    symbols = byte_symbols()
    known = set(symbols)
    learnt = sorted((t for t in vocab if t not in known), key=vocab.__getitem__)
    data["model"]["vocab"] = {token: i for i, token in enumerate([*symbols, *learnt])}
    return json.dumps(data, ensure_ascii=False)


def _check_state(state: str) -> dict[str, int]:
    """The vocabulary of a fitted state, checked to be the lossless byte-level BPE ``fit`` writes."""
    try:
        data = json.loads(state)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"it is not JSON: {err}") from None
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ValueError("it is not a BPE tokenizer (tokenizers' 'model' with type BPE and a vocab)")
    if data.get("normalizer") is not None or data.get("added_tokens"):
        raise ValueError("it has a normaliser or added tokens; encoder bpe is a plain byte-level BPE")
    pre = data.get("pre_tokenizer")
    if not isinstance(pre, dict) or pre.get("type") != "ByteLevel":
        raise ValueError("its pre-tokenizer is not ByteLevel; encoder bpe reads byte-level BPEs only")
    vocab = model["vocab"]
    symbols = byte_symbols()
    known = set(symbols)
    ids = sorted(i for i in vocab.values() if isinstance(i, int) and not isinstance(i, bool))
    if ids != list(range(len(vocab))):
        raise ValueError(f"its vocabulary's ids are not 0..{len(vocab) - 1}, each once")
    if any(vocab.get(s) != b for b, s in enumerate(symbols)):
        raise ValueError("its ids 0-255 are not the 256 bytes in byte order, as encoder bpe numbers them")
    strange = next((t for t in vocab if not t or not set(t) <= known), None)
    if strange is not None:
        raise ValueError(f"its token {strange[:40]!r} is not made of byte symbols")
    return vocab
