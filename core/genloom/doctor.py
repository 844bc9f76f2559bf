"""``genloom plugins --check``: a doctor's report on every installed plugin.

Unlike the plain listing, the check imports each component's target (so it loads torch
and model code) to prove that what a plugin registered can be built, whatever that import
raises, and it reports clashes between plugins: a component name registered twice, or a
config option two plugins ship under the same group and name. Such a name belongs to
neither plugin (see :meth:`genloom.plugins.PluginSet.clashes`). It also composes every
config option of every plugin with Hydra, as ``genloom train`` would, and names the plugin
a preset needs but cannot find (a disabled one, or a distribution the plugin requires that
is not installed).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import genloom
from genloom import plugins
from genloom.plugins import PluginInfo, PluginSet, PluginSource, load_plugins
from genloom.registry import RegistryError

if TYPE_CHECKING:
    from omegaconf import DictConfig


@dataclass
class ComponentCheck:
    kind: str
    name: str
    target: str
    import_seconds: float
    error: str | None = None


@dataclass
class Report:
    plugin_set: PluginSet
    components: dict[tuple[str, str | None], list[ComponentCheck]] = field(default_factory=dict)
    """By plugin: (entry-point name, distribution)."""
    clashes: list[str] = field(default_factory=list)
    compose_failures: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = [f"plugin {p.name!r} is {p.status}: {p.error}" for p in self.plugin_set.plugins
                 if p.status == "broken"]
        found += [f"{c.kind} {c.name!r} of plugin {plugin!r} does not import: {c.error}"
                  for (plugin, _), checks in self.components.items() for c in checks if c.error]
        return found + self.clashes + self.compose_failures

    def as_dict(self) -> dict[str, Any]:
        plugins = []
        for p in self.plugin_set.plugins:
            entry = p.as_dict()
            entry["component_checks"] = [vars(c) for c in self.components.get((p.name, p.distribution), [])]
            plugins.append(entry)
        return {"genloom": genloom.__version__, "plugins": plugins, "problems": self.problems}


def check(plugin_set: PluginSet) -> Report:
    report = Report(plugin_set)
    for entry in plugin_set.registry:
        start = time.perf_counter()
        error = None
        try:
            plugin_set.registry.factory(entry.kind, entry.name)
        except RegistryError as err:
            cause = err.__cause__ or err
            error = f"{type(cause).__name__}: {cause}"
        report.components.setdefault((entry.plugin, entry.distribution), []).append(
            ComponentCheck(entry.kind, entry.name, entry.target, time.perf_counter() - start, error)
        )
    report.clashes = [clash.message for clash in plugin_set.clashes()]
    report.compose_failures = compose_failures(plugin_set)
    return report


def describe(report: Report) -> str:
    lines = [f"genloom {genloom.__version__}: checking {len(report.plugin_set.plugins)} plugin(s)", ""]
    for p in report.plugin_set.plugins:
        dist = f"{p.distribution} {p.version}" if p.distribution else p.module
        lines.append(f"{p.name} ({dist}): {p.status}")
        if p.error:
            lines.append(f"  error:         {p.error}")
        lines.append(f"  requires:      genloom {p.requires or '(any version)'}")
        if p.status == "ok":
            lines.append(f"  hook module:   {p.module}, imported in {p.import_seconds * 1e3:.0f} ms")
            lines.append(f"  hooks:         {', '.join(p.hooks) or 'none'}")
        checks = report.components.get((p.name, p.distribution), [])
        if checks:
            lines.append("  components (import times add up: the first to import torch pays for it):")
            for c in checks:
                status = f"error: {c.error}" if c.error else f"ok, {c.import_seconds * 1e3:.0f} ms"
                lines.append(f"    {c.kind:9} {c.name:16} {c.target}  ({status})")
        if p.config_groups:
            lines.append("  config groups:")
            lines += [f"    {group + '=':18} {', '.join(options)}"
                      for group, options in p.config_groups.items()]
        lines.append("")
    problems = report.problems
    if problems:
        lines.append(f"{len(problems)} problem(s):")
        lines += [f"  - {problem}" for problem in problems]
    else:
        lines.append("no problems found")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- composing


@contextlib.contextmanager
def composing(plugin_set: PluginSet, config_name: str = "train") -> Iterator[Callable[..., DictConfig]]:
    """Hydra set up once with ``plugin_set``'s config packages; yields ``compose(overrides)``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins

    from genloom.config import PluginConfigSearchPath

    Plugins.instance().register(PluginConfigSearchPath)
    GlobalHydra.instance().clear()
    previous = plugins._active
    plugins.set_active(plugin_set)

    def compose_with(overrides: Sequence[str], *, return_hydra_config: bool = False) -> DictConfig:
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)

    try:
        with initialize_config_module("genloom.conf", version_base=None):
            yield compose_with
    finally:
        plugins.set_active(previous)
        GlobalHydra.instance().clear()


def compose(plugin_set: PluginSet, overrides: Sequence[str], config_name: str = "train", *,
            return_hydra_config: bool = False) -> DictConfig:
    """Compose a genloom config with ``plugin_set``'s config packages, as ``genloom train`` would.

    ``return_hydra_config`` keeps the ``hydra`` node (``hydra.runtime.choices`` says which
    option of each group was chosen).
    """
    with composing(plugin_set, config_name) as compose_with:
        return compose_with(overrides, return_hydra_config=return_hydra_config)


