"""The token cache: a corpus is tokenised once into a memory-mapped file that later runs read.

Windows read from the map must be the windows the in-memory path cuts; a changed corpus or
tokenizer must never read stale ids; a damaged file is rebuilt with a warning.
"""

import json
import os
import pickle
import time
from pathlib import Path

import pytest
import torch
from genloom_text import corpus as corpus_module
from genloom_text import token_cache
from genloom_text.bpe import BpeTokenizer
from genloom_text.corpus import TextFiles
from genloom_text.tokenizer import ByteTokenizer

BLOCK = 16
TEXT = "".join(f"Line {i}: na\u00efve caf\u00e9, {i * 7 % 13} \U0001f9f5 words.\n" for i in range(400))


def corpus_dir(tmp_path: Path, text: str = TEXT) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir(exist_ok=True)
    (folder / "a.txt").write_text(text[: len(text) // 3], encoding="utf-8")
    (folder / "b.md").write_text(text[len(text) // 3 :], encoding="utf-8")
    return folder


def files(folder: Path, cache: Path | None, **options) -> TextFiles:
    return TextFiles(path=str(folder), block_size=BLOCK, token_cache=cache is not None,
                     cache_dir=None if cache is None else str(cache), **options)


def assert_same_windows(mapped: TextFiles, held: TextFiles, encoder) -> None:
    for split in ("train", "val"):
        a, b = mapped.split(split, encoder), held.split(split, encoder)
        assert torch.equal(a.starts, b.starts)
        assert len(a) > 0
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert x.keys() == y.keys()
            assert all(x[k].dtype == torch.long and torch.equal(x[k], y[k]) for k in x)


def token_files(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"*{token_cache.SUFFIX}"))


def test_the_narrowest_dtype_holds_the_vocabulary() -> None:
    assert [token_cache.dtype_for(v) for v in (256, 257, 65_536, 65_537, 1 << 20)] == [
        "uint8", "uint16", "uint16", "uint32", "uint32"]


def test_bytes_are_stored_one_byte_each_and_cut_like_in_memory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(corpus_module, "CHUNK_BYTES", 101)  # many chunks, cut inside characters
    folder, cache = corpus_dir(tmp_path), tmp_path / "cache"
    mapped = files(folder, cache)
    assert_same_windows(mapped, files(folder, None), ByteTokenizer())
    [stored] = token_files(cache)
    tokens = len(TEXT.encode()) + 2  # the blank line between the two files
    read = token_cache.read(stored, stored_key(stored))
    assert read.dtype == "uint8" and read.streams["all"].tokens == tokens
    assert stored.stat().st_size - token_cache.DATA_OFFSET - tokens < 1024  # the header alone
    assert mapped.split("train", ByteTokenizer()).tokens.dtype == torch.uint8


def stored_key(path: Path) -> str:
    """The key a token file's header says it was written for."""
    data = path.read_bytes()
    *_, header_length = token_cache.PREFIX.unpack(data[: token_cache.PREFIX.size])
    return json.loads(data[-header_length:])["key"]


def test_a_later_run_reads_the_cache_without_tokenising(tmp_path: Path, caplog) -> None:
    folder, cache = corpus_dir(tmp_path), tmp_path / "cache"
    with caplog.at_level("INFO", logger="genloom_text.corpus"):
        files(folder, cache).split("train", ByteTokenizer())
    assert "tokenised dataset.path" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="genloom_text.corpus"):
        windows = files(folder, cache).split("val", ByteTokenizer())
    assert "tokenised" not in caplog.text and len(windows) > 0
    [stored] = token_files(cache)
    assert f"token cache hit: {len(TEXT.encode()) + 2:,} tokens from {stored}" in caplog.text


def test_a_later_run_reads_only_the_files_that_changed(tmp_path: Path, monkeypatch) -> None:
    folder, cache = corpus_dir(tmp_path), tmp_path / "cache"
    for file in folder.iterdir():  # written a minute ago: files being written are not memoised
        os.utime(file, ns=(time.time_ns() - 60 * 10**9,) * 2)
    surveyed: list[str] = []
    survey = corpus_module._survey
    monkeypatch.setattr(corpus_module, "_survey", lambda file, fallback: surveyed.append(file.name)
                        or survey(file, fallback))
    first = files(folder, cache)
    assert sorted(surveyed) == ["a.txt", "b.md"]
    surveyed.clear()
    assert files(folder, cache).encodings == first.encodings and surveyed == []
    (folder / "b.md").write_text(TEXT[len(TEXT) // 3 :] + "more", encoding="utf-8")
    changed = files(folder, cache)
    assert surveyed == ["b.md"]
    assert len(changed.split("train", ByteTokenizer()).tokens) == len(TEXT.encode()) + 2 + 4


def test_a_changed_corpus_or_tokenizer_is_tokenised_again(tmp_path: Path) -> None:
    folder, cache = corpus_dir(tmp_path), tmp_path / "cache"
    files(folder, cache).split("train", ByteTokenizer())
    (folder / "a.txt").write_text("changed! " + TEXT[: len(TEXT) // 3], encoding="utf-8")
    changed = files(folder, cache).split("train", ByteTokenizer())
    assert bytes(changed[0]["tokens"][:8].tolist()) == b"changed!"
    assert len(token_files(cache)) == 2
    # a fitted BPE keys by its tokenizer.json: another vocabulary is another file
    for vocab in (300, 320):
        dataset, bpe = files(folder, cache), BpeTokenizer(vocab_size=vocab)
        bpe.fit(dataset.fitting_media())
        dataset.split("train", bpe)
    assert len(token_files(cache)) == 4
    assert {token_cache.read(p, stored_key(p)).dtype for p in token_files(cache)} == {"uint8", "uint16"}


def test_a_fitted_bpe_reads_the_same_windows_and_byte_counts_from_the_map(tmp_path: Path) -> None:
    folder, cache = corpus_dir(tmp_path), tmp_path / "cache"
    mapped, held = files(folder, cache), files(folder, None)
    bpe = BpeTokenizer(vocab_size=320)
    bpe.fit(held.fitting_media())
    assert list(mapped.fitting_media()) == list(held.fitting_media())
    assert_same_windows(mapped, held, bpe)
    assert "bytes" in mapped.split("val", bpe)[0]
    hit = files(folder, cache)  # read back: the pieces' lengths come from the header
    assert_same_windows(hit, held, bpe)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other key"])
def test_a_damaged_cache_file_is_rebuilt_with_a_warning(tmp_path: Path, caplog, damage: str) -> None:
    folder, cache = corpus_dir(tmp_path), tmp_path / "cache"
    files(folder, cache).split("train", ByteTokenizer())
    [stored] = token_files(cache)
    data = stored.read_bytes()
    if damage == "truncate":
        stored.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        stored.write_bytes(b"\x00" * len(data))
    else:
        stored.write_bytes(data.replace(stored_key(stored).encode(), b"0" * 64))
    with caplog.at_level("WARNING", logger="genloom_text.corpus"):
        rebuilt = files(folder, cache)
        rebuilt.split("train", ByteTokenizer())
    assert f"the token cache {stored} cannot be used" in caplog.text
    assert_same_windows(rebuilt, files(folder, None), ByteTokenizer())
    assert token_cache.read(stored, stored_key(stored)).streams["all"].tokens == len(TEXT.encode()) + 2


def test_a_failed_tokenisation_leaves_no_file(tmp_path: Path) -> None:
    class Failing(BpeTokenizer):
        calls = 0

        def encode(self, text: str) -> torch.Tensor:
            Failing.calls += 1
            if Failing.calls == 3:
                raise KeyboardInterrupt
            return super().encode(text)

    folder, cache = corpus_dir(tmp_path), tmp_path / "cache"
    dataset, bpe = files(folder, cache), Failing(vocab_size=300)
    bpe.fit(dataset.fitting_media())
    with pytest.raises(KeyboardInterrupt):
        dataset.split("train", bpe)
    assert [p.name for p in cache.iterdir() if p.is_file()] == []  # neither a token file nor a temporary


def test_workers_and_pickles_map_the_file_instead_of_copying_the_ids(tmp_path: Path) -> None:
    folder, cache = corpus_dir(tmp_path, TEXT * 4), tmp_path / "cache"
    windows = files(folder, cache).split("train", ByteTokenizer())
    copy = pickle.loads(pickle.dumps(windows))
    assert len(pickle.dumps(windows)) < len(windows.tokens) // 2
    assert torch.equal(copy[5]["tokens"], windows[5]["tokens"])
    loader = torch.utils.data.DataLoader(windows, batch_size=8, num_workers=2)
    batches = torch.cat([batch["tokens"] for batch in loader])
    assert torch.equal(batches, torch.stack([windows[i]["tokens"] for i in range(len(windows))]))


def test_an_unusable_cache_dir_says_what_to_set(tmp_path: Path) -> None:
    folder = corpus_dir(tmp_path)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    message = r"cannot be written in .*a-file.*dataset.cache_dir.*token_cache=false"
    with pytest.raises(ValueError, match=message):
        files(folder, blocked / "tokens").split("train", ByteTokenizer())
    with pytest.raises(ValueError, match="dataset.token_cache must be true or false"):
        TextFiles(path=str(folder), block_size=BLOCK, token_cache="yes")


def test_the_default_cache_is_under_the_user_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GENLOOM_CACHE_DIR", str(tmp_path / "user"))
    TextFiles(path=str(corpus_dir(tmp_path)), block_size=BLOCK).split("train", ByteTokenizer())
    assert len(token_files(tmp_path / "user" / "tokens")) == 1


def test_errors_in_a_streamed_file_name_the_byte_offset_across_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(corpus_module, "CHUNK_BYTES", 7)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"plain ascii then caf\xe9")
    with pytest.raises(ValueError, match="byte offset 20"):
        TextFiles(path=str(latin), block_size=2)
    nul = tmp_path / "nul.txt"
    nul.write_bytes("\u00e9t\u00e9 and more text\x00".encode())
    with pytest.raises(ValueError, match=r"looks binary.*byte offset 19"):
        TextFiles(path=str(nul), block_size=2)
