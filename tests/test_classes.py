"""The class check before training: a dataset's classes against a generator's class count."""

import logging

import pytest
from genloom.classes import check_condition_classes
from genloom.interfaces import ClassConditioned, ConditionClasses
from omegaconf import OmegaConf


class Animals:
    """A dataset whose condition is a class index (three classes)."""

    unit, units_per_example = "img", 1

    def __init__(self, classes: dict[str, int] | None) -> None:
        self.condition_classes = classes

    def split(self, name, encoder, condition_encoder=None):
        raise AssertionError("the check must not need the data")


class LabelModel:
    def __init__(self, classes: int | None) -> None:
        self.num_condition_classes = classes


THREE = {"cats": 120, "dogs": 80, "owls": 40}
CONFIG = OmegaConf.create({"dataset": {"name": "folder", "path": "pets/"},
                           "generator": {"name": "vae", "num_classes": 2}})


def test_both_sides_are_optional_capabilities() -> None:
    assert isinstance(Animals(THREE), ConditionClasses) and isinstance(LabelModel(2), ClassConditioned)
    assert not isinstance(object(), ConditionClasses) and not isinstance(object(), ClassConditioned)


def test_more_classes_than_the_generator_takes_is_one_error_that_says_what_to_set() -> None:
    with pytest.raises(ValueError) as error:
        check_condition_classes(Animals(THREE), LabelModel(2), CONFIG)
    assert str(error.value) == (
        "dataset.path 'pets/' has 3 classes (cats 120, dogs 80, owls 40) but the generator "
        "takes 2 (generator.num_classes=2): set generator.num_classes=3"
    )


def test_fewer_classes_is_a_warning_and_a_match_passes(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="genloom.classes"):
        check_condition_classes(Animals(THREE), LabelModel(3), CONFIG)
        assert not caplog.records
        check_condition_classes(Animals(THREE), LabelModel(5), CONFIG)
    assert "labels 3..4 are never trained" in caplog.text and "generator.num_classes=3" in caplog.text


def test_nothing_is_compared_unless_both_sides_use_class_conditions() -> None:
    for dataset, generator in [
        (Animals(None), LabelModel(2)),   # the dataset's condition is not a class (a caption, none)
        (Animals(THREE), LabelModel(None)),  # the generator is not steered by classes
        (object(), LabelModel(2)),        # a dataset without the capability
        (Animals(THREE), object()),
    ]:
        check_condition_classes(dataset, generator, CONFIG)


def test_the_message_names_the_dataset_without_a_path_and_any_generator_key() -> None:
    config = OmegaConf.create({"dataset": {"name": "notes"}, "generator": {"name": "other"}})
    expected = r"^dataset=notes has 3 classes .* takes 2: configure the generator for 3 classes$"
    with pytest.raises(ValueError, match=expected):
        check_condition_classes(Animals(THREE), LabelModel(2), config)
