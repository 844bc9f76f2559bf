"""``genloom plugins --check``: a doctor's report on every installed plugin.

Unlike the plain listing, the check imports each component's target (so it loads torch
and model code) to prove that what a plugin registered can be built, whatever that import
raises, and it reports clashes between plugins: a component name registered twice, or a
config option two plugins ship under the same group and name. Such a name belongs to
neither plugin (see :meth:`genloom.plugins.PluginSet.clashes`).
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
    components: dict[tuple[str, str | None], list[ComponentCheck]] = field(default_factory=dict)
    """By plugin: (entry-point name, distribution)."""
    clashes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = [f"plugin {p.name!r} is {p.status}: {p.error}" for p in self.plugin_set.plugins
                 if p.status == "broken"]
        found += [f"{c.kind} {c.name!r} of plugin {plugin!r} does not import: {c.error}"
                  for (plugin, _), checks in self.components.items() for c in checks if c.error]
        return found + self.clashes

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
