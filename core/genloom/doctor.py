"""``genloom plugins --check``: a doctor's report on every installed plugin.

Unlike the plain listing, the check imports each component's target (so it loads torch
and model code) to prove that what a plugin registered can be built, and it looks for
clashes between plugins: a component name registered twice (the second plugin is
quarantined, with an error naming both) and a config option two plugins ship under the
same group and name (Hydra would silently use the first on its search path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import genloom
from genloom.plugins import PluginSet
from genloom.registry import RegistryError


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
    components: dict[str, list[ComponentCheck]] = field(default_factory=dict)  # by plugin
    config_clashes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = [f"plugin {p.name!r} is {p.status}: {p.error}" for p in self.plugin_set.plugins
                 if p.status == "broken"]
        found += [f"{c.kind} {c.name!r} of plugin {plugin!r} does not import: {c.error}"
                  for plugin, checks in self.components.items() for c in checks if c.error]
        return found + self.config_clashes

    def as_dict(self) -> dict[str, Any]:
        plugins = []
        for p in self.plugin_set.plugins:
            entry = p.as_dict()
            entry["component_checks"] = [vars(c) for c in self.components.get(p.name, [])]
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
            error = str(err.__cause__ or err)
        report.components.setdefault(entry.plugin, []).append(
            ComponentCheck(entry.kind, entry.name, entry.target, time.perf_counter() - start, error)
        )
    owners: dict[tuple[str, str], list[str]] = {}
    for p in plugin_set.plugins:
        for group, options in p.config_groups.items():
            for option in options:
                owners.setdefault((group, option), []).append(p.name)
    report.config_clashes = [
        f"config option {group}={option} is shipped by plugins {', '.join(map(repr, names))}; "
        f"Hydra uses {names[0]!r}'s. Rename one, or disable a plugin with GENLOOM_DISABLE_PLUGINS"
        for (group, option), names in sorted(owners.items()) if len(names) > 1
    ]
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
        checks = report.components.get(p.name, [])
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
