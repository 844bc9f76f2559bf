"""synth_notes: a pure function of its options, labelled and captioned as documented, in tune."""

import pytest
import torch
from genloom_audio.mel import LogMel
from genloom_audio.synth import TIMBRES, SynthNotes, midi_hz, note_name
from genloom_blocks.captions import CaptionWords

ENCODER = LogMel(sample_rate=8000, n_fft=256, hop_length=128, n_mels=32)
SMALL = {"sample_rate": 8000, "duration": 0.25, "low": 60, "high": 71, "size": 40}


def mels(dataset: SynthNotes, split: str = "train", **kwargs) -> torch.Tensor:
    return dataset.split(split, ENCODER, **kwargs).tensors["mel"]


def test_the_same_seed_gives_the_same_audio_and_another_seed_other_audio() -> None:
    first = SynthNotes(**SMALL, seed=3)
    assert torch.equal(first.render([first.spec(i) for i in range(8)]),
                       SynthNotes(**SMALL, seed=3).render([first.spec(i) for i in range(8)]))
    assert torch.equal(mels(first), mels(SynthNotes(**SMALL, seed=3)))
    assert not torch.equal(mels(first), mels(SynthNotes(**SMALL, seed=4)))


def test_growing_the_dataset_keeps_the_examples_already_there() -> None:
    small = SynthNotes(**{**SMALL, "size": 40}, val_fraction=0.25)
    large = SynthNotes(**{**SMALL, "size": 80}, val_fraction=0.125)
    assert torch.equal(mels(small, "val"), mels(large, "val"))  # both: the first 10 examples


def test_labels_timbres_and_captions_describe_each_clip() -> None:
    dataset = SynthNotes(**SMALL, chords=0.5, seed=1)
    specs = [dataset.spec(i) for i in range(40)]
    examples = dataset.split("train", ENCODER)
    train_specs = specs[dataset.indices["train"].start :]
    assert examples.tensors["label"].tolist() == [s.root - 60 for s in train_specs]
    assert examples.tensors["timbre"].tolist() == [s.timbre for s in train_specs]
    captions = [dataset.caption(s) for s in specs]
    assert any(" chord on " in c for c in captions) and any(" chord " not in c for c in captions)
    for spec, caption in zip(specs, captions, strict=True):
        assert caption.startswith(f"a {TIMBRES[spec.timbre]} ") and caption.endswith(note_name(spec.root))
    assert note_name(57) == "A3" and note_name(61) == "C#4" and dataset.classes[0] == "C4"


@pytest.mark.parametrize(("condition", "key"), [("pitch", "label"), ("timbre", "timbre")])
def test_the_condition_is_the_asked_label(condition: str, key: str) -> None:
    examples = SynthNotes(**SMALL, condition=condition).split("train", ENCODER)
    assert torch.equal(examples.tensors["condition"], examples.tensors[key])


def test_caption_conditions_are_encoded_captions_and_need_an_encoder() -> None:
    dataset = SynthNotes(**SMALL, condition="caption")
    words = CaptionWords()
    examples = dataset.split("train", ENCODER, words)
    first = dataset.spec(dataset.indices["train"].start)
    assert torch.equal(examples.tensors["condition"][0], words.encode(dataset.caption(first)))
    with pytest.raises(ValueError, match="condition_encoder=caption_words"):
        dataset.split("train", ENCODER)


def test_clips_have_the_documented_level() -> None:
    dataset = SynthNotes(**SMALL)
    specs = [dataset.spec(i) for i in range(40)]
    peaks = dataset.render(specs).abs().amax(1)
    assert peaks.min() >= 10 ** (-9.5 / 20) and peaks.max() <= 10 ** (-2.5 / 20)
    assert dataset.render(specs).shape == (40, 2000)


def test_chords_sound_their_three_notes() -> None:
    dataset = SynthNotes(sample_rate=16000, chords=1.0, timbres=["sine"], size=4)
    spec = dataset.spec(0)
    spectrum = torch.fft.rfft(dataset.render([spec])[0]).abs()  # 2 Hz bins for 0.5 s
    peaks = sorted(spectrum.topk(3).indices.tolist())
    expected = [round(float(midi_hz(spec.root + step)) * 0.5) for step in spec.intervals]
    assert all(abs(p - e) <= 1 for p, e in zip(peaks, expected, strict=True))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"condition": "colour"}, "dataset.condition must be one of none, pitch, timbre, caption"),
        ({"timbres": ["sine", "violin"]}, "dataset.timbres must be a non-empty list"),
        ({"low": 80, "high": 70}, "dataset.low <= dataset.high"),
        ({"high": 120}, "above 0.45 x dataset.sample_rate"),
        ({"chords": 1.5}, "dataset.chords is a probability"),
        ({"size": 1}, "dataset.size must be an integer of at least 2"),
        ({"val_fraction": 0.0}, r"dataset.val_fraction must lie in \(0, 0.5\]"),
    ],
)
def test_bad_options_name_the_key(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SynthNotes(**options)
