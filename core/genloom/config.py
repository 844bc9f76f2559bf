"""Hydra glue: every installed plugin's config package joins the config search path.

Hydra composes ``conf/`` (genloom's own primary configs and ``trainer`` group) with the
packages plugins register through ``genloom_register_config``, so installing a plugin
adds its ``generator=...``, ``dataset=...`` and ``pipeline=...`` choices.

Hydra alone would take an option two packages ship (``pipeline/text_debug.yaml``) from
whichever comes first on the search path, silently. Plugin packages are therefore read
through :class:`PluginConfigSource`, which refuses such an option the moment a
composition loads it, with a message naming both plugins; options nobody else ships
compose as usual.
"""

from __future__ import annotations

import difflib
import inspect
from importlib import resources
from typing import NamedTuple

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.importlib_resources_config_source import ImportlibResourcesConfigSource
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException
from hydra.plugins.config_source import ConfigResult
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig, OmegaConf

from genloom.plugins import active

# Config nodes that the registry builds: their keys are the keyword arguments of a factory.
COMPONENT_KINDS = {"dataset": "dataset", "encoder": "encoder", "generator": "generator",
                   "decoder": "decoder", "condition_encoder": "encoder"}


def _frozen_size(query: str, *, _root_: DictConfig) -> int:
    from genloom import frozen  # torch: only when a config asks for a stage-1 size

    return frozen.size(query, _root_)


# ${frozen:encoder.codebook_size}: a stage-2 preset's sizes, read from its stage 1 (genloom.frozen.size).
OmegaConf.register_new_resolver("frozen", _frozen_size, replace=True)


class PluginConfigSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        Plugins.instance().register(PluginConfigSource)  # before Hydra reads the path it is on
        for plugin in active().plugins:
            if plugin.status != "ok":
                continue
            for module in plugin.config_modules:
                search_path.append(
                    provider=f"genloom-plugin:{plugin.name}", path=f"{PluginConfigSource.scheme()}://{module}"
                )


class PluginConfigSource(ImportlibResourcesConfigSource):
    """A plugin's config package (``genloom://genloom_text.conf``), as Hydra's ``pkg://`` reads it,
    except that an option another plugin ships as well is refused instead of shadowed.

    (Hydra's ``pkg://`` source lives in ``hydra._internal``; a config source is otherwise a
    public Hydra plugin type. ``tests/test_cli.py`` composes through it, so a Hydra release
    that moves it fails there first.)
    """

    @staticmethod
    def scheme() -> str:
        return "genloom"

    def load_config(self, config_path: str) -> ConfigResult:
        group, _, option = config_path.removesuffix(".yaml").rpartition("/")
        clash = active().config_clash(group, option) if group else None
        if clash:
            raise ConfigCompositionException(clash)  # Hydra prints it as one message
        return super().load_config(config_path)


def command_overrides(command: str, overrides: list[str]) -> list[str]:
    """The overrides as Hydra should read them, for the keys ``sample``, ``export`` and ``eval`` route.

    ``genloom sample``: a top-level key that conf/sample.yaml does not have (``steps=50``,
    ``+temperature=0``) is an option of the generator's ``generate``; it moves under
    ``options``, where the sampler checks it against that signature, so a misspelt one is
    an error rather than a key nobody reads. ``genloom export`` routes its own the same way
    (``merge=true``), to the generator's ``export``, which refuses one it does not take.
    ``genloom eval``: ``dataset=<option>`` and ``dataset.<key>=<value>`` (with or without
    ``+``) replace or amend the checkpoint's dataset, which conf/eval.yaml does not hold.
    Everything else passes unchanged, so ``-m`` sweeps work on sampling options too.
    """
    if command not in ("sample", "eval", "export"):
        return overrides
    own = _primary_keys(command)
    routed = []
    for override in overrides:
        plus = len(override) - len(override.lstrip("+"))
        key, eq, value = override[plus:].partition("=")
        top = key.split(".")[0]
        if override.startswith(("-", "~")) or not eq or top.startswith("hydra") or not key:
            routed.append(override)
        elif command in ("sample", "export") and top not in own:
            routed.append(f"++options.{key}={value}")
        elif command in ("sample", "export") and top == "options" and key != "options":
            routed.append(f"++{key}={value}")
        elif command == "eval" and key == "dataset":
            routed.append(f"+dataset={value}")
        elif command == "eval" and top == "dataset":
            routed.append(f"++{key}={value}")
        else:
            routed.append(override)
    return routed


