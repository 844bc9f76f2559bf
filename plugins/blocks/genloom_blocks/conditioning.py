"""Conditioning layers: a label or a caption steers a convolutional network through FiLM.

* :class:`ConditionEmbedding`: a condition -> one vector ``(B, dim)``: a label's
  embedding, the mean of a caption's word embeddings (the ids of
  :class:`genloom_blocks.captions.CaptionWords`), or a learned projection of a caption's
  sentence embedding (a float vector from a pretrained text encoder such as genloom-hf's
  ``hf_sentence``), through a small MLP. "No condition" has an embedding of its own, so a
  model trained with condition dropout also samples without.
* :class:`ConvNorm`, :class:`Down`, :class:`Up`: conv -> GroupNorm -> FiLM -> SiLU, and the
  residual halving and doubling blocks built from it, over 1-D (``dims=1``: ``(B, C, T)``)
  or 2-D (``dims=2``: ``(B, C, H, W)``) feature maps.
* :class:`ConditionIds`: the checks of the condition a generator is given (label ids, word
  ids or a caption embedding), in training (from the batch, some dropped) and in sampling
  (from ``label=`` or ``prompt=``), with messages that name the keys to set.

A caption is word ids ``(B, W)`` (int64) when ``caption_embedding_dim`` is 0, and a float
vector ``(B, caption_embedding_dim)`` otherwise; the dtype tells the two apart, so a
pipeline that pairs a condition encoder with a generator built for the other kind fails at
its first batch with a message saying which keys to change.

The attribute names of the modules here are parameter names in the checkpoints of the
models built from them (``embed.table.weight``, ``stages.0.block.film.weight``): renaming
one breaks every checkpoint saved before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONDITIONS = ("none", "label", "caption")


def check_condition(condition: str) -> str:
    """``condition`` if it is one of :data:`CONDITIONS`; the error names ``generator.condition``."""
    if condition not in CONDITIONS:
        raise ValueError(f"generator.condition must be one of {', '.join(CONDITIONS)}; got {condition!r}")
    return condition


class ConditionEmbedding(nn.Module):
    """A condition -> a vector: a label's embedding, the mean of a caption's word embeddings,
    or a projection of a caption's sentence embedding.

    "No condition" has its own embedding: label index ``num_classes``, or a caption of
    padding only (an all-zero mean, then the MLP's bias), or an all-zero sentence embedding
    (the projection's bias, then the MLP).
    """

    def __init__(
        self, condition: str, num_classes: int, caption_buckets: int, dim: int, caption_embedding_dim: int = 0
    ) -> None:
        super().__init__()
        if condition == "label":
            self.table: nn.Module = nn.Embedding(num_classes + 1, dim)
        elif caption_embedding_dim:
            self.table = nn.Linear(caption_embedding_dim, dim)
            # A sentence embedding is L2-normalised: its entries are ~1/sqrt(D) (0.05 for
            # MiniLM's 384). nn.Linear's default init (weights ~U(+-1/sqrt(D))) would map it
            # to entries ~0.03, thirty times smaller than the N(0, 1) rows the label and word
            # tables start from, and the MLP's biases would drown the caption. Weights N(0, 1)
            # map a unit vector to entries of variance |x|^2 = 1, the tables' scale.
            nn.init.normal_(self.table.weight)
            nn.init.zeros_(self.table.bias)
        else:
            self.table = nn.EmbeddingBag(caption_buckets + 1, dim, mode="mean", padding_idx=0)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, condition: Tensor | None, size: int) -> Tensor:
        """``(size, dim)`` from labels ``(size,)``, word ids ``(size, W)`` or caption embeddings
        ``(size, D)``; None is "no condition"."""
        if condition is None:
            device = self.mlp[0].weight.device
            if isinstance(self.table, nn.Embedding):
                condition = torch.full((size,), self.table.num_embeddings - 1, device=device)
            elif isinstance(self.table, nn.Linear):
                condition = torch.zeros((size, self.table.in_features), device=device)
            else:
                condition = torch.zeros((size, 1), dtype=torch.long, device=device)
        return self.mlp(self.table(condition))


def condition_embedding(
    condition: str, num_classes: int, caption_buckets: int, dim: int, caption_embedding_dim: int = 0
) -> ConditionEmbedding | None:
    """The embedding a ``condition`` needs (None for ``none``); sizes checked as ``generator.*`` keys."""
    if check_condition(condition) == "none":
        return None
    sizes = {"num_classes": num_classes, "caption_buckets": caption_buckets, "condition_dim": dim}
    for key, value in sizes.items():
        if value < 1:
            raise ValueError(f"generator.{key} must be at least 1, got {value}")
    check_caption_embedding_dim(caption_embedding_dim)
    return ConditionEmbedding(condition, num_classes, caption_buckets, dim, caption_embedding_dim)


def check_caption_embedding_dim(value: int) -> int:
    """``generator.caption_embedding_dim``: 0 (word ids) or a sentence embedding's width."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            "generator.caption_embedding_dim must be 0 (captions as word ids, condition_encoder="
            f"caption_words) or the width of the condition encoder's sentence embedding (384 for "
            f"all-MiniLM-L6-v2), got {value!r}"
        )
    return value


def embed(embedding: ConditionEmbedding | None, condition: Tensor | None, size: int) -> Tensor | None:
    """The condition vector ``(size, dim)``, or None for an unconditioned model (``embedding`` None)."""
    return None if embedding is None else embedding(condition, size)


class ConvNorm(nn.Module):
    """conv (or transposed conv) -> GroupNorm -> FiLM (scale and shift from the condition) -> SiLU.

    Args:
        width_in, width_out: channels in and out.
        condition_dim: width of the condition vector; 0 for no FiLM (an unconditioned model).
        kernel, stride: of the convolution; padding keeps ``size / stride``.
        transposed: a transposed convolution (``size * stride``).
        dims: 1 for ``(B, C, T)`` feature maps, 2 for ``(B, C, H, W)``.
    """

    def __init__(
        self,
        width_in: int,
        width_out: int,
        condition_dim: int,
        kernel: int = 3,
        stride: int = 1,
        transposed: bool = False,
        dims: int = 2,
    ) -> None:
        super().__init__()
        conv = _convolution(dims, transposed)
        self.conv = conv(width_in, width_out, kernel, stride=stride, padding=(kernel - 1) // 2)
        self.norm = nn.GroupNorm(math.gcd(8, width_out), width_out)
        self.film = nn.Linear(condition_dim, 2 * width_out) if condition_dim else None
        if self.film is not None:  # start as the identity: the condition's effect is learned
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.dims = dims

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        h = self.norm(self.conv(x))
        if self.film is not None and c is not None:
            film = self.film(c).view(len(c), -1, *(1,) * self.dims)  # (B, 2 * width_out, 1[, 1])
            scale, shift = film.chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return F.silu(h)


class Down(nn.Module):
    """Halve the resolution (strided conv), then a residual block; both FiLM-conditioned."""

    def __init__(self, width_in: int, width_out: int, condition_dim: int, dims: int = 2) -> None:
        super().__init__()
        self.resample = ConvNorm(width_in, width_out, condition_dim, kernel=4, stride=2, dims=dims)
        self.block = ConvNorm(width_out, width_out, condition_dim, dims=dims)

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        h = self.resample(x, c)
        return h + self.block(h, c)


class Up(nn.Module):
    """A residual block, then double the resolution (transposed conv); both FiLM-conditioned.

    A kernel of 4 at stride 2 covers every output position equally often, which avoids the
    checkerboard of odd kernels; on a CPU it is also several times faster than nearest
    upsampling followed by a conv.
    """

    def __init__(self, width_in: int, width_out: int, condition_dim: int, dims: int = 2) -> None:
        super().__init__()
        self.block = ConvNorm(width_in, width_in, condition_dim, dims=dims)
        self.resample = ConvNorm(
            width_in, width_out, condition_dim, kernel=4, stride=2, transposed=True, dims=dims
        )

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        return self.resample(x + self.block(x, c), c)


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """The channels of a stack of :class:`Down` (or :class:`Up`) blocks, one per entry, checked."""
    widths = tuple(widths)
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"generator.widths must be a non-empty list of positive widths, got {list(widths)}")
    return widths


def _convolution(dims: int, transposed: bool) -> type[nn.Module]:
    layers = {1: (nn.Conv1d, nn.ConvTranspose1d), 2: (nn.Conv2d, nn.ConvTranspose2d)}
    if dims not in layers:
        raise ValueError(f"dims={dims!r}: the conditioning blocks take 1-D or 2-D feature maps (dims=1 or 2)")
    return layers[dims][transposed]


class ConditionIds:
    """The condition a conditioned generator is given: checked, and in training some dropped.

    Args:
        condition: ``none``, ``label`` (ids ``(B,)``) or ``caption`` (word ids ``(B, W)``, or
            sentence embeddings ``(B, caption_embedding_dim)``).
        num_classes: labels are ``0 .. num_classes - 1``; ``num_classes`` is "no condition".
        caption_buckets: word ids are ``0 .. caption_buckets``; 0 is padding.
        caption_embedding_dim: 0 for captions as word ids; else the width of the float
            caption embeddings (all zeros is "no condition").
        dropout: probability of training an example without its condition.
        dataset_conditions: the ``dataset.condition`` values that give each kind of ids, for
            messages (the audio datasets give labels for ``pitch``, ``timbre`` and ``label``).
        classes_hint: what ``num_classes`` is for this model's data, said when the data
            holds a label past it (``" (pitches: high - low + 1)"``).
    """

    def __init__(
        self,
        condition: str,
        *,
        num_classes: int,
        caption_buckets: int,
        dropout: float,
        caption_embedding_dim: int = 0,
        dataset_conditions: Mapping[str, Sequence[str]] | None = None,
        classes_hint: str = "",
    ) -> None:
        if not 0 <= dropout < 1:
            raise ValueError(f"generator.condition_dropout must lie in [0, 1), got {dropout}")
        self.condition = check_condition(condition)
        self.num_classes = num_classes
        self.caption_buckets = caption_buckets
        self.caption_embedding_dim = check_caption_embedding_dim(caption_embedding_dim)
        self.dropout = dropout
        self.dataset_conditions = {"label": ("label",), "caption": ("caption",), **(dataset_conditions or {})}
        self.classes_hint = classes_hint
        self._labels_checked = False  # see batch()

    @property
    def label_classes(self) -> int | None:
        """``num_classes`` if conditioned on labels, else None: a generator's ``num_condition_classes``."""
        return self.num_classes if self.condition == "label" else None

    def batch(self, batch: Mapping[str, Tensor], size: int, *, train: bool) -> Tensor | None:
        """``batch["condition"]``, checked; with ``train``, some replaced by "no condition" (``dropout``)."""
        if self.condition == "none":
            return None
        ids = batch.get("condition")
        first, *others = self.dataset_conditions[self.condition]
        fix = f"set dataset.condition={first}" + (f" (or {', '.join(others)})" if others else "")
        if ids is None:
            raise ValueError(f"generator.condition={self.condition} but the batch has no 'condition'; {fix}")
        if ids.dim() != (1 if self.condition == "label" else 2):
            raise ValueError(
                f"generator.condition={self.condition} but the batch's condition has shape "
                f"{tuple(ids.shape)}; {fix}"
            )
        if self.condition == "caption":
            self.check_caption_kind(ids, "the dataset's captions, encoded by the condition encoder, are")
        if self.condition == "label" and not self._labels_checked:
            # Once: an out-of-range label would otherwise surface as an opaque index error,
            # and checking every batch would cost a device sync per step.
            self.check_labels(
                ids, "the data holds label {}, which",
                f"Set generator.num_classes to the dataset's number of classes{self.classes_hint}",
            )
            self._labels_checked = True
        if train and self.dropout > 0:  # ids of "no condition"
            drop = torch.rand(size, device=ids.device) < self.dropout
            if self.condition == "label":
                ids = torch.where(drop, self.num_classes, ids)
            else:
                ids = ids.masked_fill(drop[:, None], 0)
        return ids

    def sampling(self, condition: Tensor | None, n: int, device: torch.device) -> Tensor | None:
        """Ids for ``n`` samples from ``label=`` or an encoded ``prompt=``; None is "no condition"."""
        if self.condition == "none":
            if condition is not None:
                raise ValueError(
                    "this model was trained without a condition (generator.condition=none); "
                    "sample it without prompt= or label="
                )
            return None
        if condition is None:
            return None
        if self.condition == "caption" and condition.dim() > 0:
            self.check_caption_kind(condition, "the prompt, encoded by the condition encoder, is")
            if self.caption_embedding_dim:
                condition = condition.to(device=device, dtype=torch.float32)
                return condition.expand(n, -1) if condition.dim() == 1 else condition
        if condition.is_floating_point():
            raise ValueError(f"condition must hold integer ids, got dtype {condition.dtype}")
        condition = condition.to(device=device, dtype=torch.long)
        if self.condition == "label":
            if condition.dim() > 1 or (condition.dim() == 1 and len(condition) != n):
                raise ValueError(
                    "this model is conditioned on labels (generator.condition=label): sample it "
                    f"with label=N, 0 <= N < {self.num_classes}, not a prompt"
                )
            self.check_labels(
                condition, "label={}", "The model was trained with these classes: sample it with one of them"
            )
            return condition.expand(n)
        if condition.dim() == 0:
            raise ValueError(
                "this model is conditioned on captions (generator.condition=caption): sample it "
                'with prompt="a caption", not label='
            )
        if condition.numel() and (int(condition.min()) < 0 or int(condition.max()) > self.caption_buckets):
            raise ValueError(
                f"the caption's word ids lie outside 0..{self.caption_buckets} "
                "(generator.caption_buckets); encode prompts with the condition encoder the "
                "model was trained with"
            )
        return condition.expand(n, -1) if condition.dim() == 1 else condition

    def check_caption_kind(self, caption: Tensor, what: str) -> None:
        """Word ids for a word-id model, float vectors of the right width for an embedding model.

        ``caption`` is ``(W,)``/``(B, W)`` ids or ``(D,)``/``(B, D)`` embeddings; ``what``
        says where it came from.
        """
        width = caption.shape[-1]
        if self.caption_embedding_dim:
            if not caption.is_floating_point():
                raise ValueError(
                    f"{what} word ids (dtype {caption.dtype}), but this generator takes caption "
                    f"embeddings of {self.caption_embedding_dim} values (generator.caption_embedding_dim"
                    f"={self.caption_embedding_dim}): use a sentence encoder (condition_encoder="
                    "hf_sentence, pipeline=shapes_minilm does), or set generator.caption_embedding_dim=0 "
                    "for word ids"
                )
            if width != self.caption_embedding_dim:
                raise ValueError(
                    f"{what} embeddings of {width} values, but generator.caption_embedding_dim="
                    f"{self.caption_embedding_dim}: set generator.caption_embedding_dim={width}, the "
                    "width of the condition encoder's embedding"
                )
        elif caption.is_floating_point():
            raise ValueError(
                f"{what} float vectors of {width} values (a sentence embedding), but this generator "
                "takes word ids (generator.caption_embedding_dim=0, condition_encoder=caption_words): "
                f"set generator.caption_embedding_dim={width} to condition on the embedding"
            )

    def check_labels(self, labels: Tensor, what: str, advice: str) -> None:
        """Reject labels outside ``0..num_classes - 1``; ``what`` names the label: ``"label={}"``."""
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"{what.format(bad)} is not a class of this model: generator.num_classes="
                f"{self.num_classes} gives labels 0..{self.num_classes - 1}. {advice}"
            )
