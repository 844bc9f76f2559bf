"""Checkpoint directories: written atomically, read without unpickling anything.

A checkpoint is a directory ``checkpoints/step_000500/`` holding

* ``model.safetensors``: the generator's weights;
* ``config.yaml``: the resolved pipeline config, enough to rebuild every component;
* ``meta.json``: step, genloom version, and the plugin distributions and versions in use;
* ``trainer.safetensors`` + ``trainer.json``: optimizer tensors, RNG states and the rest
  of the trainer state, for exact resume.

It is written under a temporary name and renamed into place, then ``checkpoints/latest``
is replaced atomically, so a crash mid-save leaves the previous checkpoint untouched. A
step saved again is moved aside before the new one is renamed in, and removed only after;
:func:`recover` (run before every save and when a trainer starts) undoes what a killed save
left. ``latest`` is never followed out of its folder; when it names no complete step, the
newest complete ``step_*`` is used, with a warning.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

import genloom

FORMAT_VERSION = 1
LATEST = "latest"
STEP_DIR = re.compile(r"^step_(\d+)$")
_REPLACED = ".replaced-"  # a step being saved again is moved aside under this name
_SMALL_FILES = 64 * 1024  # config.yaml, meta.json, trainer.json and the safetensors headers

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete or does not fit the model."""


@dataclass
class Checkpoint:
    path: Path
    config: DictConfig
    meta: dict[str, Any]

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
) -> Path:
    """Write ``checkpoints_dir/step_{step}`` atomically and point ``latest`` at it.

    The weights come from ``model``, or ready-made from ``weights`` (a sharded model's,
    gathered); the optimizer state likewise from ``optimizer`` or ``optimizer_state``.
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
        _trainer_state(optimizer_state, extra_state or {}) if optimizer_state is not None else ({}, None)
    )
    size = _nbytes(weights if weights is not None else model.state_dict()) + _nbytes(trainer_tensors)
    _check_space(checkpoints_dir, step=step, size=size + _SMALL_FILES, keep=keep)
    tmp = _new_dir(checkpoints_dir, prefix=f".{final.name}-")
    try:
        if weights is not None:
            save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            save_model(model, str(tmp / "model.safetensors"))
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(config, resolve=True))
        meta = {"format": FORMAT_VERSION, "step": step, "genloom": genloom.__version__, "plugins": plugins}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if trainer_json is not None:
            save_file(trainer_tensors, str(tmp / "trainer.safetensors"))
            (tmp / "trainer.json").write_text(json.dumps(trainer_json))
        _umask_modes(tmp)
        _fsync_dir(tmp)
        _move_in(tmp, final)
        _write_atomic(checkpoints_dir / LATEST, final.name)
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
    step_dir = resolve(path)
    try:
        meta = json.loads((step_dir / "meta.json").read_text())
        config = OmegaConf.load(step_dir / "config.yaml")
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {step_dir} is incomplete or damaged: {err}") from err
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {step_dir} has format {meta.get('format')!r}; this genloom "
            f"({genloom.__version__}) reads format {FORMAT_VERSION}"
        )
    assert isinstance(config, DictConfig)
    return Checkpoint(step_dir, config, meta)


def load_weights(model: torch.nn.Module, step_dir: Path, device: torch.device | str = "cpu") -> None:
    try:
        missing, unexpected = load_model(
            model, str(step_dir / "model.safetensors"), strict=False, device=str(device)
        )
    except RuntimeError as err:
        raise CheckpointError(
            f"weights in {step_dir} do not fit the model built from its config: {err}"
        ) from err
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {step_dir} do not fit the model: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )


def read_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint as a flat dict of CPU tensors."""
    try:
        return load_file(str(step_dir / "model.safetensors"))
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"weights in {step_dir} cannot be read: {err}") from err


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
    """``(optimizer state dict, the rest of the trainer state)``; restores the RNG states."""
    if not (step_dir / "trainer.json").is_file():
        raise CheckpointError(f"{step_dir} holds weights only (no trainer state); it cannot be resumed")
    tensors = load_file(str(step_dir / "trainer.safetensors"))
    state = json.loads((step_dir / "trainer.json").read_text())
    optim_state: dict[int, dict[str, Any]] = {}
    for key, value in state["optimizer"]["scalars"].items():
        index, _, name = key.partition(".")
        optim_state.setdefault(int(index), {})[name] = value
    for key, tensor in tensors.items():
        if key.startswith("optim."):
            index, _, name = key[len("optim.") :].partition(".")
            optim_state.setdefault(int(index), {})[name] = tensor.to(device)
    optimizer_state = {"state": optim_state, "param_groups": state["optimizer"]["param_groups"]}
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return optimizer_state, state["extra"]


def _trainer_state(
    optim: dict[str, Any], extra: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    scalars = {}
    for index, param_state in optim["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    version, internal, gauss = random.getstate()
    state = {
        "optimizer": {"param_groups": optim["param_groups"], "scalars": scalars},
        "python_rng": [version, list(internal), gauss],
        "extra": extra,
    }
    return tensors, state


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
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
    name = latest.read_text().strip() if latest.is_file() else None
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
