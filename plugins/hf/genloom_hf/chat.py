"""A tokenizer directory's chat template, found and rendered the way transformers does it.

A chat model expects its conversation laid out in the exact text it was trained on
(``<|start_header_id|>user<|end_header_id|>`` for Llama 3, ``<|im_start|>user`` for
ChatML...). Hugging Face ships that layout as a Jinja template beside the tokenizer; this
module reads it from a local directory and renders it as ``apply_chat_template`` does, so
that a served model sees the prompt its trainers wrote, byte for byte:

* found in ``chat_template.jinja`` (and ``additional_chat_templates/NAME.jinja``), or else
  in ``tokenizer_config.json``'s ``chat_template`` (a string, or a list of
  ``{"name", "template"}``); ``default`` is taken unless another name is asked for;
* rendered in jinja2's ``ImmutableSandboxedEnvironment`` (a template is data from the
  internet: it cannot reach Python objects or mutate its inputs) with ``trim_blocks`` and
  ``lstrip_blocks``, the ``loopcontrols`` extension, the ``tojson`` filter and the
  ``raise_exception``, ``strftime_now``, ``dict`` and ``namespace`` globals (the last two
  unable to reach Python's internals), given ``messages``, ``tools`` and ``documents`` (None),
  ``add_generation_prompt`` and the tokenizer's special tokens (``bos_token``,
  ``eos_token``...).

:meth:`ChatTemplate.encode` then encodes the text as transformers does (special tokens in
the text matched, none added), which is what a :class:`genloom.interfaces.ChatEncoder`
returns. As in transformers (``sanitize_control_tokens`` off), a special token typed in a
message's content is matched too: a user can write ``<|im_end|>`` into their turn.

A template that does not compile, or that refuses a conversation (``raise_exception``, a
missing key), is a ``ValueError`` that names the template's file and its message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import torch
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer
from torch import Tensor

TEMPLATE_FILE = "chat_template.jinja"
EXTRA_TEMPLATES_DIR = "additional_chat_templates"
CONFIG_FILE = "tokenizer_config.json"
LEGACY_SPECIAL_TOKENS_FILE = "special_tokens_map.json"
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                  "mask_token")


class _Generation(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: transformers marks the assistant's text with it
    (for training masks); rendering a prompt only needs the body, so the tag renders its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # jinja2's own tojson escapes HTML characters, which would change the prompt's text.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(format: str) -> str:  # noqa: A002 - the name templates call it with
    return datetime.now().strftime(format)


def _template_dict(*args: Any, **kwargs: Any) -> dict[Any, Any]:
    # A function, not the ``dict`` type: a template could reach ``dict.__subclasses__``... otherwise.
    return dict(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """jinja2's ``namespace`` refusing underscore names, which could lead to CPython's internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - jinja2's own signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"a chat template may not store the underscore-prefixed name {name!r} in a namespace")


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _template_dict
    env.globals["namespace"] = _Namespace
    return env


class ChatTemplate:
    """One chat template and the special tokens it may name, ready to render conversations."""

    def __init__(self, source: str, *, special_tokens: Mapping[str, str] | None = None,
                 origin: str = "the chat template") -> None:
        """``source`` is the Jinja text; ``origin`` says where it came from, for error messages."""
        self.source = source
        self.origin = origin
        self.special_tokens = dict(special_tokens or {})
        try:
            self.template = _environment().from_string(source)
        except jinja2.exceptions.TemplateSyntaxError as err:
            raise ValueError(f"{origin} is not a valid Jinja template: {err.message} "
                             f"(line {err.lineno})") from None

    @classmethod
    def find(cls, directory: str | Path, name: str | None = None) -> ChatTemplate | None:
        """The template of a tokenizer directory, where transformers looks; None if it has none.

        Template files (``chat_template.jinja`` as ``default``, ``additional_chat_templates/NAME.jinja``)
        take priority over ``tokenizer_config.json``'s ``chat_template``, as in transformers. ``name``
        picks a named template (``tool_use``, say); unset, ``default``.
        """
        directory = Path(directory)
        config = _read_json(directory / CONFIG_FILE)
        special = _special_tokens(config, _read_json(directory / LEGACY_SPECIAL_TOKENS_FILE))
        templates = _template_files(directory) or _config_templates(config, directory / CONFIG_FILE)
        wanted = name or "default"
        if wanted not in templates:
            if name is None:  # none, or only special-purpose ones (tool_use, rag): no plain chat
                return None
            raise ValueError(f"{directory} has no chat template named {name!r}; "
                             f"it has: {', '.join(templates) or 'none'}")
        source, origin = templates[wanted]
        return cls(source, special_tokens=special, origin=origin)

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
               **variables: Any) -> str:
        """The conversation as the model's prompt text; with ``add_generation_prompt`` the
        assistant's turn is opened, for the model to write."""
        context = {**self.special_tokens, **variables}
        try:
            return self.template.render(messages=[_plain(m) for m in messages], tools=None, documents=None,
                                        add_generation_prompt=add_generation_prompt, **context)
        except jinja2.exceptions.TemplateError as err:
            raise ValueError(f"{self.origin} refuses these messages: {err.message or err}") from None
        except (TypeError, ArithmeticError) as err:  # the template's own expression failed on them
            raise ValueError(f"{self.origin} fails on these messages: {err}") from None

    def encode(self, tokenizer: Tokenizer, messages: Sequence[Mapping[str, Any]]) -> Tensor:
        """The conversation's prompt ids ``(T,)``, as ``apply_chat_template(tokenize=True)`` gives
        them: the rendered text encoded with its special tokens matched and none added (the
        template wrote them). What an encoder's ``encode_chat`` returns."""
        ids = tokenizer.encode(self.render(messages), add_special_tokens=False).ids
        return torch.tensor(ids, dtype=torch.long)


def _plain(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as the template sees it: a fresh dict, keys whose value is None dropped
    (templates test whether a key is there, and would print "None")."""
    return {key: value for key, value in message.items() if value is not None}


def _template_files(directory: Path) -> dict[str, tuple[str, str]]:
    """``{name: (template, file)}`` from the template files of a directory."""
    files = {}
    if (directory / TEMPLATE_FILE).is_file():
        files["default"] = directory / TEMPLATE_FILE
    if (directory / EXTRA_TEMPLATES_DIR).is_dir():
        files.update({f.name.removesuffix(".jinja"): f
                      for f in sorted((directory / EXTRA_TEMPLATES_DIR).glob("*.jinja"))})
    return {name: (f.read_text(encoding="utf-8"), str(f)) for name, f in files.items()}


def _config_templates(config: Mapping[str, Any], path: Path) -> dict[str, tuple[str, str]]:
    """``{name: (template, where)}`` from ``tokenizer_config.json``'s ``chat_template``."""
    found = config.get("chat_template")
    where = f"{path}: chat_template"
    if found is None:
        return {}
    if isinstance(found, str):
        return {"default": (found, where)}
    if not isinstance(found, list) or not all(
            isinstance(t, Mapping) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str)
            for t in found):
        raise ValueError(f"{where} must be a string or a list of {{'name', 'template'}} objects")
    return {t["name"]: (t["template"], f"{where}[{t['name']!r}]") for t in found}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def _special_tokens(config: Mapping[str, Any], legacy: Mapping[str, Any]) -> dict[str, str]:
    """``bos_token`` and the others, as text: given as a string or as an AddedToken object."""
    tokens = {}
    for key in SPECIAL_TOKENS:
        value = config.get(key, legacy.get(key))
        if isinstance(value, Mapping):
            value = value.get("content")
        if isinstance(value, str):
            tokens[key] = value
    return tokens
