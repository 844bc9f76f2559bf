"""Helpers for datasets that read a user's folder: find the files, split them stably.

Modality-free and torch-free: an image, audio or text plugin's folder dataset finds its
files with :func:`find_files` (or :func:`glob_files` for a pattern), reads classes from
top-level subfolders with :func:`count_classes`, and assigns examples to training and
validation with :func:`split_every`, so every folder dataset behaves the same way:

* hidden files and folders (a leading ``.``, such as ``.git``) are skipped;
* symbolic links to files and folders are followed, as if the target lay there; a link
  back to a folder being searched (a loop) is cut, and a link whose target is missing
  skipped, each with a warning naming it;
* a search never starts at the root of the file system, and gives up with an error that
  says what to do after :data:`MAX_ENTRIES` directory entries;
* paths are sorted, and validation takes every k-th example of each class, which keeps a
  split stable when files are added to a class and keeps classes balanced;
* a folder larger than memory is read lazily (``dataset.lazy=true``): :class:`LazyExamples`
  holds the split's files and reads each example when the trainer asks for it, in its
  DataLoader workers; a file that no longer reads is named in a warning and replaced by
  the split's next readable one.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

Item = TypeVar("Item")
Example = TypeVar("Example")

log = logging.getLogger(__name__)

MAX_ENTRIES = 2_000_000
"""How many directory entries one search may visit before it gives up (a data folder of a
million files fits; a walk of a whole disk does not)."""

MAGIC = frozenset("*?[")


def describe_kind(path: Path) -> str:
    """What ``path`` is, for messages: ``"a folder"``, ``"a file"``, ``"a named pipe (FIFO)"``..."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "missing"
    kinds = (
        (stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a file"), (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file or folder")


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
        raise NotADirectoryError(
            f"dataset.path {str(root)!r} is {describe_kind(root)}, not a folder; set it to a folder of {what}"
        )
    refuse_file_system_root(root, what=what)
    wanted = None if suffixes is None else {s.lower() for s in suffixes}
    files = [p for p in walk_files(root) if wanted is None or p.suffix.lower() in wanted]
    if not files:
        among = f" among {', '.join(sorted(wanted))}" if wanted else ""
        raise ValueError(
            f"dataset.path {str(root)!r} holds no {what} (searched recursively{among})"
            + (f"; {hint}" if hint else "")
        )
    return files


def refuse_file_system_root(root: Path, *, what: str = "data", shown: str | None = None) -> None:
    """A recursive search of ``/`` would read every file on the machine: say so instead."""
    resolved = root.resolve()
    if resolved == Path(resolved.anchor):
        raise ValueError(
            f"dataset.path {shown or str(root)!r} searches the root of the file system "
            f"({resolved}) recursively, which would read every file on the machine; point "
            f"it at the folder that holds your {what}"
        )


def walk_files(root: Path) -> list[Path]:
    """Every non-hidden regular file under the folder ``root``, sorted, symlinks followed."""
    walk = _Walk(root)
    files: list[Path] = []
    stack = [(root, walk.ancestry(root, frozenset()))]
    while stack:
        directory, ancestors = stack.pop()
        for path, kind in walk.entries(directory):
            if path.name.startswith("."):
                continue
            if kind == "file":
                files.append(path)
            elif kind == "broken":
                walk.broken.append(path)
            elif (inside := walk.ancestry(path, ancestors)) is not None:
                stack.append((path, inside))
    walk.report()
    return sorted(files)


def glob_files(pattern: str) -> list[Path]:
    """The regular files a shell-style pattern names, sorted; ``**`` matches any depth.

    As in the shell (and :func:`glob.glob`): ``*``, ``?`` and ``[...]`` match within one
    path component, a component starting with ``.`` is matched only by a pattern component
    that starts with ``.``, and relative patterns are relative to the working directory.
    Unlike :func:`glob.glob`, symbolic link loops are cut, a recursive pattern rooted at
    ``/`` is refused, and a search gives up after :data:`MAX_ENTRIES` entries.
    """
    parts = Path(os.path.expanduser(pattern)).parts
    first_magic = next((i for i, part in enumerate(parts) if MAGIC & set(part)), len(parts))
    base = Path(*parts[:first_magic]) if first_magic else Path(".")
    rest = [*parts[first_magic:]]
    if rest and rest[-1] == "**":
        rest.append("*")  # a trailing ** names files at any depth
    if not rest:
        return [base] if base.is_file() else []
    if not base.is_dir():
        return []
    if "**" in rest:
        refuse_file_system_root(base, shown=pattern)
    walk = _Walk(base, shown=pattern)
    found: set[Path] = set()
    seen: set[tuple[Path, int]] = set()
    stack = [(base, 0, walk.ancestry(base, frozenset()))]
    while stack:
        directory, k, ancestors = stack.pop()
        if (directory, k) in seen or ancestors is None:
            continue
        seen.add((directory, k))
        part, last = rest[k], k == len(rest) - 1
        if part == "**":
            stack.append((directory, k + 1, ancestors))
            for path, kind in walk.entries(directory):
                if kind == "dir" and not path.name.startswith("."):
                    stack.append((path, k, walk.ancestry(path, ancestors)))
            continue
        if not MAGIC & set(part):
            path = directory / part
            kind = "dir" if path.is_dir() else "file" if path.is_file() else None  # not a pipe
            candidates = [(path, kind)] if kind else []
        else:
            candidates = [
                (path, kind) for path, kind in walk.entries(directory)
                if fnmatch.fnmatchcase(path.name, part)
                and (part.startswith(".") or not path.name.startswith("."))
            ]
        for path, kind in candidates:
            if last and kind == "file":
                found.add(path)
            elif last and kind == "broken":
                walk.broken.append(path)
            elif not last and kind == "dir":
                stack.append((path, k + 1, walk.ancestry(path, ancestors)))
    walk.report()
    return sorted(found)


class _Walk:
    """One search's bookkeeping: the entry budget, loops cut, broken links, unreadable folders."""

    def __init__(self, root: Path, shown: str | None = None) -> None:
        self.root = root
        self.shown = shown or str(root)
        self.visited = 0
        self.loops: list[Path] = []
        self.broken: list[Path] = []  # links whose target is missing: a class folder on an unmounted disk...
        self.listed: dict[Path, list[tuple[Path, str]]] = {}
        self.unreadable: list[tuple[Path, str]] = []

    def entries(self, directory: Path) -> list[tuple[Path, str]]:
        """``(path, "dir" | "file" | "broken")`` for each folder, regular file and symbolic link
        to nothing in ``directory`` (links followed; pipes and devices left out). Each folder
        is read once per search, however many parts of a pattern look into it."""
        if directory in self.listed:
            return self.listed[directory]
        try:
            with os.scandir(directory) as scan:
                entries = list(scan)
        except OSError as err:
            self.unreadable.append((directory, err.strerror or type(err).__name__))
            entries = []
        self.visited += len(entries)
        if self.visited > MAX_ENTRIES:
            raise ValueError(
                f"dataset.path {self.shown!r}: gave up after visiting more than {MAX_ENTRIES} "
                f"entries under {self.root}; point dataset.path at the folder that holds the "
                "data, or a narrower pattern"
            )
        listed = []
        for entry in entries:
            try:  # both follow symlinks; a dangling link, pipe or device is neither
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError:
                is_dir = is_file = False
            kind = "dir" if is_dir else "file" if is_file else "broken" if entry.is_symlink() else None
            if kind:
                listed.append((directory / entry.name, kind))
        self.listed[directory] = listed
        return listed

    def ancestry(self, directory: Path, ancestors: frozenset[tuple[int, int]]) -> frozenset | None:
        """``ancestors`` plus ``directory``'s identity; None (a loop, noted) if it is among them."""
        try:
            info = directory.stat()
        except OSError as err:
            self.unreadable.append((directory, err.strerror or type(err).__name__))
            return None
        key = (info.st_dev, info.st_ino)
        if key in ancestors:
            self.loops.append(directory)
            return None
        return ancestors | {key}

    def report(self) -> None:
        """One warning each for the loops cut, the broken links and the unreadable folders."""
        if self.loops:
            log.warning(
                "dataset.path %r: skipped %d symbolic link(s) that loop back to a folder "
                "being searched: %s", self.shown, len(self.loops),
                ", ".join(str(p) for p in sorted(self.loops)[:3]) + (", ..." if len(self.loops) > 3 else ""),
            )
        broken = sorted(set(self.broken))
        if broken:
            log.warning(
                "dataset.path %r: skipped %d symbolic link(s) whose target is missing: %s",
                self.shown, len(broken),
                ", ".join(f"{p} -> {os.readlink(p)}" for p in broken[:3])
                + (", ..." if len(broken) > 3 else ""),
            )
        if self.unreadable:
            log.warning(
                "dataset.path %r: could not read %d folder(s), whose files are left out: %s",
                self.shown, len(self.unreadable),
                "; ".join(f"{p} ({why})" for p, why in self.unreadable[:3])
                + ("; ..." if len(self.unreadable) > 3 else ""),
            )


def count_classes(files: Sequence[Path], root: Path) -> dict[str, int]:
    """``{class: number of files}`` in sorted order of the names, read from the top-level
    subfolder of ``root`` that each file lies in; files directly in ``root`` have none."""
    counts: dict[str, int] = {}
    for file in files:
        parts = file.relative_to(root).parts
        if len(parts) > 1:
            counts[parts[0]] = counts.get(parts[0], 0) + 1
    return dict(sorted(counts.items()))


def describe_classes(counts: dict[str, int]) -> str:
    """``"0=cats (120), 1=dogs (80)"``: each class's label, name and number of files."""
    return ", ".join(f"{i}={name} ({n})" for i, (name, n) in enumerate(counts.items()))


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


class LazyExamples(Generic[Example]):
    """A split of a folder: ``files[i]`` read into example ``i`` by ``read(i)`` when asked for.

    A map-style dataset (``len`` and ``[i]``), so the trainer's DataLoader reads examples in
    its workers. The files passed a check before training (a header, or a full read); one
    that fails now (changed, truncated or removed since) is named in a warning, once per
    process, and the next readable example of the split stands in for it, so a batch keeps
    its size and never silently holds a wrong example. ``what`` names the examples in
    messages ("image", "clip"); ``advice`` ends the warning.
    """

    def __init__(self, files: Sequence[Path], read: Callable[[int], Example], *, what: str,
                 root: Path, advice: str = "") -> None:
        self.files, self.read, self.what, self.root, self.advice = files, read, what, root, advice
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Example:
        for k in range(len(self.files)):
            i = (index + k) % len(self.files)
            try:
                return self.read(i)
            except Exception as err:  # a file's decoder may raise any kind of error on bad data
                self._warn(self.files[i], f"{type(err).__name__}: {err}")
        raise ValueError(
            f"none of the {len(self.files)} files of this split of dataset.path {str(self.root)!r} "
            "reads any more; were they changed or removed while training?"
        )

    def _warn(self, file: Path, reason: str) -> None:
        if file not in self._warned:
            self._warned.add(file)
            log.warning(
                "%s passed the check before training but does not read now (%s): the next %s of "
                "the split takes its place%s", file, reason, self.what,
                f"; {self.advice}" if self.advice else "",
            )
