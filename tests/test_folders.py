"""The folder-dataset helpers every plugin's folder dataset shares."""

import logging
import os
from pathlib import Path

import pytest
from genloom import folders
from genloom.folders import (
    LazyExamples,
    count_classes,
    describe_classes,
    describe_kind,
    find_files,
    glob_files,
    split_every,
)


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


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_symlinked_folders_and_files_are_followed(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    _touch(data, "ant/1.png")
    _touch(elsewhere, "bee/1.png", "bee/2.png", "one.png")
    (data / "bee").symlink_to(elsewhere / "bee", target_is_directory=True)
    (data / "ant" / "2.png").symlink_to(elsewhere / "one.png")
    found = [p.relative_to(data).as_posix() for p in find_files(data, what="images")]
    assert found == ["ant/1.png", "ant/2.png", "bee/1.png", "bee/2.png"]


def test_a_symlink_loop_is_cut_and_a_broken_link_named_in_warnings(tmp_path: Path, caplog) -> None:
    _touch(tmp_path, "a/1.png")
    (tmp_path / "a" / "again").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "a" / "dangling").symlink_to(tmp_path / "nowhere")
    with caplog.at_level(logging.WARNING, logger="genloom.folders"):
        found = find_files(tmp_path, what="images")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/1.png"]
    assert "a/again" in caplog.text and "loop back" in caplog.text
    broken = f"1 symbolic link(s) whose target is missing: {tmp_path}/a/dangling -> {tmp_path}/nowhere"
    assert broken in caplog.text


def test_the_file_system_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="root of the file system.*folder that holds your images"):
        find_files(Path("/"), what="images")
    with pytest.raises(ValueError, match="root of the file system"):
        glob_files("/**/*.conf")


def test_a_walk_that_visits_too_many_entries_stops_with_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    _touch(tmp_path, *(f"d{i}/{j}.png" for i in range(3) for j in range(4)))
    monkeypatch.setattr(folders, "MAX_ENTRIES", 10)
    with pytest.raises(ValueError, match=r"more than 10 entries under .*narrower"):
        find_files(tmp_path, what="images")
    with pytest.raises(ValueError, match=r"more than 10 entries"):
        glob_files(f"{tmp_path}/**/*.png")


def test_devices_and_pipes_are_named_for_what_they_are(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="'/dev/null' is a character device, not a folder"):
        find_files(Path("/dev/null"), what="images")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(NotADirectoryError, match="is a named pipe .FIFO., not a folder"):
        find_files(fifo, what="images")
    assert describe_kind(tmp_path) == "a folder" and describe_kind(Path("/dev/null")) == "a character device"


def test_globs_match_like_the_shell_and_follow_symlinks(tmp_path: Path, caplog) -> None:
    _touch(tmp_path, "top.md", "a/b/deep.md", "a/c.txt", ".hidden/x.md", "a/.h.md", "real/r.md")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "a" / "gone.md").symlink_to(tmp_path / "nowhere.md")
    (tmp_path / "a" / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    with caplog.at_level(logging.WARNING, logger="genloom.folders"):
        found = [p.relative_to(tmp_path).as_posix() for p in glob_files(f"{tmp_path}/**/*.md")]
    assert found == ["a/b/deep.md", "a/link/r.md", "real/loop/b/deep.md", "real/r.md", "top.md"]
    assert "2 symbolic link(s) whose target is missing" in caplog.text  # a/gone.md, real/loop/gone.md
    assert "gone.txt" not in caplog.text
    assert glob_files(f"{tmp_path}/a/*.txt") == [tmp_path / "a" / "c.txt"]
    assert glob_files(f"{tmp_path}/.hidden/*.md") == [tmp_path / ".hidden" / "x.md"]
    assert glob_files(f"{tmp_path}/a/.h*") == [tmp_path / "a" / ".h.md"]
    assert glob_files(f"{tmp_path}/[at]*/c.tx?") == [tmp_path / "a" / "c.txt"]


def test_classes_are_counted_per_top_level_subfolder(tmp_path: Path) -> None:
    _touch(tmp_path, "owls/1.png", "cats/1.png", "cats/deep/2.png", "stray.png")
    files = find_files(tmp_path, what="images")
    assert count_classes(files, tmp_path) == {"cats": 2, "owls": 1}
    assert describe_classes({"cats": 2, "owls": 1}) == "0=cats (2), 1=owls (1)"


def test_lazy_examples_stand_in_for_a_file_that_no_longer_reads_and_say_when_none_does(
    tmp_path, caplog
) -> None:
    files = [tmp_path / f"{i}.txt" for i in range(3)]
    for i, file in enumerate(files):
        file.write_text(str(i))
    split = LazyExamples(files, lambda i: int(files[i].read_text()), what="note", root=tmp_path,
                         advice="check the disk")
    assert [split[i] for i in range(len(split))] == [0, 1, 2]
    files[1].unlink()
    with caplog.at_level(logging.WARNING, logger="genloom.folders"):
        assert [split[1], split[1], split[2]] == [2, 2, 2]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert f"{files[1]} passed the check before training but does not read now" in warning
    assert warning.endswith("the next note of the split takes its place; check the disk")
    for file in (files[0], files[2]):
        file.unlink()
    with pytest.raises(ValueError, match="none of the 3 files of this split.*changed or removed"):
        split[0]
