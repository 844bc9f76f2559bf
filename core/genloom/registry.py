"""The component registry: ``(kind, name) -> factory``, filled by plugins, built lazily.

Entries hold an import path, not an object, so listing what is installed imports no model
code (and no torch). A factory is imported the first time a component is built from it.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import os
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal, Union

from genloom.interfaces import KINDS, kind_protocol


class RegistryError(LookupError):
    """A component could not be registered or built; the message says what to do."""


class UnknownOption(RegistryError):
    """A component's config sets options its factory does not take."""


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
    """Reject options ``factory`` does not take, or whose values its annotations exclude.

    Values come from YAML or the command line, so an ``int`` is taken for a ``float`` and a
    list for a tuple or sequence. Not checked: an annotation genloom does not know (a class
    of the plugin's own), and a value not known yet (raw YAML's ``${...}`` or ``???``).
    """
    params = inspect.signature(factory).parameters
    hints = _annotations(factory)
    for name, value in options.items():
        if isinstance(value, str) and ("${" in value or value == "???"):
            continue
        if name in hints and (expected := _expected(value, hints[name])) is not None:
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise RegistryError(
                f"{prefix}{name}={shown}: expected {expected} "
                f"({where} declares {name}: {inspect.formatannotation(hints[name])})"
            )
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UnknownOption(
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


def _annotations(factory: Callable[..., Any]) -> dict[str, Any]:
    """The parameter annotations of ``factory`` (a class: its ``__init__``), evaluated."""
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - one unresolvable name must not cost the others their check
        namespace = getattr(inspect.unwrap(target), "__globals__", {})
        hints = {}
        for name, annotation in getattr(target, "__annotations__", {}).items():
            try:  # the plugin's own annotation text, as typing.get_type_hints evaluates it
                hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307
            except Exception:  # noqa: BLE001, S112 - left unchecked
                continue
        return hints


_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _expected(value: Any, hint: Any) -> str | None:
    """What ``hint`` asks for, when ``value`` is not that; ``None`` when it fits."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return None
    if hint is None or hint is type(None):
        return None if value is None else "null"
    if origin is Union or origin is types.UnionType:
        wanted = [_expected(value, arm) for arm in args]
        return None if None in wanted else " or ".join(dict.fromkeys(w for w in wanted if w))
    if origin is Literal:
        if any(value == choice and type(value) is type(choice) for choice in args):
            return None
        return "one of " + ", ".join(repr(choice) for choice in args)
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if hint in (PurePath, os.PathLike) or (isinstance(hint, type) and issubclass(hint, PurePath)):
        return None if isinstance(value, (str, PurePath)) else "a path"
    if hint in _SEQUENCES or origin in _SEQUENCES:
        return _expected_sequence(value, origin or hint, args)
    if hint in _MAPPINGS or origin in _MAPPINGS:
        if not isinstance(value, Mapping):
            return "a mapping"
        if len(args) == 2 and any(_expected(k, args[0]) or _expected(v, args[1]) for k, v in value.items()):
            return f"a mapping of {_plural(args[0])} to {_plural(args[1])}"
        return None
    return None  # a class genloom does not know: the factory judges


def _expected_sequence(value: Any, origin: Any, args: tuple[Any, ...]) -> str | None:
    if not isinstance(value, (list, tuple)):
        return "a list"
    if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[int, str]: fixed length
        if len(value) != len(args) or any(_expected(v, a) for v, a in zip(value, args, strict=False)):
            return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
        return None
    if args and any(_expected(v, args[0]) for v in value):
        return f"a list of {_plural(args[0])}"
    return None


def _describe(hint: Any) -> str:
    """``int`` -> "an integer" (no value fits ``object()``, so it tells what is wanted)."""
    return _expected(object(), hint) or inspect.formatannotation(hint)


def _plural(hint: Any) -> str:
    """``int`` -> "integers", for "a list of integers"."""
    described = _describe(hint)
    words = {"an integer": "integers", "a number": "numbers", "a string": "strings",
             "true or false": "booleans", "a list": "lists", "a mapping": "mappings", "a path": "paths"}
    return words.get(described, described)


def _protocol_members(protocol: type) -> list[str]:
    return sorted(
        name
        for name in {**vars(protocol), **getattr(protocol, "__annotations__", {})}
        if not name.startswith("_")
    )
