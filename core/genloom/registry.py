"""The component registry: ``(kind, name) -> factory``, filled by plugins, built lazily.

Entries hold an import path, not an object, so listing what is installed imports no model
code (and no torch). A factory is imported the first time a component is built from it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from genloom.interfaces import KINDS, kind_protocol


class RegistryError(LookupError):
    """A component could not be registered or built; the message says what to do."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    target: str
    plugin: str
    summary: str = ""
    distribution: str | None = None
    version: str | None = None

    def owner(self) -> str:
        """``'text' (genloom-text 0.1.0, genloom_text.model:Transformer)``: who provides it, for messages."""
        dist = " ".join(p for p in (self.distribution, self.version) if p)
        return f"{self.plugin!r} ({dist + ', ' if dist else ''}{self.target})"


class Registry:
    """Entries by ``(kind, name)``. A name two plugins claim belongs to neither (see :meth:`add`)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        self._claims: dict[tuple[str, str], list[Entry]] = {}

    def add(
        self, kind: str, name: str, target: str, *, plugin: str, summary: str = "",
        distribution: str | None = None, version: str | None = None,
    ) -> None:
        """Record that ``plugin`` provides ``kind``/``name``.

        A name claimed more than once is given to none of its claimants, whatever order the
        plugins load in; building it fails with a message naming all of them. Nothing else a
        claimant registered is affected.
        """
        check_entry(kind, name, target, plugin=plugin)
        claims = self._claims.setdefault((kind, name), [])
        claims.append(Entry(kind, name, target, plugin, summary, distribution, version))
        if len(claims) == 1:
            self._entries[(kind, name)] = claims[0]
        else:
            self._entries.pop((kind, name), None)

    def clashes(self) -> dict[tuple[str, str], list[Entry]]:
        """``(kind, name)`` -> claimants, for each name several plugins registered (none of them has it)."""
        return {key: claims for key, claims in sorted(self._claims.items()) if len(claims) > 1}

    def _clashing(self, kind: str, name: str) -> bool:
        return len(self._claims.get((kind, name), [])) > 1

    def clash_message(self, kind: str, name: str) -> str:
        claims = sorted(self._claims[(kind, name)], key=lambda e: (e.plugin, e.distribution or ""))
        owners = ", ".join(e.owner() for e in claims[:-1]) + f" and {claims[-1].owner()}"
        remedy = clash_remedy((e.plugin, e.distribution) for e in claims)
        return (
            f"{kind} {name!r} is registered by {len(claims)} plugins, so genloom uses "
            f"{'neither' if len(claims) == 2 else 'none of them'}: {owners}. {remedy}"
        )

    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self._entries if k == kind)

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: (e.kind, e.name)))

    def entry(self, kind: str, name: str) -> Entry:
        try:
            return self._entries[(kind, name)]
        except KeyError:
            if self._clashing(kind, name):
                raise RegistryError(self.clash_message(kind, name)) from None
            available = ", ".join(self.names(kind)) or "none (is the plugin installed?)"
            raise RegistryError(
                f"no {kind} named {name!r}; available {kind}s: {available}. "
                "Run `genloom plugins` to see what each installed plugin provides."
            ) from None

    def factory(self, kind: str, name: str) -> Callable[..., Any]:
        entry = self.entry(kind, name)
        module_name, _, attr = entry.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr)
        except (ImportError, AttributeError) as err:
            raise RegistryError(
                f"{kind} {name!r} from plugin {entry.plugin!r} points at {entry.target!r}, "
                f"which cannot be imported: {err}"
            ) from err
        except (Exception, SystemExit) as err:  # the plugin's module is broken, not genloom
            raise RegistryError(
                f"{kind} {name!r} from plugin {entry.plugin!r} points at {entry.target!r}, "
                f"whose import raised {type(err).__name__}: {err}"
            ) from err

    def build(self, kind: str, name: str, options: Mapping[str, Any] | None = None) -> Any:
        """Build ``kind``/``name`` from flat keyword options and check what comes back."""
        factory = self.factory(kind, name)
        options = dict(options or {})
        check_options(factory, options, where=f"{kind} {name!r}", prefix=f"{kind}.")
        component = factory(**options)
        protocol = kind_protocol(kind)
        if not isinstance(component, protocol):
            missing = [m for m in _protocol_members(protocol) if not hasattr(component, m)]
            raise RegistryError(
                f"{kind} {name!r} ({self.entry(kind, name).target}) built a "
                f"{type(component).__name__}, which is not a {protocol.__name__}: "
                f"it lacks {', '.join(missing)}"
            )
        return component


def check_entry(kind: str, name: str, target: str, *, plugin: str) -> None:
    """Reject a registration of an unknown kind or whose target is not an import path."""
    if kind not in KINDS:
        raise RegistryError(
            f"plugin {plugin!r} registers {name!r} as unknown kind {kind!r}; kinds are: {', '.join(KINDS)}"
        )
    if not isinstance(target, str) or ":" not in target:
        raise RegistryError(
            f"plugin {plugin!r} registers {kind} {name!r} with target {target!r}; "
            "a target is an import path 'package.module:factory'"
        )


def clash_remedy(claimants: Iterable[tuple[str, str | None]]) -> str:
    """What to do about a name several plugins provide, given their ``(plugin, distribution)``."""
    names = dict.fromkeys(distribution or plugin for plugin, distribution in claimants)
    return "Uninstall all but one, or disable the others: " + " or ".join(
        f"GENLOOM_DISABLE_PLUGINS={n}" for n in names)


def check_options(
    factory: Callable[..., Any], options: Mapping[str, Any], *, where: str, prefix: str = ""
) -> None:
    """Reject option names ``factory`` does not take, listing those it does."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise RegistryError(
            f"{where} has no option {', '.join(prefix + u for u in unknown)}; "
            f"it takes: {', '.join(prefix + a for a in accepted) or 'no options'}"
        )
    required = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    missing = [n for n in required if n not in options]
    if missing:
        raise RegistryError(f"{where} needs {', '.join(prefix + m for m in missing)}")


def _protocol_members(protocol: type) -> list[str]:
    return sorted(
        name
        for name in {**vars(protocol), **getattr(protocol, "__annotations__", {})}
        if not name.startswith("_")
    )
