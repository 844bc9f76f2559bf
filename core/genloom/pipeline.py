"""A pipeline: ``dataset -> encoder -> generator -> decoder``, built from config by name.

This is the one boundary where config becomes objects. Each component's config node is
``{name: <registry name>, ...keyword arguments}``; the registry builds it. Components are
only ever built from registry names, never from an import path found in a config, so a
checkpoint from a stranger cannot make genloom import their code: Hydra's instantiation
keys (``_target_`` and its companions) are refused wherever they appear in a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genloom.interfaces import Dataset, Decoder, Encoder, Generator
from genloom.registry import Registry, RegistryError, UnknownOption

COMPONENTS = ("dataset", "encoder", "generator", "decoder")
# Hydra's `instantiate` keys: genloom never instantiates, so none belongs in its config.
INSTANTIATION_KEYS = ("_target_", "_recursive_", "_args_", "_partial_", "_convert_")


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


def refuse_instantiation(config: DictConfig) -> None:
    """Refuse ``_target_`` (and its companions) anywhere in ``config``, however deep.

    A ``_target_`` nested in an option value would reach a factory as a plain dict, and one
    elsewhere would lie in wait for whatever instantiates the config: neither belongs here.
    """
    found = _instantiation_keys(OmegaConf.to_container(config, resolve=False), "")
    if found:
        raise RegistryError(
            f"config key {found[0]} is a Hydra instantiation key: genloom builds components by "
            f"registry name only (no {'/'.join(INSTANTIATION_KEYS)} anywhere in a config)"
        )


def _instantiation_keys(node: Any, key: str) -> list[str]:
    found = []
    if isinstance(node, dict):
        for k, value in node.items():
            here = f"{key}.{k}" if key else str(k)
            if k in INSTANTIATION_KEYS:
                found.append(here)
            found += _instantiation_keys(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _instantiation_keys(value, f"{key}[{i}]")
    return found


def build(config: DictConfig, registry: Registry, *, with_dataset: bool = True) -> Pipeline:
    """Build every component the config names."""
    refuse_instantiation(config)
    keys = COMPONENTS if with_dataset else COMPONENTS[1:]
    built = {}
    specs = [(key, key) for key in keys]
    if config.get("condition_encoder") is not None:
        specs.append(("condition_encoder", "encoder"))
    for key, kind in specs:
        name, options = component_spec(config, key)
        try:
            built[key] = registry.build(kind, name, options)
        except UnknownOption as err:
            raise UnknownOption(f"{err}{_preset_hint(config)}") from None
    return Pipeline(**built)


def _preset_hint(config: DictConfig) -> str:
    """A preset's settings fit the components it chose; say so when one was swapped."""
    preset = OmegaConf.select(config, "pipeline.name")
    if preset is None:
        return ""
    return (
        f". pipeline={preset} sets options for the components it chooses; if you replaced one "
        "on the command line (dataset=..., generator=...), pick a preset made for it instead "
        "(`genloom plugins` lists them)"
    )


def component_names(config: DictConfig) -> dict[str, str]:
    """``{"generator": "transformer", ...}`` for logs and run records."""
    return {
        key: str(config[key]["name"])
        for key in (*COMPONENTS, "condition_encoder")
        if config.get(key) is not None
    }
