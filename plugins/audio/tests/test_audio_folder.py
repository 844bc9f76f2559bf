"""audio_folder: every format, rate, bit depth and channel count; bad files skipped or refused; classes."""

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from genloom_audio.folder import AudioFolder
from genloom_audio.mel import LogMel
from genloom_audio.pitch import median_pitch, semitones

RATE = 16000
ENCODER = LogMel(sample_rate=RATE)
HZ = 440.0
LEVEL = 0.5  # the test tone's amplitude

# (file name, subtype, sample rate, channels): written by soundfile, read back by audio_folder.
FILES = [
    ("wav/u8_8k_mono.wav", "PCM_U8", 8000, 1),
    ("wav/pcm16_22k_stereo.wav", "PCM_16", 22050, 2),
    ("wav/pcm24_44k_mono.wav", "PCM_24", 44100, 1),
    ("wav/pcm32_48k_stereo.wav", "PCM_32", 48000, 2),
    ("wav/float_48k_mono.wav", "FLOAT", 48000, 1),
    ("wav/float_16k_stereo.WAV", "FLOAT", 16000, 2),
    ("flac/pcm16_44k_stereo.flac", "PCM_16", 44100, 2),
    ("flac/pcm24_48k_mono.flac", "PCM_24", 48000, 1),
    ("flac/pcm16_8k_mono.flac", "PCM_16", 8000, 1),
    ("ogg/vorbis_44k_stereo.ogg", "VORBIS", 44100, 2),
    ("ogg/vorbis_22k_mono.ogg", "VORBIS", 22050, 1),
]


def tone(rate: int, channels: int, seconds: float = 0.6) -> np.ndarray:
    """A 440 Hz tone ``(frames, channels)``; in stereo the right channel is the left inverted
    and mixed back in at half level, so the mono mix is exactly the tone at LEVEL."""
    t = np.arange(round(seconds * rate)) / rate
    wave = LEVEL * np.sin(2 * math.pi * HZ * t)
    if channels == 1:
        return wave[:, None]
    return np.stack([1.5 * wave, 0.5 * wave], axis=1)


def write_files(root: Path, files=FILES) -> None:
    for name, subtype, rate, channels in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, tone(rate, channels), rate, subtype=subtype)


def all_waveforms(dataset: AudioFolder) -> torch.Tensor:
    return torch.stack([dataset.read(f) for f in dataset.files])


def test_every_format_rate_depth_and_channel_count_reads_as_the_same_mono_tone(tmp_path: Path) -> None:
    write_files(tmp_path)
    dataset = AudioFolder(path=str(tmp_path), sample_rate=RATE, duration=0.5, val_fraction=0.5)
    assert len(dataset.files) == len(FILES)
    waveforms = all_waveforms(dataset)
    assert waveforms.shape == (len(FILES), 8000) and waveforms.dtype == torch.float32
    pitch = semitones(median_pitch(waveforms, RATE), HZ)
    assert pitch.abs().max() < 0.1, dict(zip([f.name for f in dataset.files], pitch.tolist(), strict=True))
    rms = waveforms[:, 400:-400].pow(2).mean(1).sqrt()  # resampler edges left out
    assert torch.allclose(rms, torch.full_like(rms, LEVEL / math.sqrt(2)), rtol=0.03), rms
    reference = ENCODER.encode(torch.from_numpy(tone(RATE, 1, 0.5)[:, 0]).float())
    encoded = torch.cat([dataset.split(s, ENCODER).tensors["mel"] for s in ("train", "val")])
    loud = reference > 0.3  # the tone's bands: lossy and 8-bit files differ in the quiet ones
    assert (encoded - reference).abs()[:, loud].mean() < 0.01


