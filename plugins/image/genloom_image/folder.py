"""Your images: a folder searched recursively, optionally one subfolder per class.

Every file that is not hidden is tried: anything Pillow opens is an image (PNG, JPEG,
WebP, BMP, GIF (its first frame), TIFF...), whatever its name. Images are decoded and
encoded when the dataset is first split, so a corrupt file is found before training,
never halfway through an epoch. Files that fail (a README, a truncated PNG) are skipped
and counted in one warning, or with ``strict=true`` the first one is an error naming it.
Modes and sizes may be mixed: the encoder converts them (see :mod:`genloom_image.pixels`).

A folder larger than memory: with ``lazy=true`` the split keeps only the file list and
labels, and each image is decoded and encoded when the trainer asks for it (in its
DataLoader workers with ``trainer.num_workers > 0``), so memory does not grow with the
folder. Up front each file's header is read (fast: a README or a text file is skipped and
counted as above); with ``strict=true`` every file is decoded once as well, so a corrupt
one is still an error before training. A file that passes the header check but fails
to decode later (a truncated PNG, a file deleted mid-run) is warned about, naming it,
and the next readable image of the split takes its place
(:class:`genloom.folders.LazyExamples`), so a batch never holds a wrong or missing
example silently. Examples are equal to the ones ``lazy=false`` holds.

With ``cache_decoded=true`` as well, each image's encoded pixels are kept on disk the first
time it is decoded (one small file per image in ``cache_dir``, default
``~/.cache/genloom/decoded``; :class:`genloom.cache.DecodedCache`), and read back instead of
decoding on later epochs and runs. An entry is keyed by the file's path, size and
modification time and the encoder's settings, so an edited image or another resolution is
decoded afresh; a damaged entry is decoded again with a warning.

Split: images are taken in sorted order of their paths (within each class, with labels),
and every k-th goes to validation, k = round(1 / val_fraction). The split depends only on
the file names, never on chance.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genloom.cache import DecodedCache, check_decoded_cache, decoded_cache
from genloom.folders import LazyExamples, count_classes, describe_classes, find_files, split_every
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
        lazy: keep only the file list, and decode each image when it is asked for (see
            the module docstring), instead of decoding the whole folder into memory.
        cache_decoded: with ``lazy``, keep each image's encoded pixels on disk once decoded,
            and read them back on later epochs and runs instead of decoding again.
        cache_dir: where ``cache_decoded`` keeps them; None is ``<user cache>/decoded``
            (``$GENLOOM_CACHE_DIR``, else ``~/.cache/genloom``).

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
        lazy: bool = False,
        cache_decoded: bool = False,
        cache_dir: str | None = None,
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
        self.lazy = lazy
        self.cache_decoded, self.cache_dir = check_decoded_cache(cache_decoded, cache_dir, lazy=lazy)
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
        self._checked: dict[str, list[tuple[int | None, Path]]] | None = None  # lazy: the split's files

    def split(
        self, name: Split, encoder: Encoder, condition_encoder: Encoder | None = None
    ) -> EncodedExamples | LazyExamples:
        """The split's examples; the whole folder is decoded once per encoder (or, lazily, its
        files are checked once and each image decoded when asked for)."""
        if self.lazy:
            if self._checked is None:
                self._checked = self._check()
            members = self._checked[name]
            cache = (decoded_cache(encoder, {}, directory=self.cache_dir, source=self.root)
                     if self.cache_decoded else None)
            return LazyExamples(
                [file for _, file in members], functools.partial(self._example, encoder, cache, members),
                what="image", root=self.root,
                advice="dataset.strict=true decodes every file before training, to find such files first",
            )
        if self._encoded is None or self._encoded[:2] != (encoder, condition_encoder):
            self._encoded = (encoder, condition_encoder, self._encode(encoder, condition_encoder))
        return self._encoded[2][name]

    def _example(self, encoder: Encoder, cache: DecodedCache | None,
                 members: list[tuple[int | None, Path]], i: int) -> dict[str, Tensor]:
        """Example ``i`` of a lazy split: equal to example ``i`` of the split held in memory."""
        label, file = members[i]
        pixels = (encoder.encode(_open(file)) if cache is None
                  else cache.get(file, lambda: encoder.encode(_open(file))))
        return make_examples([pixels], [label], [None], condition=self.condition,
                             condition_encoder=None)[0]

    def _check(self) -> dict[str, list[tuple[int | None, Path]]]:
        """The split's ``(label, file)`` pairs, each file's header read (all decoded if strict)."""
        start = time.perf_counter()
        check = _open if self.strict else _read_header

        def checked(file: Path) -> Path:
            check(file)  # the decoded image is dropped at once: memory stays flat
            return file

        files = self._readable(checked)
        splits = self._split(files)
        log.info(
            "image_folder: %d train / %d val images in %s, checked in %.1f s and decoded when "
            "asked for (dataset.lazy=true)",
            len(splits["train"]), len(splits["val"]), self.root, time.perf_counter() - start,
        )
        return splits

    def _encode(self, encoder: Encoder, condition_encoder: Encoder | None) -> dict[str, EncodedExamples]:
        start = time.perf_counter()
        images = self._readable(lambda file: encoder.encode(_open(file)))  # (label, pixels), path order
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

    def _readable(self, read: Callable[[Path], object]) -> list[tuple[int | None, Any]]:
        """``(label, read(file))`` for every file ``read`` takes, in path order; the files it
        fails on skipped and counted in one warning (the first an error with ``strict``)."""
        images: list[tuple[int | None, Any]] = []
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
                images.append((label, read(file)))
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
        return images

    def _split(self, items: list[tuple[int | None, Any]]) -> dict[str, list]:
        """Every k-th item of each class (in path order) to validation, the rest to training."""
        return split_every(items, every=self.every, group=lambda item: item[0], what="images",
                           root=self.root, val_fraction=self.val_fraction)


def _read_header(file: Path) -> tuple[int, int]:
    """The image's size, from its header alone: a fast check that ``file`` is an image."""
    with Image.open(file) as image:
        return image.size


def _open(file: Path) -> Image.Image:
    """The image in ``file``, fully decoded (its first frame, for an animation)."""
    with Image.open(file) as image:
        image.load()
        return image.copy()
