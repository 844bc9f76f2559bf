"""Finding plugins, loading them safely, and describing what they provide.

Every plugin, the built-in ones included, is named by an entry point in the ``genloom``
group. A plugin whose code raises while it is imported or registers (``SystemExit``
included; ``KeyboardInterrupt`` is let through) is *quarantined*: it is left out, every
command keeps working, and ``genloom plugins`` shows it as broken with its error.

A component name or config option that several plugins provide belongs to none of them,
independently of the order plugins are found in (see :meth:`PluginSet.clashes`); each
keeps its other registrations.

Environment:

* ``GENLOOM_STRICT_PLUGINS=1`` makes a broken plugin or a clash fatal;
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
from genloom.registry import Registry, RegistryError, check_entry, clash_remedy

ENTRY_POINT_GROUP = "genloom"
log = logging.getLogger(__name__)


class PluginLoadError(RuntimeError):
    """A plugin could not be loaded (or clashed with another) while ``GENLOOM_STRICT_PLUGINS=1``.

    ``plugin_set`` holds what did load, so that ``genloom plugins`` can still report it.
    """

    def __init__(self, message: str, plugin_set: PluginSet | None = None) -> None:
        super().__init__(message)
        self.plugin_set = plugin_set


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
    clashes: list[str] = field(default_factory=list)
    """Messages about names this plugin and another both provide (neither gets them)."""

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
    strict: bool = False
    hook_names: dict[str, PluginInfo] = field(default_factory=dict, repr=False)
    """The name each loaded plugin is registered under with pluggy -> its report."""
    _owners: dict[tuple[str, str], list[tuple[PluginInfo, str]]] | None = field(default=None, repr=False)

    @property
    def config_modules(self) -> list[str]:
        return [m for p in self.plugins if p.status == "ok" for m in p.config_modules]

    def clashes(self) -> list[Clash]:
        """Every component name and config option that several plugins provide.

        Such a name belongs to none of them, whichever order the plugins were found in:
        building the component, or composing a config that chooses the option, fails with
        the clash's message. The plugins' other registrations are unaffected.
        """
        ok = [p for p in self.plugins if p.status == "ok"]
        found = []
        for (kind, name), claims in self.registry.clashes().items():
            claimants = {(e.plugin, e.distribution) for e in claims}
            found.append(Clash(f"{kind} {name!r}", self.registry.clash_message(kind, name),
                               [p for p in ok if (p.name, p.distribution) in claimants]))
        for (group, option), owners in sorted(self._config_owners().items()):
            if len(owners) > 1:
                message = self.config_clash(group, option)
                assert message is not None
                found.append(Clash(f"config option {group}={option}", message,
                                   [p for p in ok if any(p is o for o, _ in owners)]))
        return found

    def config_clash(self, group: str, option: str) -> str | None:
        """Why ``group=option`` cannot be composed (several plugins ship it), or None if it can."""
        owners = sorted(self._config_owners().get((group, option), []),
                        key=lambda owner: (owner[0].name, owner[0].distribution or "", owner[1]))
        if len(owners) < 2:
            return None
        described = [f"{p.name!r} ({_distribution(p) + ', ' if p.distribution else ''}{module})"
                     for p, module in owners]
        return (
            f"config option {group}={option} is shipped by {len(owners)} plugins, so genloom uses "
            f"{'neither' if len(owners) == 2 else 'none of them'}: {', '.join(described[:-1])} and "
            f"{described[-1]}. {clash_remedy((p.name, p.distribution) for p, _ in owners)}"
        )

    def _config_owners(self) -> dict[tuple[str, str], list[tuple[PluginInfo, str]]]:
        if self._owners is None:
            self._owners = {}
            for p in self.plugins:
                for module in p.config_modules if p.status == "ok" else []:
                    for group, options in config_groups(module).items():
                        for option in options:
                            self._owners.setdefault((group, option), []).append((p, module))
        return self._owners

    @property
    def events(self) -> EventRelay:
        """Runtime events (``events.genloom_train_step_end(step=..., metrics=...)``), plugin by plugin.

        A plugin whose event hook raises, ``SystemExit`` included, is quarantined for the
        rest of the run with an error in the log, and the others still receive the event;
        in strict mode the failure is fatal (:class:`PluginLoadError`).
        """
        return EventRelay(self)

    def versions(self) -> dict[str, str | None]:
        """Distribution -> version of every plugin in use (recorded in checkpoints)."""
        return {
            (p.distribution or p.name): p.version for p in self.plugins if p.status == "ok"
        }


class EventRelay:
    """What :attr:`PluginSet.events` returns: pluggy's hook relay, with each plugin called on its own."""

    def __init__(self, plugin_set: PluginSet) -> None:
        self._plugin_set = plugin_set

    def implemented(self, hook: str, run: Any = None) -> bool:
        """Whether any plugin still in the run implements ``hook`` (the trainer skips the rest).

        With ``run`` (a :class:`genloom.trainer.TrainingRun`), a plugin that declined the hook
        for that run (:meth:`~genloom.trainer.TrainingRun.decline`) does not count.
        """
        declined = run.declined.get(hook, ()) if run is not None else ()
        return any(self._name(impl.plugin_name) not in declined
                   for impl in getattr(self._plugin_set.manager.hook, hook).get_hookimpls())

    def _name(self, hook_name: str) -> str:
        """A plugin's name as ``run.state`` keys it (pluggy's own for one registered directly)."""
        info = self._plugin_set.hook_names.get(hook_name)
        return info.name if info else hook_name

    def __getattr__(self, hook: str) -> Any:
        manager = self._plugin_set.manager
        caller = getattr(manager.hook, hook)

        def call(**kwargs: Any) -> None:
            implementing = {impl.plugin_name: impl.plugin for impl in reversed(caller.get_hookimpls())}
            run = kwargs.get("run")  # a TrainingRun: its state and stop requests are per plugin
            for hook_name, plugin in implementing.items():  # pluggy's order: last registered first
                others = [p for p in manager.get_plugins() if p is not plugin]
                if run is not None:  # a plugin registered with pluggy directly goes by pluggy's name
                    run.plugin = self._name(hook_name)
                    if run.plugin in run.declined.get(hook, ()):
                        continue
                try:
                    manager.subset_hook_caller(hook, remove_plugins=others)(**kwargs)
                except KeyboardInterrupt:
                    raise
                except BaseException as err:  # noqa: BLE001 - one plugin's failure must not end the run
                    self._quarantine(hook_name, hook, err)

        return call

    def _quarantine(self, hook_name: str, hook: str, err: BaseException) -> None:
        info = self._plugin_set.hook_names[hook_name]
        info.status, info.error = "broken", f"in {hook}: {describe_failure(err)}"
        message = f"plugin {info.name!r} failed in {hook} ({describe_failure(err)})"
        if self._plugin_set.strict:
            raise PluginLoadError(f"{message}; fatal because GENLOOM_STRICT_PLUGINS is set") from err
        self._plugin_set.manager.unregister(name=hook_name)
        log.error("%s and is quarantined for the rest of this run", message)


