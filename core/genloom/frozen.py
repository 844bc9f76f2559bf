"""Frozen components: a trained stage-1 autoencoder serving as another pipeline's encoder and decoder.

``encoder=from_checkpoint encoder.checkpoint=RUN`` (and ``decoder=from_checkpoint``, which
reads ``${encoder.checkpoint}``) turn a stage-1 run whose generator is
:class:`~genloom.interfaces.Tokenizing` into the two ends of a stage-2 pipeline: the encoder
is stage 1's encoder followed by ``generator.tokenize`` (media -> ``(token_count,)`` codes),
the decoder ``generator.detokenize`` followed by stage 1's decoder (codes -> media -> files).
Stage 1 is opened through :func:`genloom.sampler.load`, the hardened loader (no pickle, no
``_target_``, bounded reads, safetensors only), and frozen: eval mode, no gradients.

A stage-2 checkpoint is self-contained: the trainer stores each frozen component's stage-1
files in ``step_N/frozen/<key>/`` (``config.yaml``, ``meta.json``, ``model.safetensors``) with a
source record (``source.json``: the path first loaded, its step and the sha256 of its weights),
and :func:`bind` makes every load of a stage-2 checkpoint (sample, eval, serve, resume) build
the frozen components from those stored copies alone. A stored copy whose weights no longer
match its record is refused: stage 2 was trained on the codes of the recorded weights.

Nothing here knows a modality: stage 1's own encoder and decoder do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from genloom import checkpoint
from genloom.interfaces import ComparisonDecoder, Tokenizing

if TYPE_CHECKING:
    from genloom.pipeline import Pipeline
    from genloom.sampler import LoadedModel

log = logging.getLogger(__name__)

NAME = "from_checkpoint"  # the registry name of the frozen encoder and decoder
KEYS = ("encoder", "decoder", "condition_encoder")  # the pipeline keys a frozen component may fill
FROZEN_DIR = checkpoint.FROZEN_DIR
SOURCE_FILE = "source.json"
STORED_FILES = ("config.yaml", "meta.json", "model.safetensors")
SOURCE_LIMIT = 64 * 1024
ENCODE_BATCH = 64  # examples tokenized together by encode_many


@dataclass(frozen=True)
class Source:
    """Where a frozen stage 1's weights came from: kept through every copy of them."""

    path: str
    step: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "step": self.step, "sha256": self.sha256}


class FrozenStage:
    """A stage-1 pipeline loaded once: its generator in eval mode, with no gradients."""

    def __init__(self, loaded: LoadedModel, source: Source) -> None:
        self.loaded = loaded
        self.files = loaded.checkpoint.path  # the step directory (or stored copy) it was read from
        self.source = source
        self.generator = loaded.pipeline.generator
        self.generator.eval().requires_grad_(False)
        self.encoder = loaded.pipeline.encoder
        self.decoder = loaded.pipeline.decoder
        self.device = loaded.device

    def to(self, device: torch.device) -> None:
        self.generator.to(device)
        self.device = device


# Encoder and decoder of one pipeline name the same stage 1: it is loaded once while either lives.
_loaded: weakref.WeakValueDictionary[tuple, FrozenStage] = weakref.WeakValueDictionary()


