import pytest
from genloom.registry import Registry, RegistryError


def test_unknown_name_lists_what_is_available():
    registry = Registry()
    registry.add("generator", "bigram", "fake_plugin.components:Bigram", plugin="fake")
    registry.add("generator", "other", "fake_plugin.components:Bigram", plugin="fake")
    with pytest.raises(RegistryError, match="no generator named 'nope'; available generators: bigram, other"):
        registry.entry("generator", "nope")


def test_duplicate_name_names_both_plugins():
    registry = Registry()
    registry.add("generator", "bigram", "fake_plugin.components:Bigram", plugin="first")
    with pytest.raises(RegistryError, match="registered twice: by plugin 'first'.*by plugin 'second'"):
        registry.add("generator", "bigram", "elsewhere:Bigram", plugin="second")


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


def test_removing_a_plugin_forgets_its_entries():
    registry = Registry()
    registry.add("generator", "bigram", "fake_plugin.components:Bigram", plugin="fake")
    registry.add("encoder", "digits", "fake_plugin.components:DigitEncoder", plugin="other")
    registry.remove_plugin("fake")
    assert registry.names("generator") == []
    assert registry.names("encoder") == ["digits"]
