"""A pipeline: ``dataset -> encoder -> generator -> decoder``, built from config by name.

This is the one boundary where config becomes objects. Each component's config node is
``{name: <registry name>, ...keyword arguments}``; the registry builds it. Components are
only ever built from registry names, never from an import path found in a config, so a
checkpoint from a stranger cannot make genloom import their code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genloom.interfaces import Dataset, Decoder, Encoder, Generator
from genloom.registry import Registry, RegistryError

COMPONENTS = ("dataset", "encoder", "generator", "decoder")


@dataclass
class Pipeline:
    encoder: Encoder
    generator: Generator
    decoder: Decoder
    dataset: Dataset | None = None
    condition_encoder: Encoder | None = None

    @property
    def prompt_encoder(self) -> Encoder:
        """What turns a user's prompt into the generator's condition."""
        return self.condition_encoder or self.encoder


def component_spec(config: DictConfig, key: str) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of the component configured under ``config[key]``."""
    node = config.get(key)
    if node is None:
        raise RegistryError(
            f"the config has no {key!r}; choose one with {key}=<option> or a pipeline=<preset> "
            "(`genloom plugins` lists what is installed)"
        )
    options = OmegaConf.to_container(node, resolve=True)
    if not isinstance(options, dict) or "name" not in options:
        raise RegistryError(f"config key {key!r} must be a mapping with a 'name', got {options!r}")
    if any(k.startswith("_") for k in options):
        raise RegistryError(
            f"config key {key!r} has {[k for k in options if k.startswith('_')]}: genloom builds "
            "components by registry name only (no _target_ imports)"
        )
    return str(options.pop("name")), options


def build(config: DictConfig, registry: Registry, *, with_dataset: bool = True) -> Pipeline:
    """Build every component the config names."""
    keys = COMPONENTS if with_dataset else COMPONENTS[1:]
    built = {}
    for key in keys:
        name, options = component_spec(config, key)
        built[key] = registry.build(key, name, options)
    if config.get("condition_encoder") is not None:
        name, options = component_spec(config, "condition_encoder")
        built["condition_encoder"] = registry.build("encoder", name, options)
    return Pipeline(**built)


def component_names(config: DictConfig) -> dict[str, str]:
    """``{"generator": "transformer", ...}`` for logs and run records."""
    return {
        key: str(config[key]["name"])
        for key in (*COMPONENTS, "condition_encoder")
        if config.get(key) is not None
    }