def load_stage(path: str | Path, step: int | None = None, *, option: str) -> FrozenStage:
    """The stage 1 at ``path`` (a run, its checkpoints/ folder or a step), checked and frozen.

    ``option`` (``encoder.checkpoint``) is named in every message. A directory with a
    ``source.json`` (a stored copy) must hold the weights its record names.
    """
    from genloom.plugins import active
    from genloom.sampler import load

    if str(path) in ("", "???"):
        raise checkpoint.CheckpointError(missing_checkpoint(option))
    try:
        step_dir = _step_dir(path, step)
    except checkpoint.CheckpointError as err:
        raise checkpoint.CheckpointError(f"{option}={str(path)!r}: {err}") from None
    weights = step_dir / "model.safetensors"
    key = _identity(step_dir)
    if key is not None and (stage := _loaded.get(key)) is not None:
        return stage
    # The raw weights: the stored copy is model.safetensors alone, so that a resumed or
    # sampled stage 2 sees what its first run saw.
    loaded = load(step_dir, active(), "cpu", use_ema=False)
    ckpt = loaded.checkpoint
    generator = loaded.pipeline.generator
    if not isinstance(generator, Tokenizing):
        name = ckpt.config.generator.get("name")
        missing = [m for m in ("codebook_size", "token_count", "tokenize", "detokenize")
                   if not hasattr(generator, m)]
        raise checkpoint.CheckpointError(
            f"{option}={str(path)!r}: the generator of {ckpt.path} is {name!r} ({type(generator).__name__}), "
            f"which is not Tokenizing (it lacks {', '.join(missing)}); {NAME} needs a stage-1 autoencoder "
            "whose generator turns examples into discrete codes (genloom.interfaces.Tokenizing)"
        )
    nested = [k for k in KEYS if is_frozen_node(ckpt.config.get(k))]
    if nested:
        raise checkpoint.CheckpointError(
            f"{option}={str(path)!r}: {ckpt.path} is itself built on a frozen component "
            f"({nested[0]}={NAME}); genloom stacks two stages, not more"
        )
    digest = sha256(weights)
    recorded = read_source(step_dir) if (step_dir / SOURCE_FILE).exists() else None
    if recorded is not None and recorded.sha256 != digest:
        raise checkpoint.CheckpointError(
            f"{weights} does not match its source record {step_dir / SOURCE_FILE}: its sha256 is "
            f"{digest[:16]}..., the record says {recorded.sha256[:16]}... (stage 1 from {recorded.path}, "
            f"step {recorded.step}). The stored stage-1 weights were changed or damaged, and stage 2 "
            "was trained on the codes of the recorded ones: restore the checkpoint from a copy, or "
            "train stage 2 again"
        )
    stage = FrozenStage(loaded, recorded or Source(str(step_dir.resolve()), ckpt.step, digest))
    if key is not None:
        _loaded[key] = stage
    log.info("frozen stage 1 from %s (step %d, sha256 %s...)", step_dir, ckpt.step, digest[:12])
    return stage


def missing_checkpoint(option: str) -> str:
    return (f"{NAME} needs {option}=RUN: the stage-1 run directory, its checkpoints/ folder or one "
            "step_* directory (a run whose generator is Tokenizing)")


def _identity(step_dir: Path) -> tuple | None:
    """Which files a step directory holds (hard links to the same files are the same stage 1)."""
    try:
        names = [n for n in (*STORED_FILES, SOURCE_FILE) if (step_dir / n).exists()]
        stats = [os.stat(step_dir / name) for name in names]
    except OSError:
        return None
    return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def _step_dir(path: str | Path, step: int | None) -> Path:
    if step is None:
        return checkpoint.resolve(path)
    base = Path(path).expanduser()
    folder = base / "checkpoints" if (base / "checkpoints").is_dir() else base
    step_dir = folder / f"step_{step:06d}"
    if not step_dir.is_dir():
        have = sorted(p.name for p in folder.glob("step_*")) if folder.is_dir() else []
        raise checkpoint.CheckpointError(
            f"step={step}: {step_dir} does not exist (steps there: {', '.join(have) or 'none'})")
    return checkpoint.resolve(step_dir)


class FrozenEncoder:
    """Media -> ``(token_count,)`` int64 codes: stage 1's encoder, then its generator's tokenizer."""

    def __init__(self, stage: FrozenStage) -> None:
        self.stage = stage
        self.codebook_size = int(stage.generator.codebook_size)
        self.token_count = int(stage.generator.token_count)

    @torch.no_grad()
    def encode(self, media: Any) -> torch.Tensor:
        return self.encode_many([media])[0]

    @torch.no_grad()
    def encode_many(self, media: Sequence[Any], batch_size: int = ENCODE_BATCH) -> torch.Tensor:
        """``(N, token_count)`` codes of ``N`` items, tokenized ``batch_size`` at a time.

        Equal, code for code, to :meth:`encode` of each (tokenizing is batch-independent in
        eval mode, as :class:`~genloom.interfaces.Tokenizing` requires).
        """
        stage = self.stage
        out = []
        for start in range(0, len(media), batch_size):
            examples = torch.stack([stage.encoder.encode(m) for m in media[start:start + batch_size]])
            codes = stage.generator.tokenize(examples.to(stage.device))  # (b, token_count)
            out.append(codes.to("cpu", torch.long))
        if not out:
            return torch.zeros(0, self.token_count, dtype=torch.long)
        return torch.cat(out)


