"""Finding plugins, loading them safely, and describing what they provide.

Every plugin, the built-in ones included, is named by an entry point in the ``genloom``
group. A plugin that fails to import or to register is *quarantined*: it is left out,
every command keeps working, and ``genloom plugins`` shows it as broken with its error.

Environment:

* ``GENLOOM_STRICT_PLUGINS=1`` makes a broken plugin fatal;
* ``GENLOOM_DISABLE_PLUGINS=a,b`` skips plugins by entry-point or distribution name.

A plugin's distribution declares the core versions it supports the way pip reads them, as
a requirement on ``genloom`` (``dependencies = ["genloom>=0.1,<0.2"]``). A plugin whose
range excludes the running core is quarantined before it is imported.

Nothing here imports torch or a plugin's model code.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet

import genloom
from genloom import hookspecs
from genloom.registry import Registry, RegistryError

ENTRY_POINT_GROUP = "genloom"
log = logging.getLogger(__name__)


class PluginLoadError(RuntimeError):
    """A plugin could not be loaded while ``GENLOOM_STRICT_PLUGINS=1``."""


class IncompatiblePlugin(RuntimeError):
    """A plugin declares a genloom version range that excludes the running core."""


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    requires: str | None = None
    status: str = "ok"  # ok | broken | disabled
    error: str | None = None
    import_seconds: float = 0.0
    hooks: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)
    config_modules: list[str] = field(default_factory=list)
    config_groups: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class PluginSource:
    """One plugin to load: a name and how to get its module or object."""

    name: str
    load: Any  # () -> module/object
    module: str
    distribution: str | None = None
    version: str | None = None
    requires: str | None = None
    """The genloom versions the plugin supports, as a specifier: ``">=0.1,<0.2"``."""


@dataclass
class PluginSet:
    """The loaded plugins: the hook caller, the registry they filled, and their reports."""

    manager: pluggy.PluginManager
    registry: Registry
    plugins: list[PluginInfo]

    @property
    def config_modules(self) -> list[str]:
        return [m for p in self.plugins if p.status == "ok" for m in p.config_modules]

    def versions(self) -> dict[str, str | None]:
        """Distribution -> version of every plugin in use (recorded in checkpoints)."""
        return {
            (p.distribution or p.name): p.version for p in self.plugins if p.status == "ok"
        }


def entry_point_sources() -> list[PluginSource]:
    sources = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        sources.append(
            PluginSource(
                name=ep.name,
                load=ep.load,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
                requires=core_requirement(dist.requires or []) if dist else None,
            )
        )
    return sorted(sources, key=lambda s: s.name)


def core_requirement(requirements: Iterable[str]) -> str | None:
    """The specifier a distribution's ``Requires-Dist`` puts on genloom, if any."""
    for line in requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.name.lower() == "genloom" and not req.marker:
            return str(req.specifier) or None
    return None


def incompatibility(source: PluginSource, core_version: str = genloom.__version__) -> str | None:
    """Why ``source`` cannot run on this core, or None when it can."""
    if not source.requires:
        return None
    try:
        supported = SpecifierSet(source.requires)
    except ValueError:
        return f"it declares an unreadable genloom requirement {source.requires!r}"
    if supported.contains(core_version, prereleases=True):
        return None
    dist = f"{source.distribution} {source.version}" if source.distribution else source.name
    return (
        f"{dist} supports genloom {source.requires}, but this is genloom {core_version}; "
        f"install a release of {source.distribution or source.name} made for genloom {core_version}, "
        "or a genloom in the supported range"
    )


def load_plugins(
    sources: Iterable[PluginSource] | None = None,
    *,
    strict: bool | None = None,
    disabled: Iterable[str] | None = None,
) -> PluginSet:
    """Load plugins (by default every installed entry point) and fill a fresh registry."""
    if sources is None:
        sources = entry_point_sources()
    if strict is None:
        strict = os.environ.get("GENLOOM_STRICT_PLUGINS", "") not in ("", "0", "false")
    if disabled is None:
        disabled = [
            n.strip() for n in os.environ.get("GENLOOM_DISABLE_PLUGINS", "").split(",") if n.strip()
        ]
    disabled = set(disabled)

    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    infos = []
    for source in sources:
        info = PluginInfo(
            name=source.name,
            module=source.module,
            distribution=source.distribution,
            version=source.version,
            requires=source.requires,
        )
        infos.append(info)
        if source.name in disabled or source.distribution in disabled:
            info.status = "disabled"
            continue
        try:
            problem = incompatibility(source)
            if problem:
                raise IncompatiblePlugin(problem)
            _load_one(source, info, manager, registry)
        except Exception as err:  # a broken plugin must not take the platform down
            info.status = "broken"
            info.error = f"{type(err).__name__}: {err}"
            info.components, info.config_modules, info.config_groups, info.hooks = {}, [], {}, []
            registry.remove_plugin(source.name)
            if manager.has_plugin(source.name):
                manager.unregister(name=source.name)
            if strict:
                raise PluginLoadError(
                    f"plugin {source.name!r} ({source.module}) failed to load: {info.error}"
                ) from err
            log.warning(
                "plugin %r is quarantined (%s); `genloom plugins` shows details, "
                "GENLOOM_STRICT_PLUGINS=1 makes this fatal",
                source.name,
                info.error,
            )
    return PluginSet(manager, registry, infos)


def _load_one(
    source: PluginSource, info: PluginInfo, manager: pluggy.PluginManager, registry: Registry
) -> None:
    start = time.perf_counter()
    plugin = source.load()
    info.import_seconds = time.perf_counter() - start
    manager.register(plugin, name=source.name)

    def register_component(kind: str, name: str, target: str, summary: str = "") -> None:
        registry.add(kind, name, target, plugin=source.name, summary=summary)
        info.components.setdefault(kind, []).append(name)

    def register_config(module: str) -> None:
        info.config_groups.update(config_groups(module))
        info.config_modules.append(module)

    info.hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [])
    caller = manager.subset_hook_caller
    others = [p for p in manager.get_plugins() if p is not plugin]
    caller("genloom_register_components", others)(register=register_component)
    caller("genloom_register_config", others)(register=register_config)


def config_groups(module: str) -> dict[str, list[str]]:
    """Group -> options found in a config package, for example ``{"generator": ["gpt"]}``."""
    try:
        root = importlib.resources.files(module)
    except ModuleNotFoundError as err:
        raise RegistryError(f"config package {module!r} cannot be imported: {err}") from err
    groups: dict[str, list[str]] = {}

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir() and not child.name.startswith(("_", ".")):
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".yaml") and prefix:
                groups.setdefault(prefix.rstrip("/"), []).append(child.name[: -len(".yaml")])

    walk(root, "")
    return {g: sorted(opts) for g, opts in sorted(groups.items())}


_active: PluginSet | None = None


def active() -> PluginSet:
    """The process's plugin set, loaded on first use."""
    global _active
    if _active is None:
        _active = load_plugins()
    return _active


def set_active(plugin_set: PluginSet | None) -> None:
    """Replace the process's plugin set (tests use this to install fakes)."""
    global _active
    _active = plugin_set
