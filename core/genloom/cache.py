"""Encode once: a dataset split materialised to safetensors files in the run directory.

A stage-2 pipeline encodes its data through a frozen stage 1 (:mod:`genloom.frozen`), which
costs a forward pass of a network per example. :func:`cached_split` does that once per run
directory (:func:`cached_splits`): the split's examples are read in order, each under its own
fixed seed, stacked, and written atomically (a killed run leaves no half cache) to
``cache/<split>-<key>.safetensors``; a later start in the same run directory (a resume)
reads them back instead of encoding again. The key is a sha256 of the dataset's resolved
config, the split and the sha256 of every frozen stage's weights, so other data or another
stage 1 never reads a stale cache; the files a dataset reads are not part of the key (a
folder whose files change needs a new run directory).

A split that draws at random per example (an augmentation) is not cached: freezing one
draw would change what the model trains on. Modality-blind: it knows tensors only.

Caches that outlive a run directory (a text corpus's token file, which every later run on the
same corpus reads at once; a lazy folder's encoded examples, :class:`DecodedCache`) live under
:func:`user_cache_dir` instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from genloom import checkpoint, rng
from genloom.interfaces import Dataset, Encoder, Fingerprintable

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
FORMAT = 1
USER_CACHE_ENV = "GENLOOM_CACHE_DIR"


def user_cache_dir() -> Path:
    """Where caches shared by every run of this user go: ``$GENLOOM_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/genloom``, else ``~/.cache/genloom``. Deleting it only costs the time
    to build its contents again."""
    if os.environ.get(USER_CACHE_ENV):
        return Path(os.environ[USER_CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "genloom"


class TensorSplit(torch.utils.data.Dataset):
    """A split held as stacked tensors: example ``i`` is ``{key: tensor[i]}``."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"a split's tensors must share their first dimension, got {sorted(lengths)}")
        self.tensors = dict(tensors)
        self.length = lengths.pop()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: tensor[i] for key, tensor in self.tensors.items()}


class CountingEncoder:
    """An encoder that ticks ``on_encode`` after each item (the progress bar); otherwise the same."""

    def __init__(self, encoder: Encoder, on_encode: Callable[[], None]) -> None:
        self._encoder, self._on_encode = encoder, on_encode

    def encode(self, media: Any) -> torch.Tensor:
        encoded = self._encoder.encode(media)
        self._on_encode()
        return encoded

    def __getattr__(self, name: str) -> Any:  # the encoder's other attributes and capabilities
        return getattr(self._encoder, name)


def cache_key(dataset_config: Mapping[str, Any], split: str, frozen: Mapping[str, str]) -> str:
    """sha256 of what the cached tensors are a function of: the data's config, the split, stage 1."""
    record = {"format": FORMAT, "dataset": dataset_config, "split": split,
              "frozen": dict(sorted(frozen.items()))}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def cached_splits(
    dataset: Dataset,
    encoder: Encoder,
    condition_encoder: Encoder | None,
    *,
    directory: Path,
    keys: Mapping[str, str],
    progress: bool = True,
) -> dict[str, torch.utils.data.Dataset]:
    """``{split: data}`` for each split of ``keys``, read from the cache or encoded into it.

    ``directory`` is the run directory's ``cache/`` folder; ``keys`` maps a split to its
    :func:`cache_key`. A cache file that does not read back is encoded again, with a
    warning. Splits to encode share one progress bar, ticked per encoded item; the
    encoders are wrapped once, so a dataset that encodes all its splits at the first
    call (and keeps them per encoder) still encodes once.
    """
    out: dict[str, torch.utils.data.Dataset] = {}
    for split, key in keys.items():
        path = _path(directory, split, key)
        if path.is_file():
            try:
                out[split] = TensorSplit(_read(path))
                log.info("%s split: %d examples read from the encoding cache %s",
                         split, len(out[split]), path)
            except (checkpoint.CheckpointError, ValueError) as err:
                log.warning("the encoding cache %s does not read back (%s); encoding again", path, err)
    missing = [split for split in keys if split not in out]
    if not missing:
        return out
    from tqdm.auto import tqdm

    with tqdm(desc="encode", unit="item", disable=not progress, dynamic_ncols=True) as bar:
        def tick() -> None:
            bar.update(1)

        counted = CountingEncoder(encoder, tick)
        counted_condition = None if condition_encoder is None else CountingEncoder(condition_encoder, tick)
        for split in missing:
            data = dataset.split(split, counted, counted_condition)
            tensors = _materialise(data, split)
            if tensors is None:
                out[split] = data
                continue
            path = _path(directory, split, keys[split])
            directory.mkdir(parents=True, exist_ok=True)
            checkpoint.write_atomic(path, save(tensors, metadata={"format": str(FORMAT)}))
            log.info("%s split: %d examples encoded once, cached in %s", split, len(data), path)
            out[split] = TensorSplit(tensors)
    return out


def _path(directory: Path, split: str, key: str) -> Path:
    return directory / f"{split}-{key[:32]}.safetensors"


def _materialise(data: torch.utils.data.Dataset, split: str) -> dict[str, torch.Tensor] | None:
    """Every example of ``data``, stacked per key; None when the split cannot be cached as such."""
    n = len(data)
    if n == 0:
        return None
    with rng.cpu_streams_kept():
        examples = []
        for i in range(n):
            rng.seed_cpu_streams(rng.derived_seed(FORMAT, i))
            examples.append(data[i])
        rng.seed_cpu_streams(rng.derived_seed(FORMAT, n))  # another draw for example 0
        again = data[0]
    first = examples[0]
    if again.keys() != first.keys() or any(not torch.equal(again[k], first[k]) for k in first):
        log.warning("the %s split draws at random per example (an augmentation?); it is not cached, "
                    "so each start of this run encodes it again", split)
        return None
    try:
        return {key: torch.stack([ex[key] for ex in examples]).contiguous() for key in first}
    except (KeyError, RuntimeError) as err:
        log.warning("the %s split's examples differ in keys or shapes (%s); it is not cached", split, err)
        return None