class FrozenDecoder:
    """``(token_count,)`` codes -> media: stage 1's detokenizer, then its decoder (and its ``write``)."""

    def __init__(self, stage: FrozenStage) -> None:
        self.stage = stage
        self.media_type = stage.decoder.media_type
        self.codebook_size = int(stage.generator.codebook_size)
        self.token_count = int(stage.generator.token_count)
        # Codes are integers in [0, K): the contract kit's value_range rule checks samples lie there.
        self.input_range = (0.0, float(self.codebook_size - 1))

    @torch.no_grad()
    def detokenize(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, token_count)`` codes -> ``(B, *shape)``, what stage 1's decoder reads."""
        if codes.dim() != 2 or codes.shape[1] != self.token_count:
            raise ValueError(
                f"decoder {NAME} reads {self.token_count} codes per example (the stage-1 generator's "
                f"token_count), got a tensor of shape {tuple(codes.shape)}"
            )
        if codes.is_floating_point() or (codes.numel() and not 0 <= int(codes.min()) <= int(codes.max())
                                         < self.codebook_size):
            raise ValueError(
                f"decoder {NAME} reads integer codes in [0, {self.codebook_size}); got "
                f"{codes.dtype} values in [{codes.min().item()}, {codes.max().item()}]"
            )
        stage = self.stage
        return stage.generator.detokenize(codes.to(stage.device, torch.long))

    def decode(self, tensor: torch.Tensor) -> Any:
        return self.stage.decoder.decode(self.detokenize(tensor[None])[0])

    def write(self, media: Sequence[Any], directory: Path) -> list[Path]:
        return self.stage.decoder.write(media, directory)


class FrozenComparisonDecoder(FrozenDecoder):
    """A frozen decoder whose stage-1 decoder lays originals beside reconstructions."""

    def write_comparison(self, originals: torch.Tensor, reconstructions: torch.Tensor,
                         directory: Path) -> list[Path]:
        return self.stage.decoder.write_comparison(
            self.detokenize(originals).cpu(), self.detokenize(reconstructions).cpu(), directory)


def encoder_from_checkpoint(*, checkpoint: str, step: int | None = None) -> FrozenEncoder:
    """``encoder=from_checkpoint``: a Tokenizing stage-1 run's encoder + tokenizer, frozen.

    ``checkpoint`` is a run directory, its checkpoints/ folder or one step directory (as
    ``genloom sample checkpoint=`` takes); ``step`` picks ``checkpoints/step_N`` of a run.
    """
    return FrozenEncoder(load_stage(checkpoint, step, option="encoder.checkpoint"))


def decoder_from_checkpoint(*, checkpoint: str, step: int | None = None) -> FrozenDecoder:
    """``decoder=from_checkpoint``: a Tokenizing stage-1 run's detokenizer + decoder, frozen."""
    stage = load_stage(checkpoint, step, option="decoder.checkpoint")
    cls = FrozenComparisonDecoder if isinstance(stage.decoder, ComparisonDecoder) else FrozenDecoder
    return cls(stage)


SIZES = ("codebook_size", "token_count")  # what ${frozen:KEY.SIZE} may read from a stage 1
_sized: FrozenStage | None = None  # the last stage sized: held, so that the build that follows reuses it


def size(query: str, root: DictConfig) -> int:
    """``${frozen:encoder.codebook_size}``: a size of the stage 1 that ``root``'s ``encoder`` reads.

    A stage-2 preset sizes its token model by it (``generator.media_vocab``,
    ``generator.media_tokens``) instead of repeating numbers that belong to stage 1, so one
    preset fits any stage 1 it is given. The stage is loaded (and cached) as the component
    itself will load it; a stage-2 checkpoint's config records the resolved number.
    """
    spelled = f"${{frozen:{query}}}"
    key, _, attribute = query.partition(".")
    if attribute not in SIZES:
        raise checkpoint.CheckpointError(
            f"{spelled}: a frozen stage 1 offers {' and '.join(SIZES)} (genloom.interfaces.Tokenizing), "
            f"not {attribute!r}; spell it ${{frozen:encoder.codebook_size}}"
        )
    node = root.get(key) if key in KEYS else None
    if not is_frozen_node(node):
        name = node.get("name") if isinstance(node, DictConfig) else None
        raise checkpoint.CheckpointError(
            f"{spelled}: {key} is {name!r}, not {NAME}; sizes are read from a component loaded from "
            f"a stage-1 checkpoint ({key}={NAME} {key}.checkpoint=RUN)"
        )
    option = f"{key}.checkpoint"
    if OmegaConf.is_missing(node, "checkpoint"):
        raise checkpoint.CheckpointError(missing_checkpoint(option))
    global _sized
    _sized = stage = load_stage(node.checkpoint, node.get("step"), option=option)
    return int(getattr(stage.generator, attribute))


