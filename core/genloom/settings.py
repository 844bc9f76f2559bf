"""Typed settings from config: a dataclass's annotations say what each key may hold.

Hydra hands values over as the user typed them (``trainer.max_steps=1.5`` is a float,
``=abc`` a string), so every settings dataclass checks its fields against its own
annotations: an ``int`` is an integer (not 1.5, not ``true``), a ``float`` is a number
(an integer is accepted and converted), a ``bool`` is ``true`` or ``false``, a
``tuple[float, float]`` a list of two numbers; ``X | None`` also accepts null. A wrong
value or an unknown key is one :class:`SettingsError` that names the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is unknown or holds a value of the wrong type; the message names the key."""


def from_mapping(cls: type[T], values: Mapping[str, Any], *, where: str, source: str = "") -> T:
    """Build the settings dataclass ``cls`` from ``values`` (the config node at ``where``).

    Unknown keys are an error that suggests the closest known one; ``source`` says where
    the node's keys were set, for that message. Field types are checked by ``cls`` itself
    (its ``__post_init__`` calls :func:`check_types`).
    """
    known = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SettingsError(unknown_key_message(where, str(unknown[0]), known) + source)
    missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.init and f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SettingsError(f"{_key(where, missing[0])} must be set")
    return cls(**values)


def unknown_key_message(where: str, key: str, known: list[str]) -> str:
    """``"trainer has no key 'lrr'; did you mean trainer.lr? Keys there: ..."``."""
    keys = sorted(known)
    close = difflib.get_close_matches(key, keys, n=1)
    guess = f"; did you mean {_key(where, close[0])}?" if close else ";"
    return f"{where or 'the top level'} has no key {key!r}{guess} Keys there: {', '.join(keys)}"


def check_types(settings: Any, *, where: str) -> None:
    """Check every field of the dataclass instance ``settings`` against its annotation.

    Normalises in place what is the same value in another shape: an integer given for a
    ``float`` becomes a float, a list given for a ``tuple`` becomes a tuple.
    """
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        converted = check_value(_key(where, field.name), value, hints[field.name])
        if converted is not value:
            object.__setattr__(settings, field.name, converted)


def check_value(key: str, value: Any, annotation: Any) -> Any:
    """``value`` in the shape ``annotation`` asks for; an error naming ``key`` if it does not fit."""
    ok, converted = _conform(value, annotation)
    if not ok:
        raise SettingsError(f"{key}={shown(value)} must be {describe(annotation)}")
    return converted


def describe(annotation: Any) -> str:
    """What a value of ``annotation`` is, in words: ``"an integer or null"``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(annotation)))
    if origin is tuple:
        args = typing.get_args(annotation)
        return f"a list of {len(args)} {'numbers' if args and args[0] is float else 'values'}"
    return {
        int: "an integer", float: "a number", bool: "true or false", str: "text",
        type(None): "null", dict: "a mapping", list: "a list",
    }.get(annotation, f"a {getattr(annotation, '__name__', annotation)}")


def _conform(value: Any, annotation: Any) -> tuple[bool, Any]:
    """``(whether value fits annotation, the value in the annotation's shape)``."""
    if annotation is Any:
        return True, value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            ok, converted = _conform(value, option)
            if ok:
                return True, converted
        return False, value
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            return False, value
        parts = [_conform(v, a) for v, a in zip(value, args, strict=True)]
        return all(ok for ok, _ in parts), tuple(c for _, c in parts)
    if origin is typing.Literal:
        return value in typing.get_args(annotation), value
    if isinstance(origin, type):  # dict[str, Any], list[int]...: the container's type only
        return isinstance(value, origin), value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return True, float(value)
    if isinstance(annotation, type):
        return isinstance(value, annotation), value
    return True, value  # an annotation this checker does not know: trust the value


def shown(value: Any) -> str:
    """A value as it reads in config: ``true``, ``null``, ``'abc'``, ``1.5``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else repr(value)


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
