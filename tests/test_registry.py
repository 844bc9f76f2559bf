from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest
from genloom.registry import Registry, RegistryError, check_options


def test_unknown_name_lists_what_is_available():
    registry = Registry()
    registry.add("generator", "bigram", "fake_plugin.components:Bigram", plugin="fake")
    registry.add("generator", "other", "fake_plugin.components:Bigram", plugin="fake")
    with pytest.raises(RegistryError, match="no generator named 'nope'; available generators: bigram, other"):
        registry.entry("generator", "nope")


@pytest.mark.parametrize("order", [("first", "second"), ("second", "first")])
def test_a_duplicate_name_belongs_to_neither_plugin_in_either_order(order):
    registry = Registry()
    targets = {"first": "fake_plugin.components:Bigram", "second": "elsewhere:Bigram"}
    for plugin in order:
        registry.add("generator", "bigram", targets[plugin], plugin=plugin, distribution=f"genloom-{plugin}")
    registry.add("generator", "other", "fake_plugin.components:Bigram", plugin="second")
    assert registry.names("generator") == ["other"]
    expected = (r"generator 'bigram' is registered by 2 plugins, so genloom uses neither: 'first' "
                r"\(genloom-first, fake_plugin.components:Bigram\) and "
                r"'second' \(genloom-second, elsewhere:Bigram\)")
    with pytest.raises(RegistryError, match=expected):
        registry.build("generator", "bigram")
    assert list(registry.clashes()) == [("generator", "bigram")]
    assert registry.clash_message("generator", "bigram") == registry_error(registry, "generator", "bigram")


def registry_error(registry: Registry, kind: str, name: str) -> str:
    with pytest.raises(RegistryError) as caught:
        registry.entry(kind, name)
    return str(caught.value)


def test_unknown_kind_and_bad_target_are_rejected():
    registry = Registry()
    with pytest.raises(RegistryError, match="unknown kind 'model'"):
        registry.add("model", "x", "a:b", plugin="p")
    with pytest.raises(RegistryError, match="import path 'package.module:factory'"):
        registry.add("generator", "x", "no_colon_here", plugin="p")


def test_build_rejects_unknown_options_and_lists_accepted_ones():
    registry = Registry()
    registry.add("generator", "bigram", "fake_plugin.components:Bigram", plugin="fake")
    expected = r"no option generator.vocab_sz; it takes: generator.vocab_size, generator.length"
    with pytest.raises(RegistryError, match=expected):
        registry.build("generator", "bigram", {"vocab_sz": 3})
    model = registry.build("generator", "bigram", {"vocab_size": 5})
    assert model.vocab_size == 5


def test_build_checks_the_built_object_is_of_its_kind():
    registry = Registry()
    registry.add("generator", "enc", "fake_plugin.components:DigitEncoder", plugin="fake")
    with pytest.raises(RegistryError, match="is not a Generator: it lacks generate, loss"):
        registry.build("generator", "enc")


def test_unimportable_target_says_which_plugin():
    registry = Registry()
    registry.add("dataset", "ghost", "fake_plugin.missing_module:Thing", plugin="ghosts")
    expected = "from plugin 'ghosts' points at 'fake_plugin.missing_module:Thing'"
    with pytest.raises(RegistryError, match=expected):
        registry.build("dataset", "ghost")


def typed(  # a factory as plugins write them: keyword-only, annotated
    *, n_layer: int = 2, dropout: float = 0.0, bias: bool = False, name: str = "x",
    widths: Sequence[int] = (16, 32), pair: tuple[int, int] = (1, 2), f_max: float | None = None,
    condition: Literal["none", "label"] = "none", path: Path = Path("."), table: dict[str, int] | None = None,
    anything=None, custom: "Unresolvable" = None,  # noqa: F821 - an annotation genloom cannot resolve
):
    return None


@pytest.mark.parametrize(("options", "expected"), [
    ({"n_layer": "abc"}, "generator.n_layer='abc': expected an integer (here declares n_layer: int)"),
    ({"n_layer": True}, "generator.n_layer=True: expected an integer"),
    ({"n_layer": 2.5}, "generator.n_layer=2.5: expected an integer"),
    ({"dropout": "high"}, "generator.dropout='high': expected a number"),
    ({"bias": 1}, "generator.bias=1: expected true or false"),
    ({"bias": {"_target_": "os.system"}}, "generator.bias={'_target_': 'os.system'}: expected true or false"),
    ({"name": 3}, "generator.name=3: expected a string"),
    ({"widths": "16"}, "generator.widths='16': expected a list"),
    ({"widths": [16, "x"]}, "generator.widths=[16, 'x']: expected a list of integers"),
    ({"pair": [1]}, "generator.pair=[1]: expected a list of 2 (an integer, an integer)"),
    ({"f_max": "x"}, "generator.f_max='x': expected a number or null"),
    ({"condition": "caption"}, "generator.condition='caption': expected one of 'none', 'label'"),
    ({"path": 3}, "generator.path=3: expected a path"),
    ({"table": {"a": "b"}}, "generator.table={'a': 'b'}: expected a mapping of strings to integers or null"),
])
def test_option_values_must_have_the_types_the_factory_declares(options, expected):
    with pytest.raises(RegistryError) as caught:
        check_options(typed, options, where="here", prefix="generator.")
    assert expected in str(caught.value)


def test_option_values_from_yaml_or_the_command_line_are_taken_as_their_declared_types():
    check_options(typed, {
        "n_layer": 3, "dropout": 0, "bias": True, "name": "y", "widths": [8, 8, 8], "pair": [3, 4],
        "f_max": 12000, "condition": "label", "path": "data/", "table": {"a": 1}, "anything": object(),
        "custom": object(),
    }, where="here", prefix="generator.")
    # Raw YAML, not yet composed: what an interpolation will be is not known, so not judged.
    check_options(typed, {"n_layer": "${generator.depth}", "name": "???"}, where="here")


def test_a_wrong_type_on_the_command_line_is_one_message(fake_plugins, tmp_path, capsys):
    from genloom import cli

    args = ["train", "pipeline=counting", "trainer=debug", "+generator.length=abc",
            f"hydra.run.dir={tmp_path}"]
    assert cli.main(args) == 1
    said = "".join(capsys.readouterr())
    assert "generator.length='abc': expected an integer (generator 'bigram' declares length: int)" in said
    assert "Traceback" not in said
