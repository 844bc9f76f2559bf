"""What every audio dataset hands the trainer: encoded examples, held in memory.

A split is synthesised or read, resampled and encoded once, when it is asked for, so a
broken file is found before training starts and an epoch costs no signal processing.
Examples are

* ``"mel"``: what the encoder made of the clip (``(1, n_mels, frames)`` for ``log_mel``);
* ``"label"``: the class index (long): the pitch for ``synth_notes``, the subfolder for
  ``audio_folder`` with ``labels=true``;
* ``"timbre"``: the timbre index (``synth_notes``);
* ``"condition"``: what a conditional generator is steered by, by ``dataset.condition``:
  the pitch label (``pitch``, or ``label`` for folders), the timbre index (``timbre``),
  or the caption encoded by the pipeline's condition encoder (``caption``); absent for
  ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from genloom.interfaces import Encoder
from genloom_blocks.captions import encode_captions
from torch import Tensor


class EncodedExamples(torch.utils.data.Dataset):
    """Examples ``{key: tensors[key][i]}`` from tensors that share their first dimension."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: values[index] for key, values in self.tensors.items()}


def check_condition_encoder(condition: str, condition_encoder: Encoder | None) -> None:
    """Captions need a condition encoder; say so before any audio is made."""
    if condition == "caption" and condition_encoder is None:
        raise ValueError(
            "dataset.condition=caption needs a condition encoder to encode the captions: "
            "add condition_encoder=caption_words (pipeline=notes_caption does)"
        )


def make_examples(
    mels: Tensor,
    *,
    labels: Sequence[int] | None,
    timbres: Sequence[int] | None = None,
    captions: Sequence[str] | None = None,
    condition: str,
    condition_encoder: Encoder | None = None,
) -> EncodedExamples:
    """Examples from encoded clips ``(N, ...)`` and what is known about them (see the module docstring)."""
    tensors = {"mel": mels}
    if labels is not None:
        tensors["label"] = torch.tensor(list(labels), dtype=torch.long)
    if timbres is not None:
        tensors["timbre"] = torch.tensor(list(timbres), dtype=torch.long)
    if condition in ("pitch", "label"):
        tensors["condition"] = tensors["label"]
    elif condition == "timbre":
        tensors["condition"] = tensors["timbre"]
    elif condition == "caption":
        check_condition_encoder(condition, condition_encoder)
        tensors["condition"] = encode_captions(condition_encoder, captions)
    return EncodedExamples(tensors)


def encode_clips(encoder: Encoder, waveforms: Tensor) -> Tensor:
    """Encode clips ``(N, T)`` -> ``(N, ...)``, in one call when the encoder can (``log_mel`` can)."""
    encode_batch = getattr(encoder, "encode_batch", None)
    if encode_batch is not None:
        return encode_batch(waveforms)
    return torch.stack([encoder.encode(w) for w in waveforms])
