import pytest
from genloom.registry import Registry, RegistryError


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

