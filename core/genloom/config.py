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

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.importlib_resources_config_source import ImportlibResourcesConfigSource
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException
from hydra.plugins.config_source import ConfigResult
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig, OmegaConf

from genloom.plugins import active


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


def unknown_key_hint(command: str, overrides: list[str]) -> str | None:
    """After Hydra rejected an override, say which keys exist where the user mistyped one.

    Hydra names the unknown key but not the ones available; this composes the config with
    the user's group choices only and, for the first ``a.b.key=value`` whose key does not
    exist, lists the keys under ``a.b`` with the closest match first.
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
    for override in overrides:
        key = override.partition("=")[0]
        skip = override.startswith(("+", "~", "-")) or override in groups or key in plugin_groups
        if skip or "=" not in override or key.startswith("hydra"):
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf in node:
            continue
        where = parent or "the top level"
        keys = sorted(str(k) for k in node)
        close = difflib.get_close_matches(leaf, keys, n=1)
        guess = f"; did you mean {(parent + '.' if parent else '') + close[0]}?" if close else ""
        return f"genloom: {where} has no key {leaf!r}{guess} Keys there: {', '.join(keys)}"
    return None


def _is_group_choice(override: str) -> bool:
    key = override.partition("=")[0].lstrip("+~")
    return "=" in override and "." not in key and "," not in override and not key.startswith("hydra")
