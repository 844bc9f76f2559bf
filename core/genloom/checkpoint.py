"""Checkpoint directories: written atomically, read without unpickling anything.

A checkpoint is a directory ``checkpoints/step_000500/`` holding

* ``model.safetensors``: the generator's weights;
* ``config.yaml``: the resolved pipeline config, enough to rebuild every component;
* ``meta.json``: step, genloom version, and the plugin distributions and versions in use;
* ``trainer.safetensors`` + ``trainer.json``: optimizer tensors, RNG states and the rest
  of the trainer state, for exact resume.

It is written under a temporary name and renamed into place, then ``checkpoints/latest``
is replaced atomically, so a crash mid-save leaves the previous checkpoint untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

import genloom
from genloom import rng

FORMAT_VERSION = 1
LATEST = "latest"
STEP_DIR = re.compile(r"^step_(\d+)$")


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
    """
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=checkpoints_dir))
    try:
        if weights is not None:
            save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            save_model(model, str(tmp / "model.safetensors"))
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(config, resolve=True))
        meta = {"format": FORMAT_VERSION, "step": step, "genloom": genloom.__version__, "plugins": plugins}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if optimizer_state is None and optimizer is not None:
            optimizer_state = optimizer.state_dict()
        if optimizer_state is not None:
            tensors, state = _trainer_state(optimizer_state, extra_state or {})
            save_file(tensors, str(tmp / "trainer.safetensors"))
            (tmp / "trainer.json").write_text(json.dumps(state))
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step (a resumed run that stops where it started)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_atomic(checkpoints_dir / LATEST, final.name)
    _fsync_dir(checkpoints_dir)
    _prune(checkpoints_dir, keep=keep, protect=final)
    return final


def resolve(path: str | Path) -> Path:
    """Accept a step directory, a ``checkpoints/`` folder or a run directory."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    for candidate in (path, path / "checkpoints"):
        if (candidate / "model.safetensors").is_file():
            return candidate
        latest = candidate / LATEST
        if latest.is_file():
            target = candidate / latest.read_text().strip()
            if (target / "model.safetensors").is_file():
                return target
            raise CheckpointError(f"{latest} points at {target}, which is not a complete checkpoint")
    raise CheckpointError(
        f"no checkpoint in {str(path)!r}: expected model.safetensors there, or a checkpoints/ "
        "folder with a 'latest' file (what `genloom train` writes into its run directory)"
    )


def latest_in(checkpoints_dir: Path) -> Path | None:
    try:
        return resolve(checkpoints_dir)
    except CheckpointError:
        return None


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
    """``(optimizer state dict, the rest of the trainer state)``; restores the RNG states.

    A damaged ``trainer.safetensors`` or ``trainer.json`` (truncated, not JSON, keys
    missing) is a :class:`CheckpointError` naming the file.
    """
    if not (step_dir / "trainer.json").is_file():
        raise CheckpointError(f"{step_dir} holds weights only (no trainer state); it cannot be resumed")
    advice = "resume from an earlier checkpoint (trainer.resume=PATH) or train afresh"
    tensors_file, state_file = step_dir / "trainer.safetensors", step_dir / "trainer.json"
    try:
        tensors = load_file(str(tensors_file))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{tensors_file} is damaged or truncated ({err}); {advice}") from err
    try:
        state = json.loads(state_file.read_text())
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
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"the trainer state in {step_dir} is incomplete or damaged ({type(err).__name__}: {err} "
            f"in {state_file.name} or {tensors_file.name}); {advice}"
        ) from err
    return {"state": optim_state, "param_groups": param_groups}, extra


def _trainer_state(
    optim: dict[str, Any], extra: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, rng_scalars = rng.states()
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
    steps = sorted(
        (p for p in checkpoints_dir.iterdir() if p.is_dir() and STEP_DIR.match(p.name)),
        key=lambda p: int(STEP_DIR.match(p.name).group(1)),
    )
    for old in steps[: max(len(steps) - max(keep, 1), 0)]:
        if old != protect:
            shutil.rmtree(old, ignore_errors=True)
    # Half-written directories of a process killed mid-save (one writer per run).
    for debris in checkpoints_dir.glob(".step_*"):
        if debris.is_dir():
            shutil.rmtree(debris, ignore_errors=True)