def test_clips_are_cropped_to_their_start_or_padded_with_silence(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "long.wav", tone(RATE, 1, 3.0), RATE)
    soundfile.write(tmp_path / "short.wav", tone(RATE, 1, 0.1), RATE)
    dataset = AudioFolder(path=str(tmp_path), sample_rate=RATE, duration=0.5, val_fraction=0.5)
    long, short = all_waveforms(dataset)
    expected = torch.from_numpy(tone(RATE, 1, 0.5)[:, 0]).float()
    assert torch.allclose(long, expected, atol=1e-4)
    assert torch.allclose(short[:1600], expected[:1600], atol=1e-4) and short[1600:].abs().max() == 0


def test_an_unreadable_file_is_skipped_and_counted_in_one_warning(tmp_path: Path, caplog) -> None:
    write_files(tmp_path, FILES[:4])
    (tmp_path / "text.wav").write_text("not audio")
    good = (tmp_path / "wav" / "u8_8k_mono.wav").read_bytes()
    (tmp_path / "cut.flac").write_bytes(b"fLaC" + good[4:30])
    (tmp_path / "notes.txt").write_text("not an audio suffix: ignored")
    (tmp_path / ".hidden.wav").write_bytes(b"ignored: hidden files are not data")
    with caplog.at_level(logging.WARNING, logger="genloom_audio.folder"):
        dataset = AudioFolder(path=str(tmp_path), sample_rate=RATE, val_fraction=0.5)
        assert len(dataset.split("train", ENCODER)) + len(dataset.split("val", ENCODER)) == 4
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 2 of 6 audio files" in warning and "cut.flac" in warning and "text.wav" in warning


def test_strict_makes_an_unreadable_file_an_error_that_names_it(tmp_path: Path) -> None:
    write_files(tmp_path, FILES[:2])
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00")
    dataset = AudioFolder(path=str(tmp_path), sample_rate=RATE, strict=True, val_fraction=0.5)
    with pytest.raises(ValueError, match=r"broken\.wav is not a readable audio file.*dataset\.strict=false"):
        dataset.split("train", ENCODER)


def test_an_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no audio files.*put WAV, FLAC or OGG files in it"):
        AudioFolder(path=str(tmp_path))
    (tmp_path / "readme.txt").write_text("no audio here")
    with pytest.raises(ValueError, match="holds no audio files"):
        AudioFolder(path=str(tmp_path))