@dataclass
class Clash:
    """A component name or config option that several plugins provide, so that none of them has it."""

    subject: str  # "generator 'bigram'", "config option pipeline=text_debug"
    message: str  # who provides it and what to do
    plugins: list[PluginInfo]


def _distribution(p: PluginInfo) -> str:
    return " ".join(part for part in (p.distribution, p.version) if part)


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
    """Load plugins (by default every installed entry point) and fill a fresh registry.

    Whatever a plugin's code raises while it loads, ``SystemExit`` included, quarantines
    that plugin alone; only ``KeyboardInterrupt`` goes through. A plugin's registrations
    reach the registry only once it has loaded completely, so quarantining one never
    touches another's. In strict mode, any broken plugin or clash raises
    :class:`PluginLoadError` once every plugin has been tried.
    """
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
    failures = []
    hook_names: dict[str, PluginInfo] = {}
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
            hook_name, components = _load_one(source, info, manager)
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - a plugin must neither take the platform down nor exit it
            info.status, info.error = "broken", describe_failure(err)
            info.components, info.config_modules, info.config_groups, info.hooks = {}, [], {}, []
            failures.append(f"plugin {source.name!r} ({source.module}) failed to load: {info.error}")
            if not strict:  # (strict mode reports every problem at once, below)
                log.warning(
                    "plugin %r is quarantined (%s); `genloom plugins` shows details, "
                    "GENLOOM_STRICT_PLUGINS=1 makes this fatal",
                    source.name,
                    info.error,
                )
            continue
        hook_names[hook_name] = info
        for kind, name, target, summary in components:
            registry.add(kind, name, target, plugin=source.name, summary=summary,
                         distribution=source.distribution, version=source.version)
    plugin_set = PluginSet(manager, registry, infos, strict, hook_names)
    clashes = plugin_set.clashes()
    for clash in clashes:
        if not strict:
            log.warning(
                "%s is provided by plugins %s, so none of them gets it; `genloom plugins --check` says more",
                clash.subject, " and ".join(repr(p.name) for p in clash.plugins),
            )
        for info in clash.plugins:
            info.clashes.append(clash.message)
    problems = failures + [clash.message for clash in clashes]
    if strict and problems:
        raise PluginLoadError(
            "; ".join(problems) + " (fatal because GENLOOM_STRICT_PLUGINS is set; unset it to carry on "
            "without what is broken)",
            plugin_set,
        )
    return plugin_set


def describe_failure(err: BaseException) -> str:
    """What a plugin's code raised, in one line: ``"SystemExit: the plugin called sys.exit(3)"``."""
    if isinstance(err, SystemExit):
        code = "" if err.code is None else repr(err.code)
        return f"SystemExit: the plugin called sys.exit({code})"
    return f"{type(err).__name__}: {err}"


def _load_one(
    source: PluginSource, info: PluginInfo, manager: pluggy.PluginManager
) -> tuple[str, list[tuple[str, str, str, str]]]:
    """Import one plugin and run its registration hooks: its name with pluggy, what it registered."""
    start = time.perf_counter()
    plugin = source.load()
    info.import_seconds = time.perf_counter() - start
    if manager.is_registered(plugin):
        raise PluginLoadError(
            f"its hook module {source.module} is already loaded by another plugin; "
            "two entry points name the same module"
        )
    # Two distributions may use the same entry-point name: pluggy's name must still be unique.
    base = f"{source.distribution}:{source.name}" if source.distribution else source.name
    hook_name, copies = base, 1
    while manager.has_plugin(hook_name):
        copies += 1
        hook_name = f"{base}#{copies}"
    manager.register(plugin, name=hook_name)
    components: list[tuple[str, str, str, str]] = []

    def register_component(kind: str, name: str, target: str, summary: str = "") -> None:
        check_entry(kind, name, target, plugin=source.name)
        components.append((kind, name, target, summary))
        info.components.setdefault(kind, []).append(name)

    def register_config(module: str) -> None:
        info.config_groups.update(config_groups(module))
        info.config_modules.append(module)

    try:
        info.hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [])
        caller = manager.subset_hook_caller
        others = [p for p in manager.get_plugins() if p is not plugin]
        caller("genloom_register_components", others)(register=register_component)
        caller("genloom_register_config", others)(register=register_config)
    except BaseException:
        manager.unregister(name=hook_name)
        raise
    return hook_name, components


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
