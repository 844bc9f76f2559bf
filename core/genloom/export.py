"""``genloom export``: a checkpoint's generator written in another tool's format.

The pipeline is rebuilt through :func:`genloom.sampler.load`, the one safe path by which every
command opens a checkpoint; the generator then writes itself
(:class:`genloom.interfaces.Exporting`), with the pipeline's encoder at hand for a tokenizer
file. The core knows no format: it checks that the generator offers the one asked for, and
owns the directory. A directory that exists and holds anything is refused, never
overwritten; the export is written into a temporary directory beside ``out`` and renamed
into place once complete, so a failure (a refused option, a full disk) leaves nothing behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genloom.interfaces import Exporting
from genloom.sampler import LoadedModel


def export(model: LoadedModel, *, format: str, out: Path, options: Mapping[str, Any]) -> list[Path]:
    """Write ``model``'s generator into the new directory ``out`` in ``format``; return its files.

    Raises ``ValueError`` with what to do when the generator cannot export, does not offer
    ``format``, refuses an option, or when ``out`` is not free.
    """
    generator = model.pipeline.generator
    name = model.checkpoint.config.generator.name
    if not isinstance(generator, Exporting):
        raise ValueError(
            f"the generator of {model.checkpoint.path} ({name!r}) cannot be exported: it writes no "
            "other tool's format (it does not implement genloom.interfaces.Exporting)"
        )
    if format not in generator.export_formats:
        raise ValueError(
            f"generator {name!r} cannot export format={format!r}; it writes: "
            f"{', '.join(generator.export_formats) or 'nothing'}. Choose one with format=..."
        )
    refuse_occupied(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Made with mkdir, not mkdtemp, so that the directory gets the user's usual permissions.
    staging = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        written = generator.export(staging, format=format, encoder=model.pipeline.encoder, **options)
        refuse_occupied(out)  # a directory filled meanwhile is still not ours to replace
        if out.exists():
            out.rmdir()  # empty (just checked): the complete export takes its place
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / Path(path).relative_to(staging) for path in written]


def refuse_occupied(out: Path) -> None:
    """Raise ``ValueError`` unless ``out`` is free: absent, or an empty directory."""
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ValueError(
                f"out={out} already holds {len(entries)} entries ({shown}); genloom export never "
                "overwrites files: give a new directory (or an empty one)"
            )
    elif out.exists():
        raise ValueError(f"out={out} is a file; give a new directory (or an empty one)")
