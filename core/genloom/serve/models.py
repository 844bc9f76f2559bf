"""A served model: a checkpoint rebuilt by the sampler, and what the server may ask of it.

Everything here is modality-blind. A model's *media type* is its decoder's
(``decoder.media_type``); its files and their content types come from the decoder's own
``write``; its sampling options are the keyword-only options of its generator's
``generate``, checked by :meth:`genloom.sampler.Sampler.sampling_options`.
"""

from __future__ import annotations

import inspect
import mimetypes
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genloom import sampler
from genloom.interfaces import BatchedDecoding, ChatEncoder, StreamingDecoder
from genloom.plugins import PluginSet
from genloom.registry import RegistryError

# JSON types a sampling option may take, read from the annotation of its parameter.
# ``Tensor`` options (a stop sequence) are given as text and encoded by the sampler.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "Tensor": (str,),
}
mimetypes.add_type("audio/wav", ".wav")  # some systems say audio/x-wav


class BadRequest(ValueError):
    """The request cannot be served as given; the message says what to change."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


@dataclass(frozen=True)
class MediaFile:
    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class OptionSpec:
    name: str
    annotation: str
    default: Any

    def accepts(self, value: Any) -> bool:
        if value is None:
            return "None" in self.annotation or self.default is None
        kinds = [t for word, types in _JSON_TYPES.items() if word in self.annotation.split(" | ")
                 for t in types]
        if not kinds:
            return True  # an annotation we cannot read: the generator checks the value itself
        if isinstance(value, bool) and bool not in kinds:
            return False
        return isinstance(value, tuple(kinds))

    def as_dict(self) -> dict[str, Any]:
        default = self.default if isinstance(self.default, (int, float, str, bool, type(None))) else None
        return {"type": self.annotation, "default": default}


class ServedModel:
    """One checkpoint, loaded through :func:`genloom.sampler.load` (no pickle, no ``_target_``)."""

    def __init__(
        self, name: str, checkpoint_path: str | Path, plugins: PluginSet, device: str = "auto",
        *, use_ema: bool | None = None,
    ) -> None:
        self.name = name
        self.loaded = sampler.load(checkpoint_path, plugins, device, use_ema=use_ema)
        self.sampler = sampler.Sampler(self.loaded, hooks=plugins.manager.hook)
        self.generator = self.loaded.pipeline.generator
        self.decoder = self.loaded.pipeline.decoder
        self.device = self.loaded.device
        params = inspect.signature(self.generator.generate).parameters
        self.options = {
            n: OptionSpec(n, str(p.annotation), p.default)
            for n, p in params.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("condition", "rng")
        }

    @property
    def media_type(self) -> str:
        return str(self.decoder.media_type)

    @property
    def streams(self) -> bool:
        """Whether requests join a running batch token by token (continuous batching)."""
        return isinstance(self.generator, BatchedDecoding) and isinstance(self.decoder, StreamingDecoder)

    @property
    def chats(self) -> bool:
        """Whether ``/v1/chat/completions`` serves it: it streams text and its prompt encoder
        renders a conversation through a chat template."""
        return self.streams and isinstance(self.loaded.pipeline.prompt_encoder, ChatEncoder)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "object": "model",
            "owned_by": "genloom",
            "media_type": self.media_type,
            "generator": type(self.generator).__name__,
            "checkpoint": str(self.loaded.checkpoint.path),
            "step": self.loaded.checkpoint.step,
            "weights": self.loaded.weights,
            "streaming": self.streams,
            "chat": self.chats,
            "options": {name: spec.as_dict() for name, spec in self.options.items()},
        }

    def sampling_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The generator's own options, type-checked, encoded where the sampler encodes them."""
        for key, value in options.items():
            spec = self.options.get(key)
            if spec is not None and not spec.accepts(value):
                raise BadRequest(
                    f"option {key!r} of model {self.name!r} must be {spec.annotation}, got {value!r}",
                    param=key,
                )
        try:
            return self.sampler.sampling_options(options)
        except (RegistryError, ValueError) as err:
            unknown = [k for k in options if k not in self.options]
            raise BadRequest(f"model {self.name!r}: {err}", param=(unknown or [None])[0]) from None

    def condition(self, prompt: str | None, label: int | None) -> torch.Tensor | None:
        try:
            return self.sampler.condition(prompt, label)
        except ValueError as err:
            param = "label" if label is not None else "prompt"
            raise BadRequest(f"model {self.name!r}: {err}", param=param) from None

    def chat_condition(self, messages: Sequence[Mapping[str, str]]) -> torch.Tensor:
        """The prompt's token ids ``(T,)``: the conversation rendered with the assistant's turn open."""
        try:
            return self.loaded.pipeline.prompt_encoder.encode_chat(messages).to(self.device)
        except ValueError as err:
            raise BadRequest(f"model {self.name!r}: {err}", param="messages") from None

    def files(self, media: Sequence[Any]) -> tuple[list[MediaFile], list[MediaFile]]:
        """``(one file per item, gallery files)`` as the decoder writes them."""
        with tempfile.TemporaryDirectory(prefix="genloom-serve-") as tmp:
            paths = self.decoder.write(list(media), Path(tmp))
            written = [
                MediaFile(p.name, mimetypes.guess_type(p.name)[0] or "application/octet-stream",
                          p.read_bytes())
                for p in paths
            ]
        return written[: len(media)], written[len(media) :]