def option_overrides(group: str, option: str, base_pipeline: str | None = None) -> list[list[str]]:
    """The overrides to try, in order, to compose one group option.

    A preset composes alone; another group's option joins ``base_pipeline`` (or the bare
    ``train`` config), as a replacement where the base selects that group, else appended.
    """
    if group == "pipeline":
        return [[f"pipeline={option}"]]
    base = [f"pipeline={base_pipeline}"] if base_pipeline else []
    return [[*base, f"{group}={option}"], [*base, f"+{group}={option}"]]


def compose_option(plugin_set: PluginSet, group: str, option: str, base_pipeline: str | None = None,
                   compose_with: Callable[..., DictConfig] | None = None) -> DictConfig:
    """Compose ``group=option``; raise the first attempt's error when none composes.

    ``compose_with`` is a :func:`composing` context's function, to set Hydra up only once.
    """
    error: Exception | None = None
    for overrides in option_overrides(group, option, base_pipeline):
        try:
            if compose_with is None:
                return compose(plugin_set, overrides)
            return compose_with(overrides)
        except Exception as err:  # noqa: PERF203 - Hydra's errors differ by cause; keep the first
            error = error or err
    assert error is not None
    raise error


def missing_option(error: BaseException) -> tuple[str, str] | None:
    """``(group, option)`` when Hydra failed because a config option it needed is not there."""
    from hydra.errors import MissingConfigException

    missing = getattr(error, "missing_cfg_file", None)
    if not isinstance(error, MissingConfigException) or not missing or "/" not in missing:
        return None
    group, _, option = missing.strip("/").rpartition("/")
    return group, option


def compose_error(error: BaseException) -> str:
    """Hydra's error in one line (its messages list the search path after the first)."""
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def providers(group: str, option: str, sources: Iterable[PluginSource]) -> list[PluginInfo]:
    """The plugins among ``sources`` whose config packages ship ``group/option``.

    Each is loaded alone (its hook module only, which the contract keeps light), whatever
    ``GENLOOM_DISABLE_PLUGINS`` says; one that does not load ships nothing.
    """
    found = []
    for source in sources:
        (info,) = load_plugins([source], strict=False, disabled=()).plugins
        if info.status == "ok" and option in info.config_groups.get(group, []):
            found.append(info)
    return found


def source_of(info: PluginInfo) -> PluginSource:
    """How to load a plugin again from what :class:`PluginInfo` recorded about it."""
    module, _, attr = info.module.partition(":")

    def load() -> Any:
        loaded = importlib.import_module(module)
        return getattr(loaded, attr) if attr else loaded

    return PluginSource(info.name, load, info.module, info.distribution, info.version, info.requires)


def compose_failures(plugin_set: PluginSet) -> list[str]:
    """Every config option of every loaded plugin that does not compose, and what it lacks."""
    failed: list[tuple[PluginInfo, str, str, Exception]] = []
    with composing(plugin_set) as compose_with:
        for info, group, option in _shipped_options(plugin_set):
            try:
                compose_option(plugin_set, group, option, compose_with=compose_with)
            except Exception as err:  # noqa: PERF203 - a plugin's config may fail in any way Hydra can
                failed.append((info, group, option, err))
    failures = []
    for info, group, option, err in failed:  # outside Hydra's context: finding who ships loads plugins
        where = f"config {group}={option} of plugin {info.name!r}"
        missing = missing_option(err)
        if missing is None:
            failures.append(f"{where} does not compose: {compose_error(err)}")
        else:
            group_needed, option_needed = missing
            failures.append(f"{where} needs {group_needed}={option_needed}, "
                            + _whereabouts(plugin_set, info, group_needed, option_needed))
    return failures


def _shipped_options(plugin_set: PluginSet) -> Iterator[tuple[PluginInfo, str, str]]:
    for info in plugin_set.plugins:
        if info.status != "ok":
            continue
        for group, options in info.config_groups.items():
            for option in options:
                yield info, group, option


def _whereabouts(plugin_set: PluginSet, needed_by: PluginInfo, group: str, option: str) -> str:
    """Where the missing ``group=option`` would come from, and what to do about it."""
    off = [p for p in plugin_set.plugins if p.status in ("disabled", "broken")]
    shipping = providers(group, option, [source_of(p) for p in off if p.status == "disabled"])
    if shipping:
        name = shipping[0].name
        return (f"which plugin {name!r} ships, but {name!r} is disabled "
                "(GENLOOM_DISABLE_PLUGINS): enable it, or leave this option unused")
    broken = [p.name for p in off if p.status == "broken"]
    missing = _missing_requirements(needed_by)
    if missing:
        return (f"which no loaded plugin ships; {needed_by.distribution} requires "
                f"{', '.join(missing)}, which is not installed: pip install {' '.join(missing)}")
    maybe = f" (perhaps the broken plugin {', '.join(map(repr, broken))})" if broken else ""
    owner = needed_by.distribution or needed_by.name
    return (f"which no loaded plugin ships{maybe}: install or enable the plugin that ships "
            f"{group}/{option}.yaml, and declare it as a dependency of {owner}")


def _missing_requirements(info: PluginInfo) -> list[str]:
    """The distributions ``info``'s distribution requires that are not installed."""
    from packaging.requirements import InvalidRequirement, Requirement

    if not info.distribution:
        return []
    try:
        requirements = importlib.metadata.requires(info.distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    missing = []
    for line in requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(req.name)
    return missing