def _read(path: Path) -> dict[str, torch.Tensor]:
    """Read into memory, not mapped: the run's data must not change under it if the file does."""
    checkpoint.read_header(path)
    try:
        return load(path.read_bytes())
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise checkpoint.CheckpointError(f"{path} cannot be read: {err}") from None


class DecodedCache:
    """A lazy folder's encoded files on disk: each decoded and encoded once, read back after.

    One safetensors file per source file, named by a sha256 of the cache's ``key`` (the
    encoder's fingerprint and the dataset's settings, :func:`decoded_cache`) and the file's
    resolved path, size and ``mtime_ns``: a file edited in place gets a new entry, and the
    stale one is never read. Each entry also holds that sha256 in its metadata and is read
    whole, so a damaged, truncated or foreign entry is encoded again with a warning, never
    mis-read. Entries are written under a name of their own per process and thread and
    renamed into place, so DataLoader workers writing the same entry at once each put a
    complete copy (the same bytes) there. They are not synced: a crash can at worst leave a
    damaged entry, which the check above rebuilds.
    """

    def __init__(self, directory: Path, key: str) -> None:
        self.directory, self.key = directory, key
        self._warned = False

    def get(self, file: Path, encode: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``file``'s encoded tensor: read from its entry, or ``encode()``-d and stored."""
        info = file.stat()
        record = [self.key, str(file.resolve()), info.st_size, info.st_mtime_ns]
        digest = hashlib.sha256(json.dumps(record).encode()).hexdigest()
        path = self.directory / digest[:2] / f"{digest[2:32]}.safetensors"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as err:
            data = None
            log.warning("the decoded cache entry %s of %s cannot be read (%s); decoding the file",
                        path, file, err)
        if data is not None:
            try:
                return _entry(data, digest)
            except ValueError as err:
                log.warning("the decoded cache entry %s of %s is damaged (%s); decoding the file again",
                            path, file, err)
        tensor = encode()
        self._store(path, tensor, digest)
        return tensor

    def _store(self, path: Path, tensor: torch.Tensor, digest: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(save({"tensor": tensor.contiguous()}, metadata={"entry": digest}))
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            if not self._warned:  # once per process: every file would fail alike
                self._warned = True
                log.warning("the decoded cache cannot be written in %s (%s); files are decoded each "
                            "time. Set dataset.cache_dir to a writable folder with room for the "
                            "encoded examples, or dataset.cache_decoded=false", self.directory,
                            err.strerror or err)


def check_decoded_cache(cache_decoded: bool, cache_dir: str | None, *, lazy: bool) -> tuple[bool, str | None]:
    """A folder dataset's ``cache_decoded`` and ``cache_dir``, checked; a ValueError says what to set."""
    if not isinstance(cache_decoded, bool):
        raise ValueError(f"dataset.cache_decoded must be true or false, got {cache_decoded!r}")
    if cache_dir is not None and not isinstance(cache_dir, str):
        raise ValueError(f"dataset.cache_dir must be a folder's path or null, got {cache_dir!r}")
    if cache_decoded and not lazy:
        raise ValueError("dataset.cache_decoded=true keeps the examples of a lazy folder on disk; "
                         "set dataset.lazy=true as well (without it the folder is decoded into memory once)")
    return cache_decoded, cache_dir


def decoded_cache(encoder: Encoder, settings: Mapping[str, Any], *, directory: str | None,
                  source: Path) -> DecodedCache | None:
    """The :class:`DecodedCache` for ``encoder`` and the dataset's ``settings`` (what else the
    encoded tensors depend on: a sample rate, a duration), in ``directory`` or
    ``<user cache>/decoded``; None, with a note, for an encoder that cannot name its mapping."""
    if not isinstance(encoder, Fingerprintable):
        log.info("encoder %s cannot name its mapping (genloom.interfaces.Fingerprintable), so the "
                 "files of %s are decoded each time (dataset.cache_decoded needs it)",
                 type(encoder).__name__, source)
        return None
    record = {"format": FORMAT, "encoder": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
              "fingerprint": encoder.fingerprint(), "settings": dict(settings)}
    key = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
    root = Path(directory).expanduser() if directory else user_cache_dir() / "decoded"
    log.info("decoded %s kept in %s (dataset.cache_decoded=true)", source, root)
    return DecodedCache(root, key)


def _entry(data: bytes, digest: str) -> torch.Tensor:
    """The tensor of an entry's bytes, if they are a complete entry for ``digest``; ValueError if not."""
    if len(data) < 8 or int.from_bytes(data[:8], "little") > len(data) - 8:
        raise ValueError(f"{len(data)} bytes, truncated")
    length = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + length])
        tensors = load(data)
    except (ValueError, SafetensorError) as err:
        raise ValueError(f"not a safetensors file: {err}") from None
    if not isinstance(header, dict) or (header.get("__metadata__") or {}).get("entry") != digest:
        raise ValueError("written for another file or encoder")
    if tensors.keys() != {"tensor"}:
        raise ValueError(f"it holds {sorted(tensors)}, not one tensor")
    return tensors["tensor"]
