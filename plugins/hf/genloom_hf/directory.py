"""A local Hugging Face model directory: found, checked and fingerprinted before anything loads.

Loading is local and safe only: ``config.json`` plus ``*.safetensors`` weights. Nothing is
downloaded (a hub id is refused with the command that downloads it first) and nothing is
unpickled (a directory holding only ``pytorch_model.bin`` is refused). The fingerprint of a
directory is the SHA-256 of its safetensors files, which a checkpoint records to say which
base weights it was trained from.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

PICKLE_WEIGHTS = (
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "model.ckpt.index",
    "flax_model.msgpack",
)
# owner/name or a bare name, as the hub spells model ids (gpt2, meta-llama/Llama-3.2-1B)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
CHUNK = 1 << 20


def model_directory(path: str, *, key: str) -> Path:
    """The directory ``path`` names, checked to hold a config and safetensors weights.

    ``key`` is the config key the path came from (``generator.path``), named in every error.
    """
    directory = _existing_directory(path, key=key)
    if not (directory / "config.json").is_file():
        raise ValueError(
            f"{key}={path!r} holds no config.json, so it is not a Hugging Face model directory; "
            "give the folder that `hf download ... --local-dir DIR` wrote"
        )
    if not weight_files(directory):
        pickled = [name for name in PICKLE_WEIGHTS if (directory / name).exists()]
        if pickled:
            raise ValueError(
                f"{key}={path!r} holds its weights only as {', '.join(pickled)}, a pickle (loading it "
                "can run arbitrary code), and genloom loads safetensors only. Download the "
                "safetensors files instead (`hf download MODEL_ID --include '*.safetensors' "
                f"--local-dir {path}`; many repositories have them, some on the refs/pr/ branch "
                "the hub's conversion bot opened), or convert them once where you trust the file"
            )
        raise ValueError(f"{key}={path!r} holds no *.safetensors weights; download them into it first")
    return directory


def tokenizer_file(path: str, *, key: str) -> Path:
    """The ``tokenizer.json`` of the directory ``path`` names."""
    directory = _existing_directory(path, key=key)
    file = directory / "tokenizer.json"
    if not file.is_file():
        raise ValueError(
            f"{key}={path!r} holds no tokenizer.json (the `tokenizers` library's file); only "
            "tokenizers saved in that format load (a model directory from the hub usually has it)"
        )
    return file


def weight_files(directory: Path) -> list[Path]:
    """The directory's safetensors files, in name order."""
    return sorted(directory.glob("*.safetensors"))


def weights_sha256(directory: Path) -> bytes:
    """SHA-256 over the names and contents of the directory's safetensors files."""
    digest = hashlib.sha256()
    for file in weight_files(directory):
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    return digest.digest()


def read_json(file: Path) -> dict[str, Any]:
    """A JSON object from ``file``, or ``{}`` when there is no such file."""
    if not file.is_file():
        return {}
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from None
    return value if isinstance(value, dict) else {}


def _existing_directory(path: str, *, key: str) -> Path:
    directory = Path(path).expanduser()
    if directory.is_dir():
        return directory
    if directory.exists():
        raise ValueError(f"{key}={path!r} is a file; give the model's directory")
    if HUB_ID.match(str(path)) and not str(path).startswith("."):
        raise ValueError(
            f"{key}={path!r} is not a local directory. genloom never downloads at run time; if it is a "
            f"model id on the Hugging Face hub, download it once and pass the directory:\n"
            f"    hf download {path} --local-dir models/{path.split('/')[-1]}\n"
            "or in Python: huggingface_hub.snapshot_download("
            f"{path!r}, local_dir='models/{path.split('/')[-1]}')\n"
            f"then give that directory: {key}=models/{path.split('/')[-1]} (the hf_text presets take it "
            "once, as generator.path, which encoder.path and decoder.path follow)"
        )
    raise ValueError(
        f"{key}={path!r} does not exist; give a local model directory (a checkpoint rebuilds its model "
        "and tokenizer from the directory it was trained from: to sample, serve or export it, put that "
        "directory back at this path)"
    )
