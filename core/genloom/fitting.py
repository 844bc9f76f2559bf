"""Encoders fitted on the training split (a trained BPE), and their state in each checkpoint.

An encoder that is :class:`~genloom.interfaces.Fitting` learns from data before training:
``genloom train`` calls :func:`fit` once, after the pipeline is built and before the splits
are encoded, on what the dataset's :meth:`~genloom.interfaces.FittingMedia.fitting_media`
gives (the training split's media only). What it learnt is JSON text, which the trainer writes
into every checkpoint directory as ``tokenizer.json`` (:data:`FITTED_FILE`). Every later load of
that checkpoint (``sample``, ``eval``, ``serve``, and a resumed ``train``) calls :func:`restore`
instead: the state comes from the checkpoint alone, so a resumed run never fits again and a
deleted training corpus does not matter for sampling.

The file is a stranger's like every other file of a checkpoint: it is read as a regular file
within a size bound, must parse as a JSON object, and is handed to the component as text;
whatever it holds ends in one :class:`~genloom.checkpoint.CheckpointError` naming it.

Nothing here knows a modality: the encoder decides what its media and its state are.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from genloom import checkpoint
from genloom.interfaces import FittedDecoder, Fitting, FittingMedia

if TYPE_CHECKING:
    from genloom.pipeline import Pipeline

log = logging.getLogger(__name__)

FITTED_FILE = "tokenizer.json"
FITTED_LIMIT = 256 << 20  # a BPE of 100k tokens is a few MiB; far below this


def is_fitting(built: Pipeline) -> bool:
    """Whether the pipeline's encoder learns from the training split."""
    return isinstance(built.encoder, Fitting)


def fit(built: Pipeline) -> None:
    """Fit the pipeline's encoder on its dataset's training media; share the state with its decoder.

    A no-op for an encoder that is not :class:`~genloom.interfaces.Fitting`.
    """
    _refuse_fitting_condition_encoder(built)
    if not is_fitting(built):
        return
    encoder = built.encoder
    if not isinstance(built.dataset, FittingMedia):
        raise ValueError(
            f"encoder {type(encoder).__name__} learns from the training data, but dataset "
            f"{type(built.dataset).__name__} cannot hand it its training split's media "
            "(genloom.interfaces.FittingMedia); choose a dataset that can, or another encoder"
        )
    start = time.perf_counter()
    encoder.fit(built.dataset.fitting_media())
    log.info("fitted encoder %s on the training split in %.1f s (vocabulary of %d)",
             type(encoder).__name__, time.perf_counter() - start, encoder.vocab_size)
    _share(built, encoder.fitted_state(), where="the fitted encoder's state")


def state(built: Pipeline) -> str | None:
    """The fitted encoder's state, JSON text for :data:`FITTED_FILE`; None when nothing was fitted."""
    return built.encoder.fitted_state() if is_fitting(built) else None


def restore(built: Pipeline, step_dir: Path) -> None:
    """Give the encoder (and decoder) the state stored in ``step_dir/tokenizer.json``.

    A no-op for a pipeline with no fitting encoder. A missing, oversized, non-JSON or
    unusable file is a :class:`~genloom.checkpoint.CheckpointError` naming it.
    """
    _refuse_fitting_condition_encoder(built)
    if not is_fitting(built):
        return
    path = step_dir / FITTED_FILE
    if not path.exists():
        raise checkpoint.CheckpointError(
            f"{path} is missing: encoder {type(built.encoder).__name__} was fitted on the training "
            "data and its state is stored there; the checkpoint is incomplete (use another one, "
            "or train afresh)"
        )
    text = checkpoint.read_text(path, FITTED_LIMIT)
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise checkpoint.CheckpointError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(parsed, dict):
        raise checkpoint.CheckpointError(f"{path} must hold a JSON object, not {type(parsed).__name__}")
    try:
        built.encoder.load_fitted(text)
        _share(built, text, where=str(path))
    except ValueError as err:
        raise checkpoint.CheckpointError(f"{path} cannot be used: {err}") from None


def check_vocabulary(built: Pipeline, generator_vocab: int | None) -> None:
    """Refuse a generator whose vocabulary is smaller than the fitted encoder's ids."""
    if not is_fitting(built) or generator_vocab is None:
        return
    if generator_vocab < built.encoder.vocab_size:
        raise ValueError(
            f"generator.vocab_size={generator_vocab} is smaller than the {built.encoder.vocab_size} "
            f"token ids encoder {type(built.encoder).__name__} emits; set "
            "generator.vocab_size=${encoder.vocab_size} (as the presets for this encoder do) or a "
            "larger number"
        )


def _share(built: Pipeline, text: str, *, where: str) -> None:
    """The decoder (and a pipeline's other readers of the vocabulary) get the encoder's state."""
    if isinstance(built.decoder, FittedDecoder):
        built.decoder.load_fitted(text)
    else:
        log.debug("decoder %s does not read %s", type(built.decoder).__name__, where)


def _refuse_fitting_condition_encoder(built: Pipeline) -> None:
    if isinstance(built.condition_encoder, Fitting):
        raise ValueError(
            f"condition_encoder {type(built.condition_encoder).__name__} learns from the training "
            "data, which genloom does only for the pipeline's encoder; use it as encoder=, or a "
            "condition encoder that needs no fitting"
        )

