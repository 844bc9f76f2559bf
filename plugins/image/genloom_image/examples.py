"""What every image dataset hands the trainer: encoded examples, held in memory.

A split is encoded once, when it is asked for, so a broken image is found before training
starts rather than halfway through an epoch, and an epoch costs no decoding. Examples are

* ``"image"``: what the encoder made of the image (``(C, R, R)`` pixels for ``pixels``);
* ``"label"``: the class index (long), for labelled data;
* ``"condition"``: what a conditional generator is steered by, according to
  ``dataset.condition``: the label again (``label``), or the caption encoded by the
  pipeline's condition encoder (``caption``); absent for ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from genloom.interfaces import Encoder
from genloom_blocks.captions import encode_captions
from torch import Tensor

CONDITIONS = ("none", "label", "caption")


class EncodedExamples(torch.utils.data.Dataset):
    """Examples ``{key: tensors[key][i]}`` from tensors that share their first dimension."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: values[index] for key, values in self.tensors.items()}


def check_condition(condition: str, *, captions: bool) -> None:
    """Reject a ``dataset.condition`` the dataset cannot provide."""
    offered = CONDITIONS if captions else ("none", "label")
    if condition not in offered:
        raise ValueError(f"dataset.condition must be one of {', '.join(offered)}; got {condition!r}")


def check_condition_encoder(condition: str, condition_encoder: Encoder | None) -> None:
    """Captions need a condition encoder; say so before any image is decoded."""
    if condition == "caption" and condition_encoder is None:
        raise ValueError(
            "dataset.condition=caption needs a condition encoder to encode the captions: "
            "add condition_encoder=caption_words (pipeline=shapes does)"
        )


def make_examples(
    images: Sequence[Tensor],
    labels: Sequence[int | None],
    captions: Sequence[str | None],
    *,
    condition: str,
    condition_encoder: Encoder | None,
) -> EncodedExamples:
    """Examples from encoded images and their labels and captions (see the module docstring).

    Unlabelled data gives ``None`` labels (and no ``"label"`` key); data without captions
    gives ``None`` captions.
    """
    check_condition_encoder(condition, condition_encoder)
    tensors = {"image": torch.stack(list(images))}
    if all(label is not None for label in labels):
        tensors["label"] = torch.tensor(labels, dtype=torch.long)
    if condition == "label":
        tensors["condition"] = tensors["label"]
    elif condition == "caption":
        tensors["condition"] = encode_captions(condition_encoder, captions)
    return EncodedExamples(tensors)
