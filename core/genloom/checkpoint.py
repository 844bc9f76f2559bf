"""Checkpoint directories: written atomically, read without unpickling anything.

A checkpoint is a directory ``checkpoints/step_000500/`` holding

* ``model.safetensors``: the generator's weights (only those it names, for a
  :class:`genloom.interfaces.PartialCheckpoint` such as LoRA adapters, marked ``partial``
  in the file's metadata);
* ``config.yaml``: the resolved pipeline config, enough to rebuild every component;
* ``meta.json``: step, genloom version, and the plugin distributions and versions in use;
* ``trainer.safetensors`` + ``trainer.json``: optimizer tensors, RNG states and the rest
  of the trainer state, for exact resume; with ``trainer.ema`` on, the EMA of the weights
  too, which :func:`load_generator_weights` loads in place of the raw weights;
* ``frozen/<key>/`` (a two-stage pipeline only): the stage-1 checkpoint each frozen
  component is built from, stored so that the directory alone rebuilds it
  (:mod:`genloom.frozen`);
* ``tokenizer.json`` (an encoder fitted on the training data only, such as a trained BPE):
  what it learnt, as JSON (:mod:`genloom.fitting`).

It is written under a temporary name and renamed into place, then ``checkpoints/latest``
is replaced atomically, so a crash mid-save leaves the previous checkpoint untouched. A
step saved again is moved aside before the new one is renamed in, and removed only after;
:func:`recover` (run before every save and when a trainer starts) undoes what a killed save
left. ``latest`` is never followed out of its folder; when it names no complete step, the
newest complete ``step_*`` is used, with a warning.

Reading treats every file as a stranger's: only regular files are read, each within a size
bound; ``config.yaml`` is parsed with YAML aliases and OmegaConf interpolations refused
(configs are saved resolved, with a literal ``${`` escaped); ``meta.json`` and the
safetensors header are checked field by field. Whatever the files hold, reading ends in
the data or in one :class:`CheckpointError` that names the file.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import secrets
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf._utils import get_yaml_loader
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

import genloom
from genloom import rng
from genloom.interfaces import PartialCheckpoint

FORMAT_VERSION = 1
LATEST = "latest"
FROZEN_DIR = "frozen"
STEP_DIR = re.compile(r"^step_(\d+)$")
_REPLACED = ".replaced-"  # a step being saved again is moved aside under this name
PLUGIN_STATE = "plugins"  # trainer.json's key for the plugins' state (TrainingRun.state)
# The EMA of the weights (genloom.builtin.ema): the built-in plugin's state "ema/<state dict name>".
EMA_PLUGIN, EMA_PREFIX = "genloom", "ema/"
_SMALL_FILES = 64 * 1024  # config.yaml, meta.json, trainer.json and the safetensors headers

log = logging.getLogger(__name__)

# Size bounds for what a checkpoint's small files may hold (a saved one is a few KiB).
CONFIG_LIMIT = 1 << 20
META_LIMIT = 1 << 20
LATEST_LIMIT = 4096
TRAINER_JSON_LIMIT = 64 << 20  # optimizer scalars and RNG state: well under this for any model
HEADER_LIMIT = 100_000_000  # the safetensors library's own bound on a header
# Bytes per element of each safetensors dtype that torch can load.
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E5M2FNUZ": 1, "F8_E4M3FNUZ": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8,
    "F64": 8, "C64": 8,
}
# A run of backslashes, then "${": an interpolation when the run is even (OmegaConf's rule).
_INTERPOLATION = re.compile(r"(\\*)\$\{")
# In model.safetensors' metadata: the file holds part of the generator's state (PartialCheckpoint).
PARTIAL = "genloom.partial"


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete or does not fit the model."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class WeightsHeader:
    """What a safetensors file holds, read from its header alone: name -> dtype and shape."""

    path: Path
    tensors: dict[str, TensorInfo]
    partial: bool = False
    """The file holds only part of the generator's state, so it does not bound the model's size."""

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.tensors.values())


@dataclass
class Checkpoint:
    path: Path
    config: DictConfig
    meta: dict[str, Any]
    weights: WeightsHeader

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def save(
    checkpoints_dir: Path,
    *,
    step: int,
    model: torch.nn.Module | None = None,
    config: DictConfig,
    plugins: dict[str, str | None],
    optimizer: torch.optim.Optimizer | None = None,
    extra_state: dict[str, Any] | None = None,
    keep: int = 2,
    weights: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    frozen: dict[str, Path] | None = None,
    files: Mapping[str, str] | None = None,
    plugin_state: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``checkpoints_dir/step_{step}`` atomically and point ``latest`` at it.

    The weights come from ``model``, or ready-made from ``weights`` (a sharded model's,
    gathered); the optimizer state likewise from ``optimizer`` or ``optimizer_state``.
    ``frozen`` maps a pipeline key to a directory of files stored verbatim under
    ``frozen/<key>/`` (hard links where the file system allows: they never change).
    ``files`` maps a file name to the text written under it (an encoder's fitted state).
    ``plugin_state`` maps a plugin's name to the state it keeps (``TrainingRun.state``):
    its tensors join the trainer's in ``trainer.safetensors``, the rest ``trainer.json``;
    :func:`read_trainer_state` gives it back under ``extra[PLUGIN_STATE]``.
    Debris of killed saves goes first; then the free space is checked against ``keep + 1``
    checkpoints of this size. A failure to write (a full disk, an I/O error) raises a
    :class:`CheckpointError` that says so and leaves the last good checkpoint as it was.
    One writer per directory: :class:`genloom.rundir.RunDirLock` holds the run directory.
    """
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    recover(checkpoints_dir)
    final = checkpoints_dir / f"step_{step:06d}"
    if optimizer_state is None and optimizer is not None:
        optimizer_state = optimizer.state_dict()
    trainer_tensors, trainer_json = (
        _trainer_state(optimizer_state, extra_state or {}, plugin_state or {})
        if optimizer_state is not None else ({}, None)
    )
    keys = partial_keys(model) if model is not None else None
    if keys is not None:  # only what the generator names; the rest it rebuilds itself
        whole = weights if weights is not None else model.state_dict()
        weights = {k: t.detach().cpu().contiguous() for k, t in whole.items() if k in keys}
    size = _nbytes(weights if weights is not None else model.state_dict()) + _nbytes(trainer_tensors)
    size += sum(_tree_size(d) for d in (frozen or {}).values())
    size += sum(len(text.encode()) for text in (files or {}).values())
    _check_space(checkpoints_dir, step=step, size=size + _SMALL_FILES, keep=keep)
    tmp = _new_dir(checkpoints_dir, prefix=f".{final.name}-")
    try:
        if weights is not None:
            metadata = {"format": "pt"} if keys is None else {"format": "pt", PARTIAL: "true"}
            save_file(weights, str(tmp / "model.safetensors"), metadata=metadata)
        else:
            save_model(model, str(tmp / "model.safetensors"))
        (tmp / "config.yaml").write_text(config_yaml(config))
        meta = {"format": FORMAT_VERSION, "step": step, "genloom": genloom.__version__, "plugins": plugins}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if trainer_json is not None:
            save_file(trainer_tensors, str(tmp / "trainer.safetensors"))
            (tmp / "trainer.json").write_text(json.dumps(trainer_json))
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        _umask_modes(tmp)
        for key, source in (frozen or {}).items():
            _store_verbatim(source, tmp / FROZEN_DIR / key)
            _fsync_dir(tmp / FROZEN_DIR / key)
        if frozen:
            _fsync_dir(tmp / FROZEN_DIR)
        _fsync_dir(tmp)
        _move_in(tmp, final)
        write_atomic(checkpoints_dir / LATEST, final.name)
        _fsync_dir(checkpoints_dir)
    except (OSError, SafetensorError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(_write_failed(checkpoints_dir, step, err)) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(checkpoints_dir, keep=keep, protect=final)
    return final


def recover(checkpoints_dir: Path) -> None:
    """Undo what a killed save left behind: call it before writing (one writer at a time).

    A step that a killed re-save had moved aside goes back in place (the save had not
    finished, so the old one is the last good one); half-written directories and
    ``latest`` files are removed.
    """
    if not checkpoints_dir.is_dir():
        return
    for aside in sorted(checkpoints_dir.glob(f".step_*{_REPLACED}*")):
        final = checkpoints_dir / aside.name[1:].partition(_REPLACED)[0]
        if STEP_DIR.match(final.name) and not final.exists() and _is_complete(aside):
            os.replace(aside, final)
            log.warning("restored %s, which a save killed while replacing it had moved aside", final)
    freed, count = 0, 0
    for debris in [*checkpoints_dir.glob(".step_*"), *checkpoints_dir.glob(f".{LATEST}*.tmp")]:
        freed, count = freed + _tree_size(debris), count + 1
        if debris.is_dir() and not debris.is_symlink():
            shutil.rmtree(debris, ignore_errors=True)
        else:
            debris.unlink(missing_ok=True)
    if count:
        log.info("removed %d leftover(s) of killed saves from %s (%s)", count, checkpoints_dir, _human(freed))


def resolve(path: str | Path) -> Path:
    """Accept a step directory, a ``checkpoints/`` folder or a run directory.

    In a folder, ``latest`` names the step to use; it is never followed out of the folder.
    If it names no complete step (or is missing), the newest complete ``step_*`` is used,
    with a warning.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    for candidate in (path, path / "checkpoints"):
        if (candidate / "model.safetensors").is_file():
            return candidate
        if (candidate / LATEST).is_file() or _step_dirs(candidate):
            return _follow_latest(candidate)
    raise CheckpointError(
        f"no checkpoint in {str(path)!r}: expected model.safetensors there, or a checkpoints/ "
        "folder with a 'latest' file (what `genloom train` writes into its run directory)"
    )


def latest_in(checkpoints_dir: Path) -> Path | None:
    """The checkpoint to resume from in ``checkpoints_dir``; None if it holds none at all."""
    if not (checkpoints_dir / LATEST).is_file() and not _step_dirs(checkpoints_dir):
        return None
    return resolve(checkpoints_dir)


def read(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``: its config, its metadata and its weights' header.

    Nothing here runs code from the files or trusts their size or kind; a damaged or
    hostile checkpoint ends in one :class:`CheckpointError` naming the file.
    """
    step_dir = resolve(path)
    meta = _read_meta(step_dir / "meta.json")
    config = read_config(step_dir / "config.yaml")
    weights = read_header(step_dir / "model.safetensors")
    return Checkpoint(step_dir, config, meta, weights)


def read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes.

    Symbolic links are followed, but what they reach must be a regular file too: a FIFO
    would block the read forever and ``/dev/zero`` would never end.
    """
    too_large = CheckpointError(f"{path} is larger than {limit:,} bytes, far more than genloom writes there")
    with _open_regular(path) as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise too_large
        data = f.read(limit + 1)  # (it may have grown since)
    if len(data) > limit:
        raise too_large
    return data


def read_text(path: Path, limit: int) -> str:
    """:func:`read_bytes`, decoded as UTF-8."""
    try:
        return read_bytes(path, limit).decode("utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_config(path: Path) -> DictConfig:
    """A saved (resolved) config: YAML aliases, unknown tags and interpolations refused."""
    text = read_text(path, CONFIG_LIMIT)
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader, stricter still
    except yaml.YAMLError as err:
        raise CheckpointError(f"{path} is not valid YAML: {_one_line(err)}") from None
    except RecursionError:
        raise CheckpointError(f"{path} nests too deeply to be a genloom config") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a mapping of config keys, not {type(data).__name__}")
    _refuse_interpolations(data, path, "")
    try:
        return OmegaConf.create(data)
    except (OmegaConfBaseException, RecursionError) as err:
        raise CheckpointError(f"{path} is not a valid config: {_one_line(err)}") from None


def config_yaml(config: DictConfig) -> str:
    """``config`` resolved, as YAML that :func:`read_config` reads back value for value.

    A value that holds a literal ``${`` (written ``\\${...}`` in training) is saved
    escaped, so that it stays literal rather than reading as an interpolation.
    """
    return OmegaConf.to_yaml(OmegaConf.create(_escape(OmegaConf.to_container(config, resolve=True))))


def read_header(path: Path) -> WeightsHeader:
    """The dtype and shape of each tensor in a safetensors file, checked against its size."""
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path} is empty or truncated ({size} bytes): not a safetensors file")
        length = int.from_bytes(prefix, "little")
        if length > min(size - 8, HEADER_LIMIT):
            raise CheckpointError(
                f"{path} is damaged or truncated: its header claims {length:,} bytes of "
                f"a {size:,}-byte file"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path} is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file: its header is not a JSON object")
    data_size = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _tensor_info(entry, path, name, data_size)
    metadata = header.get("__metadata__")
    partial = isinstance(metadata, dict) and metadata.get(PARTIAL) == "true"
    return WeightsHeader(path, tensors, partial)


def _tensor_info(entry: Any, path: Path, name: str, data_size: int) -> TensorInfo:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path} is damaged: tensor {_show(name)} {why}")

    if not isinstance(entry, dict):
        raise bad("has no dtype, shape and offsets")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise bad(f"has dtype {_show(dtype)}; known dtypes: {', '.join(DTYPE_SIZES)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise bad(f"has shape {_show(shape)}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise bad(f"has data_offsets {_show(offsets)}, not [start, end]")
    start, end = offsets
    info = TensorInfo(dtype, tuple(shape))
    if not start <= end <= data_size:
        raise bad(f"lies at bytes {start:,}..{end:,} of {data_size:,}: the file is truncated")
    if end - start != info.numel * DTYPE_SIZES[dtype]:
        raise bad(f"has shape {tuple(shape)} of {dtype} but {end - start:,} bytes")
    return info


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _open_regular(path: Path):  # noqa: ANN202 - a binary file object
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete") from None
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read: {err.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else (
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket or special file")
        raise CheckpointError(f"{path} is {kind}, not a regular file; a checkpoint holds only regular files")
    return os.fdopen(fd, "rb")


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(read_text(path, META_LIMIT))
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {_one_line(err)}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(meta).__name__}")
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} says format {_show(meta.get('format'))}; this genloom "
            f"({genloom.__version__}) reads format {FORMAT_VERSION}"
        )
    if "step" not in meta:
        raise CheckpointError(f"{path} has no 'step': the checkpoint is damaged")
    if not _is_count(meta["step"]):
        raise CheckpointError(f"{path} has step {_show(meta['step'])}; a step is a whole number, 0 or more")
    plugins = meta.get("plugins", {})
    if not isinstance(plugins, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in plugins.items()
    ):
        raise CheckpointError(f"{path} has 'plugins' {_show(plugins)}; expected {{distribution: version}}")
    if not isinstance(meta.get("genloom", ""), str):
        raise CheckpointError(f"{path} has 'genloom' {_show(meta['genloom'])}; expected a version string")
    return meta


class _ConfigLoader(get_yaml_loader()):
    """OmegaConf's own YAML loader (a SafeLoader), refusing aliases.

    A saved config never holds an alias; a stranger's could be a "billion laughs" that
    expands to millions of nodes when the config object is built.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"found the alias *{event.anchor}; genloom configs hold no YAML aliases",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _refuse_interpolations(node: Any, path: Path, key: str) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _refuse_interpolations(v, path, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _refuse_interpolations(v, path, f"{key}[{i}]")
    elif isinstance(node, str) and any(len(m.group(1)) % 2 == 0 for m in _INTERPOLATION.finditer(node)):
        raise CheckpointError(
            f"{path}: {key} holds an interpolation ('${{...}}'); configs are saved resolved, so a "
            "checkpoint's config is never interpolated (a literal '${' is saved as '\\${')"
        )


def _escape(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _escape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_escape(v) for v in node]
    if isinstance(node, str):  # n backslashes before "${" are written 2n+1: literal again
        return _INTERPOLATION.sub(lambda m: "\\" * (2 * len(m.group(1)) + 1) + "${", node)
    return node


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _show(value: Any) -> str:
    """``repr(value)``, cut short: a stranger's file may hold a megabyte where a number goes."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def partial_keys(model: torch.nn.Module) -> frozenset[str] | None:
    """The state dict keys ``model``'s checkpoints hold, or None for all of them."""
    return model.checkpoint_keys() if isinstance(model, PartialCheckpoint) else None


def load_weights(model: torch.nn.Module, step_dir: Path, device: torch.device | str = "cpu") -> None:
    """Load ``step_dir/model.safetensors`` into ``model``, checking that it fits first.

    A :class:`~genloom.interfaces.PartialCheckpoint` gets the keys it names; the rest of its
    state stays as its constructor built it.
    """
    path = step_dir / "model.safetensors"
    check_fits(model, read_header(path))
    try:
        if partial_keys(model) is None:
            load_model(model, str(path), strict=True, device=str(device))
        else:  # check_fits saw that the file holds exactly the named keys
            model.load_state_dict(load_file(str(path), device=str(device)), strict=False)
    except CheckpointError as err:  # the generator's own refusal (its base weights changed)
        raise CheckpointError(f"{path} cannot be loaded: {err}") from None
    except (SafetensorError, RuntimeError, OSError) as err:
        raise CheckpointError(f"{path} cannot be loaded into the model: {_one_line(err)}") from None
    check_finite(model, path)


def load_generator_weights(
    model: torch.nn.Module, step_dir: Path, device: torch.device | str = "cpu", *, use_ema: bool | None = None
) -> bool:
    """Load the weights ``sample``, ``eval``, ``serve`` and ``export`` use; True if the EMA's.

    The checkpoint's EMA of the weights (``trainer.ema``) where it holds one, unless
    ``use_ema`` is false; else ``model.safetensors``. ``use_ema=True`` on a checkpoint
    without an EMA is a :class:`CheckpointError`. The EMA replaces the averaged tensors
    (trainable parameters, floating buffers); the rest comes from ``model.safetensors``.
    """
    load_weights(model, step_dir, device)
    if use_ema is False:
        return False
    averages = read_ema(step_dir, device)
    if averages is None:
        if use_ema:
            raise CheckpointError(
                f"use_ema=true but {step_dir} holds no EMA of the weights (its run had no "
                "trainer.ema.decay); leave use_ema unset or set it to false to use its raw weights"
            )
        return False
    path = step_dir / "trainer.safetensors"
    state = model.state_dict(keep_vars=True)
    wrong = [f"{n} (not in the model)" if n not in state else f"{n} is {tuple(t.shape)} there, "
             f"{tuple(state[n].shape)} in the model"
             for n, t in averages.items() if n not in state or t.shape != state[n].shape]
    if wrong:
        raise CheckpointError(f"the EMA of the weights in {path} does not fit the model: {_few(wrong)}; "
                              "use_ema=false loads the raw weights")
    with torch.no_grad():
        for name, average in averages.items():
            state[name].copy_(average)
    check_finite(model, path)
    return True


def read_ema(step_dir: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor] | None:
    """The EMA of the weights a checkpoint holds, by state dict name; None if it holds none.

    Only those tensors are read from ``trainer.safetensors``, not the optimizer's.
    """
    path = step_dir / "trainer.safetensors"
    if not path.is_file():
        return None
    prefix = _plugin_tensor(EMA_PLUGIN, EMA_PREFIX)
    names = [name for name in read_header(path).tensors if name.startswith(prefix)]
    if not names:
        return None
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as tensors:
            return {name[len(prefix):]: tensors.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"the EMA of the weights in {path} cannot be read: {_one_line(err)}") from err


def check_fits(model: torch.nn.Module, header: WeightsHeader) -> None:
    """Refuse weights whose names or shapes differ from ``model``'s (which may be on meta).

    Tied tensors (one parameter under two names) are saved once, under either name. A
    :class:`~genloom.interfaces.PartialCheckpoint` is compared on the keys it names.
    """
    keys = partial_keys(model)
    groups: dict[int, list[str]] = {}
    shapes: dict[int, tuple[int, ...]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if keys is not None and name not in keys:
            continue
        groups.setdefault(id(tensor), []).append(name)
        shapes[id(tensor)] = tuple(tensor.shape)
    known = {name for names in groups.values() for name in names}
    missing = sorted(names[0] for names in groups.values() if not any(n in header.tensors for n in names))
    unexpected = sorted(set(header.tensors) - known)
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {header.path} do not fit the model: missing {_few(missing)}, "
            f"unexpected {_few(unexpected)}"
        )
    wrong = [f"{n} is {header.tensors[n].shape} there, {shapes[key]} in the model"
             for key, names in groups.items() for n in names
             if n in header.tensors and header.tensors[n].shape != shapes[key]]
    if wrong:
        raise CheckpointError(f"weights in {header.path} do not fit the model: {_few(wrong)}")


def check_finite(model: torch.nn.Module, path: Path) -> None:
    """Refuse weights holding NaN (or an infinite parameter): sampling them fails or lies."""
    bad = [name for name, p in model.named_parameters()
           if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    bad += [name for name, b in model.named_buffers() if b.is_floating_point() and bool(torch.isnan(b).any())]
    if bad:
        raise CheckpointError(
            f"{path} holds NaN or infinite values in {_few(bad)}: the training run diverged or the "
            "file is damaged; use an earlier checkpoint"
        )


def _few(names: list[str], count: int = 5) -> str:
    shown = ", ".join(names[:count]) or "none"
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")


def read_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint as a flat dict of CPU tensors."""
    path = step_dir / "model.safetensors"
    read_header(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"weights in {path} cannot be read: {_one_line(err)}") from err


def load_trainer_state(
    step_dir: Path, optimizer: torch.optim.Optimizer, device: torch.device
) -> dict[str, Any]:
    """Restore the optimizer and RNG states in place; return the rest of the trainer state."""
    optimizer_state, extra = read_trainer_state(step_dir, device)
    optimizer.load_state_dict(optimizer_state)
    return extra


def read_trainer_state(
    step_dir: Path, device: torch.device | str = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(optimizer state dict, the rest of the trainer state)``; restores the RNG states.

    A damaged ``trainer.safetensors`` or ``trainer.json`` (truncated, not JSON, keys
    missing) is a :class:`CheckpointError` naming the file.
    """
    if not (step_dir / "trainer.json").is_file():
        raise CheckpointError(f"{step_dir} holds weights only (no trainer state); it cannot be resumed")
    advice = "resume from an earlier checkpoint (trainer.resume=PATH) or train afresh"
    tensors_file, state_file = step_dir / "trainer.safetensors", step_dir / "trainer.json"
    try:
        read_header(tensors_file)  # a regular file with a sound header, or one message
        tensors = load_file(str(tensors_file))
    except CheckpointError as err:
        raise CheckpointError(f"{err}; {advice}") from None
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{tensors_file} is damaged or truncated ({err}); {advice}") from err
    try:
        state = json.loads(read_text(state_file, TRAINER_JSON_LIMIT))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{state_file} is not valid JSON ({err}); {advice}") from err
    try:
        scalars, param_groups = state["optimizer"]["scalars"], state["optimizer"]["param_groups"]
        extra = state["extra"]
        optim_state: dict[int, dict[str, Any]] = {}
        for key, value in scalars.items():
            index, _, name = key.partition(".")
            optim_state.setdefault(int(index), {})[name] = value
        for key, tensor in tensors.items():
            if key.startswith("optim."):
                index, _, name = key[len("optim.") :].partition(".")
                optim_state.setdefault(int(index), {})[name] = tensor.to(device)
        rng.restore(tensors, {k: state[k] for k in ("python_rng", "numpy_rng") if k in state})
        if PLUGIN_STATE in state:
            extra = {**extra, PLUGIN_STATE: {
                name: {**kept["values"], **{key: tensors[_plugin_tensor(name, key)].to(device)
                                             for key in kept["tensors"]}}
                for name, kept in state[PLUGIN_STATE].items()
            }}
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"the trainer state in {step_dir} is incomplete or damaged ({type(err).__name__}: {err} "
            f"in {state_file.name} or {tensors_file.name}); {advice}"
        ) from err
    return {"state": optim_state, "param_groups": param_groups}, extra


def _trainer_state(
    optim: dict[str, Any], extra: dict[str, Any], plugin_state: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, rng_scalars = rng.states()
    plugins: dict[str, dict[str, Any]] = {}
    for name, kept in plugin_state.items():
        plugins[name] = {"values": {}, "tensors": []}
        for key, value in kept.items():
            if isinstance(value, torch.Tensor):
                tensors[_plugin_tensor(name, key)] = value.detach().cpu().contiguous()
                plugins[name]["tensors"].append(key)
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError) as err:  # a plugin's bug must not cost the checkpoint
                log.error("plugin %r keeps state[%r] that is neither a tensor nor JSON (%s); "
                          "the checkpoint leaves it out", name, key, err)
                continue
            plugins[name]["values"][key] = value
    scalars = {}
    for index, param_state in optim["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    state = {
        "optimizer": {"param_groups": optim["param_groups"], "scalars": scalars},
        **rng_scalars,
        "extra": extra,
        **({PLUGIN_STATE: plugins} if plugins else {}),
    }
    return tensors, state


def _plugin_tensor(plugin: str, key: str) -> str:
    """A plugin's tensor's name in ``trainer.safetensors`` (``trainer.json`` lists the keys)."""
    return f"plugin/{plugin}/{key}"


def _store_verbatim(source: Path, dest: Path) -> None:
    """The regular files of ``source`` in ``dest``: hard-linked (they are never rewritten), else copied."""
    dest.mkdir(parents=True)
    for file in sorted(source.iterdir()):
        if not file.is_file() or file.is_symlink():
            continue
        try:
            os.link(file, dest / file.name)
        except OSError:
            shutil.copyfile(file, dest / file.name)


def write_atomic(path: Path, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` in one step: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb" if isinstance(text, bytes) else "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    for file in path.iterdir():
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(checkpoints_dir: Path, *, keep: int, protect: Path) -> None:
    steps = _step_dirs(checkpoints_dir)
    for old in steps[: max(len(steps) - max(keep, 1), 0)]:
        if old != protect:
            shutil.rmtree(old, ignore_errors=True)


def _move_in(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; a step saved again is moved aside first, removed after.

    Between the two renames ``final`` is missing: :func:`resolve` then falls back to the
    newest complete step, and :func:`recover` puts the moved-aside one back.
    """
    if not final.exists():
        os.replace(tmp, final)
        return
    aside = final.with_name(f".{final.name}{_REPLACED}{secrets.token_hex(4)}")
    os.replace(final, aside)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _follow_latest(folder: Path) -> Path:
    latest = folder / LATEST
    name = read_text(latest, LATEST_LIMIT).strip() if latest.is_file() else None
    if name is not None:
        if not STEP_DIR.match(name):
            raise CheckpointError(
                f"{latest} names {name!r}, not a step_NNNNNN directory of {folder}: a path outside "
                "the checkpoints folder is never followed. Write a step's name into it, or pass "
                "the step directory itself"
            )
        target = folder / name
        if target.is_symlink():
            raise CheckpointError(
                f"{target} is a symbolic link; a checkpoint folder's steps must be directories in it "
                "(a link out of the folder is never followed). Pass the linked directory itself"
            )
        if _is_complete(target):
            return target
    complete = [d for d in _step_dirs(folder) if _is_complete(d)]
    said = (f"{latest} names {name}, which is not a complete checkpoint" if name is not None
            else f"{folder} has no {LATEST} file (a save was killed before writing it)")
    if not complete:
        raise CheckpointError(f"{said}, and {folder} holds no complete step directory")
    log.warning("%s; using the newest complete one, %s", said, complete[-1])
    return complete[-1]


def _step_dirs(folder: Path) -> list[Path]:
    """The ``step_*`` directories in ``folder`` (links excluded), oldest first."""
    if not folder.is_dir():
        return []
    steps = [p for p in folder.iterdir() if STEP_DIR.match(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(steps, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def _is_complete(step_dir: Path) -> bool:
    return step_dir.is_dir() and not step_dir.is_symlink() and all(
        (step_dir / name).is_file() for name in ("model.safetensors", "config.yaml", "meta.json")
    )


def _new_dir(parent: Path, prefix: str) -> Path:
    """A fresh directory, created with the umask's permissions (not mkdtemp's 0700)."""
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _umask_modes(directory: Path) -> None:
    """Give safetensors' files (written 0600) the umask's mode, as ``open`` gives the rest.

    The directory was made with the umask's mode, so it tells the mode without a call to
    ``os.umask`` (which sets the umask to read it, racing other threads).
    """
    mode = stat.S_IMODE(directory.stat().st_mode) & 0o666
    for file in directory.glob("*.safetensors"):
        file.chmod(mode)


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _tree_size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size if path.exists() or path.is_symlink() else 0
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _check_space(checkpoints_dir: Path, *, step: int, size: int, keep: int) -> None:
    """Refuse to start a save unless ``keep + 1`` checkpoints of ``size`` bytes fit.

    The steps already there count as part of that room: the peak, just before pruning, is
    the ``keep`` old ones and the one being written.
    """
    existing = sum(_tree_size(d) for d in _step_dirs(checkpoints_dir))
    count = max(keep, 1) + 1
    needed = max(size, count * size - existing)
    free = shutil.disk_usage(checkpoints_dir).free
    if free >= needed:
        return
    raise CheckpointError(
        f"not enough disk space to save step {step} in {checkpoints_dir}: {_human(needed)} more are "
        f"needed for {count} checkpoints (trainer.keep_checkpoints={keep}, plus the one being "
        f"written) of about {_human(size)} each, {_human(existing)} of them already there, but only "
        f"{_human(free)} are free. Free some space, lower trainer.keep_checkpoints, or point "
        f"hydra.run.dir at a bigger disk. {_last_good(checkpoints_dir)}"
    )


def _write_failed(checkpoints_dir: Path, step: int, err: BaseException) -> str:
    full = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or any(
        sign in str(err) for sign in ("No space left", "StorageFull", "code: 28")
    )
    cause = "the disk is full; free some space or point hydra.run.dir at a bigger disk" if full else str(err)
    return f"could not save step {step} in {checkpoints_dir}: {cause}. {_last_good(checkpoints_dir)}"


def _last_good(checkpoints_dir: Path) -> str:
    try:
        good = latest_in(checkpoints_dir)
    except CheckpointError:
        good = None
    if good is None:
        return "No checkpoint was saved before this one."
    return f"The last good checkpoint, {good}, is intact."


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
