"""Typed settings: each key is checked against its dataclass annotation, by name."""

from dataclasses import dataclass, field

import pytest
from genloom.settings import SettingsError, check_types, from_mapping
from genloom.trainer import TrainerSettings


@dataclass
class Example:
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    limit: int | None = None
    pair: tuple[float, float] = (0.0, 1.0)
    mode: bool | str = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self, where="example")


@pytest.mark.parametrize(("values", "message"), [
    ({"count": 1.5}, "example.count=1.5 must be an integer"),
    ({"count": True}, "example.count=true must be an integer"),
    ({"count": "abc"}, "example.count='abc' must be an integer"),
    ({"rate": "abc"}, "example.rate='abc' must be a number"),
    ({"flag": 1}, "example.flag=1 must be true or false"),
    ({"limit": 2.5}, "example.limit=2.5 must be an integer or null"),
    ({"pair": [1.0]}, "example.pair=[1.0] must be a list of 2 numbers"),
    ({"mode": 3}, "example.mode=3 must be true or false or text"),
    ({"extra": 3}, "example.extra=3 must be a mapping"),
    ({"cuont": 3}, "example has no key 'cuont'; did you mean example.count? Keys there: count, extra,"),
])
def test_a_value_of_the_wrong_type_or_an_unknown_key_names_the_key(values, message):
    with pytest.raises(SettingsError) as err:
        from_mapping(Example, values, where="example")
    assert message in str(err.value)


def test_values_of_the_same_meaning_are_normalised():
    made = from_mapping(Example, {"rate": 1, "pair": [0, 2], "limit": None, "mode": "x"}, where="example")
    assert made.rate == 1.0 and isinstance(made.rate, float)
    assert made.pair == (0.0, 2.0) and isinstance(made.pair, tuple)
    assert made.mode == "x"


def test_trainer_settings_are_typed():
    with pytest.raises(SettingsError, match="trainer.max_steps=1.5 must be an integer"):
        TrainerSettings(max_steps=1.5)
    with pytest.raises(ValueError, match="trainer.eval_batches=0 must be at least 1"):
        TrainerSettings(eval_batches=0)
    settings = TrainerSettings(lr=1, betas=[0.9, 1])
    assert settings.lr == 1.0 and settings.betas == (0.9, 1.0)