def test_a_folder_of_only_broken_files_says_how_many_were_tried(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_text("x")
    (tmp_path / "b.ogg").write_text("y")
    with pytest.raises(ValueError, match="holds no readable audio: 2 file.s. found, 2 unreadable"):
        AudioFolder(path=str(tmp_path)).split("train", ENCODER)


def test_missing_paths_and_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AudioFolder(path=str(tmp_path / "nowhere"))
    (tmp_path / "a.wav").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        AudioFolder(path=str(tmp_path / "a.wav"))


def test_labels_come_from_subfolders_in_sorted_order(tmp_path: Path) -> None:
    for cls, hz in (("low", 220.0), ("high", 880.0)):
        for i in range(4):
            path = tmp_path / cls / f"{i}.wav"
            path.parent.mkdir(exist_ok=True)
            soundfile.write(path, 0.5 * np.sin(2 * math.pi * hz * np.arange(8000) / RATE), RATE)
    dataset = AudioFolder(path=str(tmp_path), labels=True, condition="label", val_fraction=0.25)
    assert dataset.classes == ["high", "low"]
    train, val = dataset.split("train", ENCODER), dataset.split("val", ENCODER)
    assert sorted(train.tensors["label"].tolist()) == [0, 0, 0, 1, 1, 1]
    assert val.tensors["label"].tolist() == [0, 1]  # the 4th file of each class
    assert torch.equal(val.tensors["condition"], val.tensors["label"])


def test_label_conditioning_needs_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dataset.condition=label needs the class of each file"):
        AudioFolder(path=str(tmp_path), condition="label")


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_symlinked_class_folder_is_a_class_and_classes_are_logged_with_counts(tmp_path, caplog) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    write_files(data, [(f"bird/{i}.wav", "PCM_16", RATE, 1) for i in range(2)])
    write_files(elsewhere, [(f"dog/{i}.wav", "PCM_16", RATE, 1) for i in range(3)])
    (data / "dog").symlink_to(elsewhere / "dog", target_is_directory=True)
    with caplog.at_level(logging.INFO, logger="genloom_audio.folder"):
        dataset = AudioFolder(path=str(data), labels=True, condition="label", val_fraction=0.5)
    assert dataset.classes == ["bird", "dog"] and dataset.condition_classes == {"bird": 2, "dog": 3}
    assert f"2 classes in {data}: 0=bird (2), 1=dog (3)" in caplog.text
    assert AudioFolder(path=str(data), labels=True).condition_classes is None


def test_an_mp3_is_read_where_libsndfile_can_and_named_where_it_cannot(tmp_path, caplog, monkeypatch) -> None:
    if "MP3" not in soundfile.available_formats():
        pytest.skip(f"libsndfile {soundfile.__libsndfile_version__} has no MP3 (1.1 and later do)")
    write_files(tmp_path, [("a.wav", "PCM_16", RATE, 1), ("b.mp3", "MPEG_LAYER_III", RATE, 1)])
    (tmp_path / "c.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A ")
    with caplog.at_level(logging.WARNING, logger="genloom_audio.folder"):
        dataset = AudioFolder(path=str(tmp_path), sample_rate=RATE, val_fraction=0.5)
    assert [f.name for f in dataset.files] == ["a.wav", "b.mp3"]  # libsndfile >= 1.1 reads MP3
    assert semitones(median_pitch(dataset.read(dataset.files[1])[None], RATE), HZ).abs().max() < 0.1
    (warning,) = warnings_of(caplog)
    assert "left out 1 file(s) in" in warning and "c.m4a" in warning
    assert "convert them to WAV or FLAC" in warning
    caplog.clear()
    monkeypatch.setattr("genloom_audio.folder.soundfile.available_formats", lambda: {"WAV": "", "FLAC": ""})
    with caplog.at_level(logging.WARNING, logger="genloom_audio.folder"):
        older = AudioFolder(path=str(tmp_path), sample_rate=RATE, val_fraction=0.5)
    assert [f.name for f in older.files] == ["a.wav"]
    assert "b.mp3, c.m4a" in warnings_of(caplog)[0]


def test_truncated_silent_and_clipped_clips_are_counted_in_warnings(tmp_path: Path, caplog) -> None:
    write_files(tmp_path, [(f"ok{i}.wav", "PCM_16", RATE, 1) for i in range(3)])
    whole = (tmp_path / "ok0.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[: len(whole) // 2])  # the header still promises 0.6 s
    soundfile.write(tmp_path / "silent.wav", np.zeros(8000), RATE)
    wave = tone(RATE, 1)[:, 0]
    soundfile.write(tmp_path / "antiphase.wav", np.stack([wave, -wave], axis=1), RATE)
    soundfile.write(tmp_path / "loud.wav", np.clip(4 * wave, -1, 1), RATE, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="genloom_audio.folder"):
        dataset = AudioFolder(path=str(tmp_path), sample_rate=8000, val_fraction=0.5)  # resampled
        encoder = LogMel(sample_rate=8000)
        assert len(dataset.split("train", encoder)) + len(dataset.split("val", encoder)) == 7
    said = "\n".join(warnings_of(caplog))
    assert "1 truncated WAV file(s)" in said and "cut.wav (its header promises 19200 bytes of audio" in said
    assert "2 silent clip(s)" in said and "antiphase.wav (its channels cancel out in the mono mix)" in said
    assert "silent.wav" in said and "dataset.drop_silent=true" in said
    assert "1 clipped clip(s)" in said and "loud.wav" in said


def test_drop_silent_leaves_silent_clips_out(tmp_path: Path, caplog) -> None:
    write_files(tmp_path, [(f"ok{i}.wav", "PCM_16", RATE, 1) for i in range(2)])
    soundfile.write(tmp_path / "silent.wav", np.zeros(8000), RATE)
    with caplog.at_level(logging.WARNING, logger="genloom_audio.folder"):
        dataset = AudioFolder(path=str(tmp_path), sample_rate=RATE, val_fraction=0.5, drop_silent=True)
        assert len(dataset.split("train", ENCODER)) + len(dataset.split("val", ENCODER)) == 2
    assert "dropped 1 silent clip(s)" in "\n".join(warnings_of(caplog))


def test_lazy_clips_equal_the_clips_held_in_memory_and_a_vanished_file_is_replaced(
    tmp_path: Path, caplog
) -> None:
    generator = np.random.default_rng(0)
    for i in range(8):  # noise at different levels and rates, two classes; one silent clip dropped
        rate = (8000, 22050)[i % 2]
        level = 0.0 if i == 5 else 0.05 * (i + 1)
        path = tmp_path / ("dog", "owl")[i % 2] / f"{i}.wav"
        path.parent.mkdir(exist_ok=True)
        soundfile.write(path, level * generator.uniform(-1, 1, (rate // 2, 1 + i % 2)), rate)
    options = {"path": str(tmp_path), "sample_rate": RATE, "labels": True, "val_fraction": 0.5,
               "condition": "label", "drop_silent": True}
    eager, lazy = AudioFolder(**options), AudioFolder(**options, lazy=True)
    for split in ("train", "val"):
        held, read = eager.split(split, ENCODER), lazy.split(split, ENCODER)
        assert len(held) == len(read) == {"train": 4, "val": 3}[split]
        for i in range(len(held)):
            a, b = held[i], read[i]
            assert a.keys() == b.keys() == {"mel", "label", "condition"}
            assert torch.equal(a["label"], b["label"]) and torch.equal(a["condition"], b["condition"])
            assert torch.allclose(a["mel"], b["mel"], atol=1e-5)  # one clip through the batched mel
    train = lazy.split("train", ENCODER)
    assert not hasattr(train, "tensors")  # nothing read is kept
    train.files[0].unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genloom_audio.folder"):
        stand_in, again = train[0], train[0]
    (warning,) = [r.getMessage() for r in caplog.records]  # once per file
    assert f"{train.files[0]} passed the check before training but does not read now" in warning
    assert "the next clip of the split takes its place" in warning
    assert torch.equal(stand_in["mel"], train[1]["mel"]) and torch.equal(again["mel"], stand_in["mel"])


def test_cached_clips_equal_the_clips_read_and_another_duration_reads_the_files_again(tmp_path) -> None:
    generator = np.random.default_rng(1)
    (tmp_path / "clips").mkdir()
    for i in range(4):
        soundfile.write(tmp_path / "clips" / f"{i}.wav", 0.1 * generator.uniform(-1, 1, 8000), 22050)
    options = {"path": str(tmp_path / "clips"), "sample_rate": RATE, "val_fraction": 0.5, "lazy": True}
    read = AudioFolder(**options).split("train", ENCODER)
    cached = {"cache_decoded": True, "cache_dir": str(tmp_path / "cache")}
    first = AudioFolder(**options, **cached).split("train", ENCODER)
    mels = [first[i]["mel"] for i in range(len(first))]
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2
    again = AudioFolder(**options, **cached).split("train", ENCODER)
    assert all(torch.equal(read[i]["mel"], mels[i]) and torch.equal(again[i]["mel"], mels[i])
               for i in range(len(read)))
    shorter = AudioFolder(**options, **cached, duration=0.25).split("train", ENCODER)
    assert shorter[0]["mel"].shape != mels[0].shape  # another key: read again, not a stale entry
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 3
