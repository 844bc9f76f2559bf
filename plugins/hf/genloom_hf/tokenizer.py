"""A local Hugging Face tokenizer (``tokenizer.json``) as a genloom encoder and decoder.

Only the `tokenizers` library is needed (no ``transformers``): the file is JSON, safe to
load. The text datasets (``pydoc``, ``text_files``) encode their corpus with it unchanged.
Special tokens are added as the tokenizer's own post-processor says (a Llama tokenizer
puts ``<s>`` first, GPT-2's adds nothing), as ``transformers`` does by default.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from genloom_text.tokenizer import write_texts
from tokenizers import Tokenizer, decoders
from tokenizers.decoders import DecodeStream
from torch import Tensor

from genloom_hf.chat import ChatTemplate
from genloom_hf.directory import tokenizer_file

log = logging.getLogger(__name__)
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # a SentencePiece byte-fallback token


def hf_tokenizer(
    *, path: str, add_special_tokens: bool = True, chat_template: str | None = None
) -> HFTokenizer:
    """The ``hf_tokenizer`` encoder: an :class:`HFChatTokenizer` when the directory has a chat template.

    Args:
        path: a local directory holding ``tokenizer.json`` (usually the model's own).
        add_special_tokens: add what the tokenizer's post-processor adds (``<s>`` first for
            Llama); false encodes the text alone.
        chat_template: the name of one of the directory's chat templates
            (``additional_chat_templates/NAME.jinja``); null takes its default one, if any.
    """
    directory = tokenizer_file(path, key="encoder.path").parent
    try:
        template = ChatTemplate.find(directory, chat_template)
    except ValueError as err:
        if chat_template is not None:  # asked for by name: its absence or breakage is the answer
            raise
        # Only chat needs the default template: a fine-tune and completions go on, told why.
        log.warning("%s; the model is served without /v1/chat/completions", err)
        template = None
    if template is None:
        return HFTokenizer(path=path, add_special_tokens=add_special_tokens)
    return HFChatTokenizer(path=path, add_special_tokens=add_special_tokens, template=template)


class HFTokenizer:
    """Encoder: a string -> the tokenizer's ids, a ``LongTensor`` ``(T,)`` (see :func:`hf_tokenizer`)."""

    def __init__(self, *, path: str, add_special_tokens: bool = True) -> None:
        self.path = str(path)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file(path, key="encoder.path")))
        self.add_special_tokens = add_special_tokens
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)

    def fingerprint(self) -> str:
        """:class:`genloom.interfaces.Fingerprinted`: the sha256 of the tokenizer and its options."""
        state = self.tokenizer.to_str() + f"\nadd_special_tokens={self.add_special_tokens}"
        return hashlib.sha256(state.encode()).hexdigest()

    def encode(self, text: str) -> Tensor:
        if not isinstance(text, str):
            raise TypeError(f"hf_tokenizer encodes str, got {type(text).__name__}")
        ids = self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens).ids
        return torch.tensor(ids, dtype=torch.long)  # (T,)

    def token_bytes(self) -> Tensor:
        """``(vocab_size,)`` int64: the UTF-8 bytes each id decodes to (0 for special tokens).

        :class:`genloom.interfaces.TokenBytes`: the text datasets then count the bytes each
        window covers, so the generator reports bits per byte, comparable across tokenizers.
        A byte-level BPE's token is one symbol per byte; a SentencePiece-style token counts
        ``<0xNN>`` as one byte and ``▁`` as a space.
        """
        special = {i for i, token in self.tokenizer.get_added_tokens_decoder().items() if token.special}
        byte_level = isinstance(self.tokenizer.decoder, decoders.ByteLevel)
        lengths = []
        for i in range(self.vocab_size):
            token = self.tokenizer.id_to_token(i)
            if i in special or token is None:
                lengths.append(0)
            elif byte_level:  # one symbol per byte (GPT-2's table)
                lengths.append(len(token))
            elif BYTE_TOKEN.fullmatch(token):
                lengths.append(1)
            else:
                lengths.append(len(token.replace("\u2581", " ").encode("utf-8")))
        return torch.tensor(lengths, dtype=torch.long)


class HFChatTokenizer(HFTokenizer):
    """An :class:`HFTokenizer` whose directory has a chat template: a ``genloom.interfaces.ChatEncoder``,
    so ``genloom serve`` offers ``/v1/chat/completions`` for its model."""

    def __init__(self, *, path: str, add_special_tokens: bool, template: ChatTemplate) -> None:
        super().__init__(path=path, add_special_tokens=add_special_tokens)
        self.template = template

    def encode_chat(self, messages: Sequence[Mapping[str, str]]) -> Tensor:
        """The conversation rendered with the assistant's turn opened, as ids ``(T,)``.

        The template writes every special token itself (``bos_token``...), so the text is
        encoded without the post-processor's, as ``transformers``' ``apply_chat_template`` does.
        """
        return self.template.encode(self.tokenizer, messages)


class HFTokenizerDecoder:
    """Decoder: the tokenizer's ids -> text; writes ``.txt`` samples and streams as ids arrive.

    Negative ids are padding (a row that already stopped) and are skipped; special tokens are
    left out of the text (``skip_special_tokens``). Streaming goes through the tokenizer's
    own incremental decoder (``tokenizers.decoders.DecodeStream``), which holds back bytes of
    a character split across tokens and the leading space a word's token carries until the
    text they make is settled, so the streamed pieces join into exactly :meth:`decode`'s text.
    """

    media_type = "text"

    def __init__(self, *, path: str) -> None:
        self.path = str(path)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file(path, key="decoder.path")))
        # genloom.interfaces.BoundedDecoder: the ids this tokenizer decodes.
        self.input_range = (0, self.tokenizer.get_vocab_size(with_added_tokens=True) - 1)

    def decode(self, tokens: Tensor) -> str:
        return self.tokenizer.decode(self._ids(tokens), skip_special_tokens=True)

    def write(self, media: Sequence[str], directory: Path) -> list[Path]:
        """Write ``sample_000.txt``, ... and a ``samples.md`` gallery holding them all."""
        return write_texts(media, directory)

    def incremental(self) -> Callable[[Tensor], str]:
        """A function that takes the next ids of one sample and returns the text they complete."""
        stream = DecodeStream(skip_special_tokens=True)

        def decode_chunk(tokens: Tensor) -> str:
            pieces = (stream.step(self.tokenizer, i) for i in self._ids(tokens))
            return "".join(piece for piece in pieces if piece is not None)

        return decode_chunk

    def _ids(self, tokens: Tensor) -> list[int]:
        ids = [i for i in tokens.reshape(-1).tolist() if i >= 0]
        high = self.input_range[1]
        if ids and max(ids) > high:
            raise ValueError(
                f"token id {max(ids)} is outside the tokenizer in {self.path} (ids 0-{high}); was the "
                "generator trained with another tokenizer? Give decoder.path the model's own directory"
            )
        return ids
