"""A gated PixelCNN: greyscale images generated one pixel at a time, as K-way choices.

PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks" and "Conditional
Image Generation with PixelCNN Decoders") factorises an image into pixels in raster order,
``p(x) = prod_i p(x_i | x_<i)``, and predicts every factor at once with convolutions whose
kernels are masked so that the output at pixel ``i`` never sees pixels ``i, i+1, ...``.
Training is one forward pass (teacher forcing); sampling runs the network once per pixel.

Each pixel is one of ``levels`` intensities (the ``levels`` encoder quantises them), so
``p(x_i | x_<i)`` is a softmax over ``levels`` logits and the loss is the cross-entropy: the
negative log-likelihood in nats per pixel (``bits_per_pixel`` is the same in bits).

Masks. A single masked k x k convolution stacked on itself sees a triangle that misses
pixels above and to the right (the "blind spot"). The gated PixelCNN removes it with two
stacks: the *vertical* stack sees every pixel in the rows above (any column within reach),
the *horizontal* stack sees the pixels to the left in the current row, and the vertical
features feed the horizontal ones at every layer. The first layer uses mask "A" (the
centre row, or centre pixel, hidden: a pixel must not see itself); later layers use mask "B"
(the centre included: it now holds features of earlier pixels only).

Blocks are gated, ``tanh(f) * sigmoid(g)``, with a residual path on the horizontal stack.
A learned bias per position joins both stacks after the first layer: it tells each pixel
where it is (which a mask cannot leak: it holds no pixel values).
Conditioning on a class adds a learned per-block embedding of the label to ``f`` and ``g``
(a bias, the same at every pixel). In training a share ``condition_dropout`` of labels is
replaced by an extra "no label" id, so the same model also samples unconditionally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from genloom.interfaces import SampleSpec
from torch import Tensor, nn

CONDITIONS = ("none", "label")


def vertical_mask(kernel: int, *, include_centre: bool) -> Tensor:
    """``(kernel, kernel)``: the rows above the centre, plus the centre row for mask B."""
    mask = torch.zeros(kernel, kernel)
    mask[: kernel // 2 + (1 if include_centre else 0)] = 1
    return mask


def horizontal_mask(kernel: int, *, include_centre: bool) -> Tensor:
    """``(1, kernel)``: the pixels left of the centre, plus the centre for mask B."""
    mask = torch.zeros(1, kernel)
    mask[0, : kernel // 2 + (1 if include_centre else 0)] = 1
    return mask


class MaskedConv2d(nn.Module):
    """A same-size convolution whose kernel is multiplied by a fixed 0/1 mask on every call."""

    def __init__(self, in_channels: int, out_channels: int, mask: Tensor) -> None:
        super().__init__()
        rows, columns = mask.shape
        self.conv = nn.Conv2d(in_channels, out_channels, (rows, columns), padding=(rows // 2, columns // 2))
        self.register_buffer("mask", mask[None, None], persistent=False)  # rebuilt from the config

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.conv.weight * self.mask, self.conv.bias, padding=self.conv.padding)


class GatedBlock(nn.Module):
    """One gated layer of both stacks (mask B), optionally biased by a label embedding."""

    def __init__(self, channels: int, kernel: int, num_conditions: int) -> None:
        super().__init__()
        self.vertical = MaskedConv2d(channels, 2 * channels, vertical_mask(kernel, include_centre=True))
        self.horizontal = MaskedConv2d(channels, 2 * channels, horizontal_mask(kernel, include_centre=True))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        self.condition = nn.Embedding(num_conditions, 2 * channels) if num_conditions else None

    def forward(self, v: Tensor, h: Tensor, ids: Tensor | None) -> tuple[Tensor, Tensor]:
        v_features = self.vertical(v)  # (B, 2C, H, W), rows above only
        h_features = self.horizontal(h) + self.vertical_to_horizontal(v_features)
        if self.condition is not None and ids is not None:
            bias = self.condition(ids)[:, :, None, None]  # (B, 2C, 1, 1)
            v_features, h_features = v_features + bias, h_features + bias
        return gate(v_features), h + self.horizontal_out(gate(h_features))


def gate(features: Tensor) -> Tensor:
    f, g = features.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class PixelCNN(nn.Module):
    """Generator: a gated PixelCNN over ``(1, R, R)`` images of ``levels`` intensities.

    Batches hold ``"pixels"`` ``(B, 1, R, R)`` on the grid ``k / (levels - 1)`` and, when
    ``condition=label``, ``"condition"`` ``(B,)`` class indices.

    Args:
        resolution: side of the square images, in pixels.
        levels: intensities per pixel; the encoder's ``levels`` must match.
        channels: width of both stacks.
        layers: gated blocks after the first layer (each widens the view by one pixel).
        first_kernel: kernel size of the first (mask A) layer; odd.
        kernel: kernel size of the gated blocks; odd.
        condition: ``none`` or ``label``.
        num_classes: labels are ``0 .. num_classes - 1`` (``condition=label``).
        condition_dropout: share of training examples whose label is hidden.
    """

    def __init__(
        self,
        *,
        resolution: int = 16,
        levels: int = 4,
        channels: int = 48,
        layers: int = 6,
        first_kernel: int = 7,
        kernel: int = 3,
        condition: str = "label",
        num_classes: int = 10,
        condition_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if condition not in CONDITIONS:
            raise ValueError(f"generator.condition must be one of {', '.join(CONDITIONS)}; got {condition!r}")
        for key, value in (("first_kernel", first_kernel), ("kernel", kernel)):
            if value < 1 or value % 2 == 0:
                raise ValueError(f"generator.{key} must be an odd positive integer, got {value}")
        if levels < 2:
            raise ValueError(f"generator.levels must be at least 2, got {levels}")
        if not 0 <= condition_dropout < 1:
            raise ValueError(f"generator.condition_dropout must lie in [0, 1), got {condition_dropout}")
        self.resolution, self.levels = resolution, levels
        self.condition, self.num_classes = condition, num_classes
        self.condition_dropout = condition_dropout
        self._data_checked = False  # see loss
        self.sample_spec = SampleSpec(shape=(1, resolution, resolution), dtype=torch.float32)

        num_conditions = num_classes + 1 if condition == "label" else 0  # + the "no label" id
        # Mask A: the first layer reads the one-hot pixels and must not see the one it predicts.
        self.first_vertical = MaskedConv2d(
            levels, channels, vertical_mask(first_kernel, include_centre=False)
        )
        self.first_horizontal = MaskedConv2d(
            levels, channels, horizontal_mask(first_kernel, include_centre=False)
        )
        # Where a pixel is: without it, a model that has drawn nothing for more rows than it can
        # see cannot tell the middle of the image from the top, and leaves some images blank.
        self.position = nn.Parameter(torch.zeros(channels, resolution, resolution))
        self.blocks = nn.ModuleList(GatedBlock(channels, kernel, num_conditions) for _ in range(layers))
        self.head = nn.Sequential(
            nn.ELU(), nn.Conv2d(channels, channels, 1), nn.ELU(), nn.Conv2d(channels, levels, 1)
        )

    def logits(self, levels: Tensor, ids: Tensor | None) -> Tensor:
        """``(B, H, W)`` level indices -> ``(B, levels, H, W)``: each pixel's logits given those before."""
        return self.network(F.one_hot(levels, self.levels).permute(0, 3, 1, 2).float(), ids)

    def network(self, x: Tensor, ids: Tensor | None) -> Tensor:
        """``(B, levels, H, W)`` one-hot pixels -> ``(B, levels, H, W)`` logits."""
        position = self.position[:, : x.shape[2]]  # (C, H, W); sampling passes the rows so far
        v, h = self.first_vertical(x) + position, self.first_horizontal(x) + position
        for block in self.blocks:
            v, h = block(v, h, ids)
        return self.head(h)

    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Mean negative log-likelihood in nats per pixel, and the same in bits."""
        target = self._levels_of(batch["pixels"])
        ids = self._batch_condition(batch, len(target))
        self._data_checked = True  # the first batch was checked; later ones skip the host syncs
        nll = F.cross_entropy(self.logits(target, ids).float(), target)
        return {"loss": nll, "bits_per_pixel": nll / math.log(2)}

    @torch.no_grad()
    def generate(
        self,
        n: int,
        *,
        condition: Tensor | None = None,
        rng: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """Draw ``n`` images ``(n, 1, R, R)`` of floats in [0, 1], one pixel at a time.

        Args:
            condition: a class index, 0-dim or ``(n,)``, for ``condition=label``; None
                samples without a label.
            rng: the random generator every draw uses: the same seed, the same images.
            temperature: divides the logits; below 1 gives cleaner, less varied images.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        device = self.first_vertical.conv.weight.device
        ids = self._sampling_condition(condition, n, device)
        levels = torch.zeros(n, self.resolution, self.resolution, dtype=torch.long, device=device)
        for row in range(self.resolution):
            for column in range(self.resolution):
                # Masks look up and left only, so the rows below this one can be left out.
                logits = self.logits(levels[:, : row + 1], ids)[:, :, row, column]  # (n, K)
                probs = torch.softmax(logits.float() / temperature, dim=-1)
                levels[:, row, column] = torch.multinomial(probs, 1, generator=rng)[:, 0]
        return (levels.float() / (self.levels - 1))[:, None]

    def _levels_of(self, pixels: Tensor) -> Tensor:
        """``(B, 1, R, R)`` pixels on the level grid -> ``(B, R, R)`` level indices."""
        expected = (1, self.resolution, self.resolution)
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != expected:
            raise ValueError(
                f"the PixelCNN models pixels of shape (B, {', '.join(map(str, expected))}), got "
                f"{tuple(pixels.shape)}; generator.resolution must match dataset.resolution"
            )
        scaled = pixels.float() * (self.levels - 1)
        levels = scaled.round()
        if not self._data_checked and (scaled - levels).abs().max() > 1e-3:
            raise ValueError(
                f"pixels are not on generator.levels={self.levels} levels; set encoder.levels to match"
            )
        return levels[:, 0].long().clamp(0, self.levels - 1)

    def _batch_condition(self, batch: Mapping[str, Tensor], size: int) -> Tensor | None:
        """The batch's labels, a share of them hidden in training (``num_classes`` = no label)."""
        if self.condition == "none":
            return None
        ids = batch.get("condition")
        if ids is None:
            raise ValueError(
                "generator.condition=label but the batch has no 'condition'; set dataset.condition=label"
            )
        ids = ids.long()
        if not self._data_checked:
            self._check_labels(ids)
        if self.training and self.condition_dropout > 0:
            hidden = torch.rand(size, device=ids.device) < self.condition_dropout
            ids = ids.masked_fill(hidden, self.num_classes)
        return ids

    def _sampling_condition(self, condition: Tensor | None, n: int, device: torch.device) -> Tensor | None:
        if self.condition == "none":
            if condition is not None:
                raise ValueError(
                    "this PixelCNN was trained without labels (generator.condition=none); "
                    "sample it without label="
                )
            return None
        if condition is None:
            return torch.full((n,), self.num_classes, dtype=torch.long, device=device)
        one_per_example = condition.dim() == 1 and len(condition) == n
        if condition.is_floating_point() or not (condition.dim() == 0 or one_per_example):
            raise ValueError(
                f"this PixelCNN is conditioned on labels: give one class index or {n} of them, "
                f"got a {condition.dtype} tensor of shape {tuple(condition.shape)}"
            )
        ids = condition.to(device=device, dtype=torch.long).expand(n)
        self._check_labels(ids)
        return ids

    def _check_labels(self, ids: Tensor) -> None:
        wrong = ids[(ids < 0) | (ids >= self.num_classes)]
        if wrong.numel():
            raise ValueError(
                f"label {int(wrong[0])} is out of range: this PixelCNN knows labels "
                f"0..{self.num_classes - 1} (generator.num_classes)"
            )