def _primary_keys(command: str) -> set[str]:
    text = resources.files("genloom.conf").joinpath(f"{command}.yaml").read_text()
    return {str(k) for k in OmegaConf.create(text)} - {"defaults", "hydra"}


class KeyHint(NamedTuple):
    """What to tell a user whose override names a key the config does not have."""

    key: str
    message: str


def unknown_key_hint(command: str, overrides: list[str]) -> KeyHint | None:
    """After Hydra rejected an override, say which keys exist where the user mistyped one.

    Hydra names the unknown key and advises ``+key=value``, which in genloom only works for
    a component option its config file leaves out. This composes the config with the
    user's group choices only and, for the first ``a.b.key=value`` whose key does not
    exist, either lists the keys under ``a.b`` with the closest match first, or (for a
    keyword argument of the component's factory) says to add it with ``+``.
    """
    # Keep the group choices that compose (``seeed=1`` looks like one but is a typo).
    groups: list[str] = []
    with initialize_config_module("genloom.conf", version_base=None):
        for override in filter(_is_group_choice, overrides):
            try:
                compose(command, overrides=[*groups, override])
                groups.append(override)
            except Exception:  # noqa: S112 - a wrong choice: Hydra reported it already
                continue
        try:
            cfg = compose(command, overrides=groups)
        except Exception:  # e.g. a mandatory group is missing: Hydra said so already
            return None
    plugin_groups = {group for p in active().plugins for group in p.config_groups}  # a choice, not a key
    empty_groups = _default_groups(command) - plugin_groups - {str(k) for k in cfg}
    for override in overrides:
        key = override.partition("=")[0]
        if key.lstrip("+") in empty_groups:
            group = key.lstrip("+")
            return KeyHint(key, f"genloom: {override}: no installed plugin offers {group} options; "
                                f"`genloom plugins` lists the installed ones and their config groups")
        skip = override.startswith(("+", "~", "-")) or override in groups or key in plugin_groups
        if skip or "=" not in override or key.startswith("hydra"):
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf in node:
            continue
        if parent in COMPONENT_KINDS and "name" in node:
            return KeyHint(key, _component_option_hint(parent, str(node.name), leaf, override))
        where = parent or "the top level"
        keys = sorted(str(k) for k in node)
        close = difflib.get_close_matches(leaf, keys, n=1)
        guess = f"; did you mean {(parent + '.' if parent else '') + close[0]}?" if close else ""
        return KeyHint(key, f"genloom: {where} has no key {leaf!r}{guess} Keys there: {', '.join(keys)}")
    return None


def _component_option_hint(parent: str, name: str, leaf: str, override: str) -> str:
    """A key its config file leaves out may still be an option of the component's factory."""
    try:
        params = inspect.signature(active().registry.factory(COMPONENT_KINDS[parent], name)).parameters
    except Exception:  # noqa: BLE001 - an unknown or broken component: the build reports it
        return f"genloom: {parent} has no key {leaf!r}"
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    if leaf in accepted:
        return (f"genloom: {parent} {name!r} takes {leaf}, which its config file leaves out; "
                f"add it with +{override}")
    close = difflib.get_close_matches(leaf, accepted, n=1)
    guess = f"; did you mean {parent}.{close[0]}?" if close else ""
    return (f"genloom: {parent} {name!r} has no option {parent}.{leaf}{guess} "
            f"It takes: {', '.join(parent + '.' + a for a in accepted) or 'no options'}")


def _default_groups(command: str) -> set[str]:
    """The config groups ``conf/<command>.yaml``'s defaults list names (``trainer``, ``logger``...)."""
    text = resources.files("genloom.conf").joinpath(f"{command}.yaml").read_text()
    entries = OmegaConf.create(text).get("defaults", [])
    return {str(key) for entry in entries if isinstance(entry, DictConfig) for key in entry
            if not str(key).startswith("override ")}


def _is_group_choice(override: str) -> bool:
    key = override.partition("=")[0].lstrip("+~")
    return "=" in override and "." not in key and "," not in override and not key.startswith("hydra")
