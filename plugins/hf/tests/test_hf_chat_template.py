"""``ChatTemplate`` renders what transformers' ``apply_chat_template`` renders, on the same files.

Each test makes a tiny byte-level BPE tokenizer with chat special tokens, saves it with
transformers into ``tmp_path`` with a template, and compares genloom's rendering (and its
tokens) with transformers' own, for a Llama-3 and a ChatML template, a template file laid
out over several indented lines, and named templates in ``tokenizer_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from genloom_hf.chat import ChatTemplate  # noqa: E402

# Meta-Llama-3-8B-Instruct's template, verbatim.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Qwen2-Instruct's ChatML template: a default system message when none is given.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Written over indented lines, as template files are: trim_blocks and lstrip_blocks matter;
# also raise_exception, a namespace, tojson and a {% generation %} block.
MULTILINE = """\
{% set ns = namespace(turns=0) %}
{% for message in messages %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('unknown role ' + message['role']) }}
    {% endif %}
    {% if message['role'] == 'system' %}
<<SYS>>{{ message['content'] | tojson }}<</SYS>>
    {% elif message['role'] == 'assistant' %}
        {% generation %}
[ASSISTANT] {{ message['content'] }}{{ eos_token }}
        {% endgeneration %}
    {% else %}
        {% set ns.turns = ns.turns + 1 %}
[USER {{ ns.turns }}] {{ message['content'] }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
[ASSISTANT]
{% endif %}
"""
# Mistral-style: roles must alternate, or the template refuses.
ALTERNATING = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|im_start|>",
    "<|im_end|>",
]
CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"}],
    [
        {"role": "system", "content": 'You answer "briefly" & <kindly>.'},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "  4.  "},
        {"role": "user", "content": "Und auf Deutsch? Schön, danke 🙂"},
    ],
]


def make_tokenizer(directory: Path, template: str | None) -> Path:
    """A byte-level BPE (vocabulary ~300) with the chat special tokens, saved by transformers."""
    model = tokenizers.Tokenizer(tokenizers.models.BPE())
    model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIAL,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    model.train_from_iterator(
        ["hello there, what is two and two? the assistant answers briefly."] * 4, trainer=trainer
    )
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=model, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )
    if template is not None:
        wrapped.chat_template = template
    wrapped.save_pretrained(directory)
    return directory


def transformers_rendering(directory: Path, messages: list[dict], **kwargs: object) -> str:
    loaded = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    return loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


@pytest.mark.parametrize("template", [LLAMA3, CHATML, MULTILINE], ids=["llama3", "chatml", "multiline"])
def test_rendering_and_tokens_equal_transformers(tmp_path, template) -> None:
    directory = make_tokenizer(tmp_path, template)
    loaded = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    ours = ChatTemplate.find(directory)
    fast = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    for messages in CONVERSATIONS:
        text = ours.render(messages)
        assert text == loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert ours.render(messages, add_generation_prompt=False) == loaded.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )
        # What an encoder's encode_chat gives: the rendered text's ids, special tokens matched,
        # none added (the template wrote them).
        ids = loaded.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, return_dict=False
        )
        assert fast.encode(text, add_special_tokens=False).ids == list(ids)


def test_a_template_file_wins_over_the_config_and_named_templates_are_found(tmp_path) -> None:
    directory = make_tokenizer(tmp_path, CHATML)
    assert (directory / "chat_template.jinja").is_file()  # transformers 5 saves templates as files
    (directory / "chat_template.jinja").unlink()
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = [{"name": "default", "template": LLAMA3}, {"name": "plain", "template": CHATML}]
    config_path.write_text(json.dumps(config))
    messages = CONVERSATIONS[1]
    assert ChatTemplate.find(directory).render(messages) == transformers_rendering(directory, messages)
    assert ChatTemplate.find(directory, "plain").render(messages) == transformers_rendering(
        directory, messages, chat_template="plain"
    )
    with pytest.raises(ValueError, match=r"has no chat template named 'rag'; it has: default, plain"):
        ChatTemplate.find(directory, "rag")

    (directory / "chat_template.jinja").write_text(MULTILINE)
    assert ChatTemplate.find(directory).origin == str(directory / "chat_template.jinja")
    assert ChatTemplate.find(directory).render(messages) == transformers_rendering(directory, messages)

    config["chat_template"] = CHATML
    config_path.write_text(json.dumps(config))
    (directory / "chat_template.jinja").unlink()
    assert ChatTemplate.find(directory).render(messages) == transformers_rendering(directory, messages)


def test_no_template_is_none(tmp_path) -> None:
    assert ChatTemplate.find(make_tokenizer(tmp_path, None)) is None


def test_a_refusal_or_a_broken_template_is_a_value_error_with_its_message(tmp_path) -> None:
    directory = make_tokenizer(tmp_path, ALTERNATING)
    template = ChatTemplate.find(directory)
    assert template.render([{"role": "user", "content": "hi"}]) == "<|begin_of_text|>[INST] hi [/INST]"
    twice = [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]
    refused = r"chat_template.jinja refuses these messages: Conversation roles must alternate user/assistant"
    with pytest.raises(ValueError, match=refused):
        template.render(twice)
    with pytest.raises(Exception, match="Conversation roles must alternate"):  # transformers refuses too
        transformers_rendering(directory, twice)
    with pytest.raises(ValueError, match=r"unknown role tool"):
        ChatTemplate(MULTILINE).render([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match=r"broken.jinja is not a valid Jinja template: .*\(line 1\)"):
        ChatTemplate("{% for m in messages %}{{ m }}", origin="broken.jinja")


def test_the_sandbox_keeps_a_template_away_from_python(tmp_path) -> None:
    escape = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}", origin="hostile.jinja")
    with pytest.raises(ValueError, match="hostile.jinja refuses these messages: .*unsafe"):
        escape.render([{"role": "user", "content": "x"}])
    mutate = ChatTemplate("{{ messages.append(1) }}", origin="mutating.jinja")
    with pytest.raises(ValueError, match="mutating.jinja refuses these messages"):
        mutate.render([{"role": "user", "content": "x"}])
    hidden = ChatTemplate("{% set ns = namespace() %}{% set ns._x = 1 %}", origin="namespace.jinja")
    with pytest.raises(ValueError, match="underscore-prefixed name '_x'"):
        hidden.render([])
