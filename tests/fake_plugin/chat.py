"""A fake chat encoder for the tests of ``/v1/chat/completions``: UTF-8 bytes, ChatML turns.

It is a real :class:`genloom.interfaces.ChatEncoder` over the byte vocabulary of the text
plugin's Transformer, so the core's chat route is tested with a real decoding model and
without the Hugging Face plugin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def chatml(messages: Sequence[Mapping[str, str]]) -> str:
    """The conversation in ChatML, the assistant's turn opened: what :meth:`encode_chat` encodes."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


class ChatBytes:
    """Encoder: text -> UTF-8 bytes; a conversation -> its ChatML layout's bytes."""

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)  # (T,)

    def encode_chat(self, messages: Sequence[Mapping[str, str]]) -> torch.Tensor:
        if messages[-1]["role"] == "assistant":
            raise ValueError("the conversation ends with the assistant's message; end it with the user's")
        return self.encode(chatml(messages))
