"""Your images: a folder searched recursively, optionally one subfolder per class.

Every file that is not hidden is tried: anything Pillow opens is an image (PNG, JPEG,
WebP, BMP, GIF (its first frame), TIFF...), whatever its name. Images are decoded and
encoded when the dataset is first split, so a corrupt file is found before training,
never halfway through an epoch. Files that fail (a README, a truncated PNG) are skipped
and counted in one warning, or with ``strict=true`` the first one is an error naming it.
Modes and sizes may be mixed: the encoder converts them (see :mod:`genloom_image.pixels`).

Split: images are taken in sorted order of their paths (within each class, with labels),
and every k-th goes to validation, k = round(1 / val_fraction). The split depends only on
the file names, never on chance.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from genloom.folders import count_classes, describe_classes, find_files, split_every
from genloom.interfaces import Encoder, Split
from PIL import Image
from torch import Tensor

from genloom_image.examples import EncodedExamples, make_examples

log = logging.getLogger(__name__)

SHOWN_FAILURES = 3  # files named in the warning about skipped files


class ImageFolder:
    """Images from ``path``, a folder searched recursively (hidden files and folders skipped).

    Args:
        path: the folder.
        labels: read each image's class from its top-level subfolder, the ImageFolder
            convention (``path/cat/1.png`` is class ``cat``); classes are numbered in
            sorted order of their names and logged with their numbers of files. Images
            directly in ``path`` are then skipped. A subfolder may be a symbolic link.
        strict: an unreadable file is an error instead of a skipped file.
        val_fraction: the share of images held out for validation.
        condition: what ``example["condition"]`` holds: ``none`` or ``label`` (needs
            ``labels: true``).

    Examples (batch keys): ``"image"``, the encoder's output (``pixels``: float32
    ``(C, R, R)`` in [0, 1]); with ``labels=true`` ``"label"``, int64 ``()`` in
    ``0 .. len(classes) - 1``; with ``condition=label`` ``"condition"``, the label again.
    """

    unit = "img"
    units_per_example = 1

    def __init__(
        self,
        *,
        path: str,
        labels: bool = False,
        strict: bool = False,
        val_fraction: float = 0.1,
        condition: str = "none",
    ) -> None:
        if condition not in ("none", "label"):
            raise ValueError(
                f"dataset.condition={condition} (which follows generator.condition) is not something "
                "image_folder provides: a folder has no captions, only classes from subfolders. "
                "Train your folder with pipeline=image_folder dataset.path=DIR (unconditional), "
                "adding dataset.labels=true generator.condition=label generator.num_classes=N to "
                "steer by class (docs/image.md)"
            )
        if condition == "label" and not labels:
            raise ValueError(
                "dataset.condition=label needs the class of each image: set dataset.labels=true "
                "and put the images of each class in its own subfolder of dataset.path"
            )
        if not 0 < val_fraction <= 0.5:
            raise ValueError(f"dataset.val_fraction must lie in (0, 0.5], got {val_fraction!r}")
        self.root = Path(path).expanduser()
        self.labels = labels
        self.strict = strict
        self.val_fraction = val_fraction
        self.every = round(1 / val_fraction)
        self.condition = condition
        self.files = find_files(self.root, what="images", hint="put images in it")
        counts = count_classes(self.files, self.root) if labels else {}
        self.classes: list[str] = list(counts)
        self.condition_classes = counts if condition == "label" else None  # see ConditionClasses
        if labels:
            if not self.classes:
                raise ValueError(
                    f"dataset.path {path!r} has no subfolders, so dataset.labels=true finds no "
                    "classes: put each class's images in a subfolder (path/cat/, path/dog/), "
                    "or set dataset.labels=false"
                )
            log.info("image_folder: %d classes in %s: %s", len(counts), self.root, describe_classes(counts))
        self._encoded: tuple[Encoder, Encoder | None, dict[str, EncodedExamples]] | None = None

    def split(
        self, name: Split, encoder: Encoder, condition_encoder: Encoder | None = None
    ) -> EncodedExamples:
        """The split's examples; the whole folder is decoded once per encoder."""
        if self._encoded is None or self._encoded[:2] != (encoder, condition_encoder):
            self._encoded = (encoder, condition_encoder, self._encode(encoder, condition_encoder))
        return self._encoded[2][name]

    def _encode(self, encoder: Encoder, condition_encoder: Encoder | None) -> dict[str, EncodedExamples]:
        start = time.perf_counter()
        images: list[tuple[int | None, Tensor]] = []  # (label, encoded image), in path order
        failures: list[tuple[Path, str]] = []
        outside = 0
        for file in self.files:
            label = None
            if self.labels:
                if file.parent == self.root:
                    outside += 1
                    continue
                label = self.classes.index(file.relative_to(self.root).parts[0])
            try:
                images.append((label, encoder.encode(_open(file))))
            except Exception as err:  # Pillow's decoders raise many kinds of error on bad data
                reason = f"{type(err).__name__}: {err}"
                if self.strict:
                    raise ValueError(
                        f"{file} is not a readable image ({reason}); remove it from dataset.path, "
                        "or set dataset.strict=false to skip such files with a warning"
                    ) from err
                failures.append((file, reason))
        if outside:
            log.warning(
                "%d file(s) directly in %s belong to no class and were left out "
                "(dataset.labels=true reads classes from subfolders)",
                outside,
                self.root,
            )
        if failures:
            shown = "; ".join(f"{f.relative_to(self.root)} ({why})" for f, why in failures[:SHOWN_FAILURES])
            more = f"; and {len(failures) - SHOWN_FAILURES} more" if len(failures) > SHOWN_FAILURES else ""
            log.warning(
                "skipped %d of %d files in %s that are not readable images: %s%s "
                "(dataset.strict=true makes this an error)",
                len(failures),
                len(self.files),
                self.root,
                shown,
                more,
            )
        if not images:
            raise ValueError(
                f"dataset.path {str(self.root)!r} holds no readable images: {len(self.files)} "
                f"file(s) found, {len(failures)} unreadable. Supported: anything Pillow opens "
                "(PNG, JPEG, WebP, BMP, GIF, TIFF...)"
            )
        examples = {
            name: make_examples(
                [pixels for _, pixels in members],
                [label for label, _ in members],
                [None] * len(members),
                condition=self.condition,
                condition_encoder=condition_encoder,
            )
            for name, members in self._split(images).items()
        }
        log.info(
            "image_folder: %d train / %d val images from %s in %.1f s",
            len(examples["train"]),
            len(examples["val"]),
            self.root,
            time.perf_counter() - start,
        )
        return examples

    def _split(self, items: list[tuple[int | None, Tensor]]) -> dict[str, list]:
        """Every k-th item of each class (in path order) to validation, the rest to training."""
        return split_every(items, every=self.every, group=lambda item: item[0], what="images",
                           root=self.root, val_fraction=self.val_fraction)


def _open(file: Path) -> Image.Image:
    """The image in ``file``, fully decoded (its first frame, for an animation)."""
    with Image.open(file) as image:
        image.load()
        return image.copy()