def with_sizes(config: DictConfig, resume_from: Path | None) -> DictConfig:
    """``config`` with each ``${frozen:...}`` replaced by the number it reads.

    The numbers come from the stage 1 this run uses: when resuming, the copy stored in the
    checkpoint (the original may be gone or trained further); otherwise the one the config
    names. The result holds no ``frozen`` interpolation, so what a run saves records them.
    """
    keys = size_keys(OmegaConf.to_container(config, resolve=False))
    if not keys:
        return config
    source = config
    if resume_from is not None:
        check_resume(config, resume_from)
        source = bind(config, resume_from)
    sized = config.copy()
    for key in keys:
        OmegaConf.update(sized, key, OmegaConf.select(source, key, throw_on_missing=True))
    return sized


def size_keys(node: Any, key: str = "") -> list[str]:
    """The dotted keys under ``node`` (an unresolved container) whose value is a ``${frozen:...}``."""
    if isinstance(node, dict):
        return [k for name, value in node.items()
                for k in size_keys(value, f"{key}.{name}" if key else str(name))]
    return [key] if isinstance(node, str) and "${frozen:" in node else []


# -- pipelines and checkpoints -------------------------------------------------------------------


def is_frozen_node(node: Any) -> bool:
    return isinstance(node, DictConfig) and node.get("name") == NAME


def frozen_components(built: Pipeline) -> dict[str, FrozenStage]:
    """``{pipeline key: stage}`` of each frozen component of ``built``."""
    found = {}
    for key in KEYS:
        component = getattr(built, key, None)
        if isinstance(component, (FrozenEncoder, FrozenDecoder)):
            found[key] = component.stage
    return found


def check_pipeline(built: Pipeline) -> None:
    """The frozen encoder and decoder of one pipeline must be the same stage 1."""
    stages = frozen_components(built)
    encoder, decoder = stages.get("encoder"), stages.get("decoder")
    if encoder is not None and decoder is not None and encoder.source.sha256 != decoder.source.sha256:
        raise checkpoint.CheckpointError(
            f"encoder.checkpoint ({encoder.source.path}) and decoder.checkpoint ({decoder.source.path}) "
            "hold different stage-1 weights; the decoder must undo the encoder's codes "
            "(decoder=from_checkpoint reads ${encoder.checkpoint} unless you override it)"
        )


def place(built: Pipeline, device: torch.device) -> None:
    """Move every frozen stage of ``built`` to ``device`` (where the generator runs)."""
    for stage in frozen_components(built).values():
        stage.to(device)


def bind(config: DictConfig, step_dir: Path) -> DictConfig:
    """``config`` with each frozen component reading its copy stored in ``step_dir``.

    Whatever path a stage-2 checkpoint's config names (it keeps the user's, for the record),
    its frozen components are built from ``step_dir/frozen/<key>/`` alone: the original
    run may be gone, moved or trained further.
    """
    keys = [key for key in KEYS if is_frozen_node(config.get(key))]
    if not keys:
        return config
    bound = config.copy()
    for key in keys:
        stored = step_dir / FROZEN_DIR / key
        if stored.is_symlink():
            raise checkpoint.CheckpointError(
                f"{stored} is a symbolic link; a checkpoint's frozen copies are directories in it "
                "(a link out of the checkpoint is never followed)"
            )
        missing = [n for n in (*STORED_FILES, SOURCE_FILE) if not (stored / n).is_file()]
        if missing:
            raise checkpoint.CheckpointError(
                f"{step_dir / 'config.yaml'}: {key} is {NAME}, but {stored} lacks {', '.join(missing)}: "
                "the stored copy of its stage 1 is incomplete. Copy the whole step directory, or "
                "train stage 2 again"
            )
        OmegaConf.update(bound, f"{key}.checkpoint", str(stored), force_add=True)
        OmegaConf.update(bound, f"{key}.step", None, force_add=True)
    return bound


def stored_sources(step_dir: Path) -> dict[str, Source]:
    """``{key: source record}`` of the frozen copies a checkpoint stores."""
    folder = step_dir / FROZEN_DIR
    return {key: read_source(folder / key) for key in KEYS if (folder / key / SOURCE_FILE).is_file()}


