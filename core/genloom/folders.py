"""Helpers for datasets that read a user's folder: find the files, split them stably.

Modality-free and torch-free: an image, audio or text plugin's folder dataset finds its
files with :func:`find_files` and assigns examples to training and validation with
:func:`split_every`, so every folder dataset behaves the same way: hidden files are
skipped, paths are sorted, and validation takes every k-th example of each class, which
keeps a split stable when files are added to a class and keeps classes balanced.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

Item = TypeVar("Item")


def find_files(root: Path, *, what: str, suffixes: Iterable[str] | None = None,
               hint: str = "") -> list[Path]:
    """Every non-hidden file under ``root`` (recursively, sorted), of ``suffixes`` if given.

    ``what`` names the files in messages ("images", "audio files"); ``hint`` is appended
    to the message for a folder with none ("put WAV, FLAC or OGG files in it").
    """
    if not root.exists():
        raise FileNotFoundError(
            f"dataset.path {str(root)!r} does not exist (looked for {root.resolve()}); "
            f"set it to a folder of {what}"
        )
    if not root.is_dir():
        raise NotADirectoryError(f"dataset.path {str(root)!r} is a file; set it to a folder of {what}")
    wanted = None if suffixes is None else {s.lower() for s in suffixes}
    files = [
        p for p in sorted(root.rglob("*"))
        if p.is_file()
        and (wanted is None or p.suffix.lower() in wanted)
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    if not files:
        among = f" among {', '.join(sorted(wanted))}" if wanted else ""
        raise ValueError(
            f"dataset.path {str(root)!r} holds no {what} (searched recursively{among})"
            + (f"; {hint}" if hint else "")
        )
    return files


def split_every(items: Sequence[Item], *, every: int, group: Callable[[Item], Hashable],
                what: str, root: Path, val_fraction: float) -> dict[str, list[Item]]:
    """Every ``every``-th item of each group (in order) to ``"val"``, the rest to ``"train"``.

    Raises a ``ValueError`` that says what to do when either split would be empty.
    """
    splits: dict[str, list[Item]] = {"train": [], "val": []}
    groups: dict[Hashable, list[Item]] = {}
    for item in items:
        groups.setdefault(group(item), []).append(item)
    for members in groups.values():
        for i, item in enumerate(members):
            splits["val" if i % every == every - 1 else "train"].append(item)
    if not splits["train"] or not splits["val"]:
        per_class = " of each class" if len(groups) > 1 else ""
        raise ValueError(
            f"dataset.path {str(root)!r} has {len(items)} readable {what}: too few for both "
            f"splits with dataset.val_fraction={val_fraction} (validation takes every "
            f"{every}th{per_class}); add more or raise dataset.val_fraction"
        )
    return splits
