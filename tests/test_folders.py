"""The folder-dataset helpers every plugin's folder dataset shares."""

from pathlib import Path

import pytest
from genloom.folders import find_files, split_every


def test_files_are_found_recursively_sorted_without_hidden_ones(tmp_path: Path) -> None:
    for name in ("b/2.wav", "a/1.WAV", "a/notes.txt", ".cache/3.wav", "a/.4.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = find_files(tmp_path, what="audio files", suffixes=[".wav"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/1.WAV", "b/2.wav"]
    assert len(find_files(tmp_path, what="files")) == 3


def test_missing_empty_and_file_paths_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist.*set it to a folder of images"):
        find_files(tmp_path / "nope", what="images")
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        find_files(tmp_path / "f.png", what="images")
    empty = r"holds no audio files \(searched recursively among .wav\); put WAVs"
    with pytest.raises(ValueError, match=empty):
        find_files(tmp_path, what="audio files", suffixes=[".wav"], hint="put WAVs in it")


def test_every_kth_item_of_each_class_goes_to_validation() -> None:
    items = [("cat", i) for i in range(6)] + [("dog", i) for i in range(3)]
    splits = split_every(items, every=3, group=lambda item: item[0], what="images",
                         root=Path("x"), val_fraction=0.3)
    assert splits["val"] == [("cat", 2), ("cat", 5), ("dog", 2)]
    assert len(splits["train"]) == 6
    grown = split_every([*items, ("cat", 6)], every=3, group=lambda item: item[0], what="images",
                        root=Path("x"), val_fraction=0.3)
    assert grown["val"] == splits["val"]  # adding a file keeps every earlier assignment


def test_too_few_items_for_both_splits_is_a_clear_error() -> None:
    too_few = "2 readable clips: too few for both splits.*raise dataset.val_fraction"
    with pytest.raises(ValueError, match=too_few):
        split_every([(None, 1), (None, 2)], every=5, group=lambda item: item[0], what="clips",
                    root=Path("x"), val_fraction=0.2)