def check_resume(config: DictConfig, step_dir: Path) -> None:
    """On resume the checkpoint's stored stage 1 wins; a user path to other weights is an error.

    A path that no longer exists is fine (the stored copy is used); one holding weights
    other than those stage 2 was trained on would silently change what its codes mean.
    """
    for key, source in stored_sources(step_dir).items():
        node = config.get(key)
        if not is_frozen_node(node) or OmegaConf.is_missing(node, "checkpoint"):
            continue
        try:
            given = _step_dir(node.checkpoint, node.get("step"))
        except checkpoint.CheckpointError:
            log.info("%s.checkpoint=%s is gone; resuming with the stage 1 stored in %s",
                     key, node.checkpoint, step_dir)
            continue
        digest = sha256(given / "model.safetensors")
        if digest != source.sha256:
            raise checkpoint.CheckpointError(
                f"{key}.checkpoint={node.checkpoint} holds other stage-1 weights (sha256 {digest[:16]}...) "
                f"than the run being resumed was trained on ({source.sha256[:16]}..., from {source.path} "
                f"step {source.step}, stored in {step_dir / FROZEN_DIR / key}). A resumed run keeps its "
                f"frozen stage 1: give the original {key}.checkpoint, or train stage 2 afresh in a new "
                "run directory"
            )


def stage_copies(built: Pipeline, run_dir: Path) -> dict[str, Path]:
    """Copy each frozen stage 1 into ``run_dir/frozen/<key>/`` once; every checkpoint links it.

    Checkpoints store these copies rather than the paths the stages were read from: those
    may be pruned (a stage-2 checkpoint read on resume), trained further or deleted while
    stage 2 trains. A copy is checked against the sha256 the stage was loaded with.
    """
    copies: dict[str, Path] = {}
    for key, stage in frozen_components(built).items():
        dest = run_dir / FROZEN_DIR / key
        if not _holds(dest, stage.source):
            same = [copies[k] for k, other in frozen_components(built).items()
                    if k in copies and other.source == stage.source]
            _copy_stage(stage, dest, link_from=same[0] if same else None)
        copies[key] = dest
    return copies


def _holds(dest: Path, source: Source) -> bool:
    try:
        return read_source(dest) == source and sha256(dest / "model.safetensors") == source.sha256
    except (checkpoint.CheckpointError, OSError):
        return False


def _copy_stage(stage: FrozenStage, dest: Path, link_from: Path | None = None) -> None:
    """Copy the stage's files into ``dest`` (hard links to ``link_from``, a copy of the same stage)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if link_from is None:
            raise OSError("nothing to link")
        for name in (*STORED_FILES, SOURCE_FILE):
            os.link(link_from / name, tmp / name)
    except OSError:
        for name in STORED_FILES:
            (tmp / name).unlink(missing_ok=True)
            shutil.copyfile(stage.files / name, tmp / name)
        (tmp / SOURCE_FILE).unlink(missing_ok=True)
        (tmp / SOURCE_FILE).write_text(json.dumps(stage.source.as_dict(), indent=2))
    if sha256(tmp / "model.safetensors") != stage.source.sha256:
        shutil.rmtree(tmp, ignore_errors=True)
        raise checkpoint.CheckpointError(
            f"{stage.files / 'model.safetensors'} changed while stage 2 was starting (its sha256 is no "
            "longer the one loaded); is stage 1 still training there? Point encoder.checkpoint at a "
            "finished step directory"
        )
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def read_source(directory: Path) -> Source:
    """The source record of a stored frozen copy, checked field by field."""
    path = directory / SOURCE_FILE
    try:
        data = json.loads(checkpoint.read_text(path, SOURCE_LIMIT))
    except ValueError as err:
        raise checkpoint.CheckpointError(f"{path} is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise checkpoint.CheckpointError(f"{path} must hold a JSON object with path, step and sha256")
    path_, step, digest = data.get("path"), data.get("step"), data.get("sha256")
    if not (isinstance(path_, str) and isinstance(step, int) and not isinstance(step, bool)
            and isinstance(digest, str) and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)):
        raise checkpoint.CheckpointError(
            f"{path} is damaged: it needs path (a string), step (a whole number) and sha256 "
            "(64 hex digits)"
        )
    return Source(path_, step, digest)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
