"""Text corpora: deterministic, disjoint splits of full windows, and errors that say what to do."""

import codecs
import os
from pathlib import Path

import pytest
import torch
from genloom.interfaces import Dataset
from genloom_text.corpus import PydocCorpus, TextFiles
from genloom_text.tokenizer import ByteTokenizer

BLOCK = 64


class CountingEncoder(ByteTokenizer):
    def __init__(self) -> None:
        self.calls = 0

    def encode(self, text: str) -> torch.Tensor:
        self.calls += 1
        return super().encode(text)


def covered(windows: torch.utils.data.Dataset, n_tokens: int) -> torch.Tensor:
    """Which positions of the token stream the windows of a split read."""
    mask = torch.zeros(n_tokens, dtype=torch.bool)
    mask[(windows.starts[:, None] + torch.arange(windows.window)).flatten()] = True
    return mask


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_pydoc_splits_are_disjoint_representative_full_windows() -> None:
    from pydoc_data.topics import topics

    corpus = PydocCorpus(block_size=BLOCK)
    assert isinstance(corpus, Dataset)
    assert corpus.unit == "tok" and corpus.units_per_example == BLOCK
    encoder = ByteTokenizer()
    train, val = corpus.split("train", encoder), corpus.split("val", encoder)
    stream = encoder.encode("\n\n".join(topics[name] for name in sorted(topics)))
    n = len(stream)
    assert n > 400_000
    assert 0.08 < len(val) / (len(train) + len(val)) < 0.12
    for split in (train, val):
        example = split[len(split) // 2]["tokens"]
        assert example.dtype == torch.long and example.shape == (BLOCK + 1,)
    assert torch.equal(train[0]["tokens"], stream[: BLOCK + 1])
    assert not (covered(train, n) & covered(val, n)).any()
    # Validation is spread over the whole corpus, not taken from one end of it.
    assert val.starts.min() < n * 0.05 and val.starts.max() > n * 0.95


def test_splits_are_deterministic() -> None:
    encoder = ByteTokenizer()
    first, second = PydocCorpus(block_size=BLOCK), PydocCorpus(block_size=BLOCK)
    for split in ("train", "val"):
        a, b = first.split(split, encoder), second.split(split, encoder)
        assert torch.equal(a.starts, b.starts)
        assert torch.equal(a[3]["tokens"], b[3]["tokens"])


def test_the_corpus_is_encoded_once_per_encoder(tmp_path: Path) -> None:
    corpus = TextFiles(path=str(write(tmp_path / "a.txt", "some text. " * 200)), block_size=8)
    encoder = CountingEncoder()
    corpus.split("train", encoder)
    corpus.split("val", encoder)
    assert encoder.calls == 1


def test_a_small_corpus_still_gets_both_splits(tmp_path: Path) -> None:
    # 1,300 tokens with a context of 64: chunks shrink so that validation gets one in ten.
    corpus = TextFiles(path=str(write(tmp_path / "a.txt", "x" * 1300)), block_size=BLOCK)
    encoder = ByteTokenizer()
    train, val = corpus.split("train", encoder), corpus.split("val", encoder)
    assert len(val) >= 1 and len(train) >= 9
    assert not (covered(train, 1300) & covered(val, 1300)).any()


def test_text_files_reads_a_folder_recursively_a_file_or_a_glob(tmp_path: Path) -> None:
    write(tmp_path / "b.md", "# Markdown\n" * 30)
    write(tmp_path / "nested" / "deeper" / "a.txt", "plain text\n" * 30)
    write(tmp_path / "nested" / "c.rst", "reStructuredText\n" * 30)
    write(tmp_path / "code.py", "print('code')\n" * 30)
    write(tmp_path / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    write(tmp_path / ".git" / "notes.txt", "hidden\n")

    folder = TextFiles(path=str(tmp_path), block_size=8)
    assert [p.relative_to(tmp_path).as_posix() for p in folder.files] == [
        "b.md",
        "nested/c.rst",
        "nested/deeper/a.txt",
    ]
    single = TextFiles(path=str(tmp_path / "code.py"), block_size=8)
    assert single.files == [tmp_path / "code.py"]
    pattern = TextFiles(path=str(tmp_path / "**" / "*.py"), block_size=8)
    assert pattern.files == [tmp_path / "code.py"]
    train = single.split("train", ByteTokenizer())
    assert bytes(train[0]["tokens"].tolist()) == b"print('co"


def test_a_missing_path_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist.*missing"):
        TextFiles(path=str(tmp_path / "missing"), block_size=8)
    with pytest.raises(ValueError, match="matches no files"):
        TextFiles(path=str(tmp_path / "*.txt"), block_size=8)


def test_a_folder_without_text_files_lists_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no text files.*holds no files at all"):
        TextFiles(path=str(tmp_path), block_size=8)
    write(tmp_path / "data.bin", b"\x00\x01")
    with pytest.raises(ValueError, match=r"\.txt, \.text, \.md.*1 other file.*\*\*/\*\.py"):
        TextFiles(path=str(tmp_path), block_size=8)


def test_an_empty_corpus_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "blank.md", "\n\n  \n")
    with pytest.raises(ValueError, match="2 file.*hold no text"):
        TextFiles(path=str(tmp_path), block_size=8)


def test_a_corpus_too_short_for_the_context_says_how_many_tokens_it_needs(tmp_path: Path) -> None:
    corpus = TextFiles(path=str(write(tmp_path / "a.txt", "y" * 300)), block_size=BLOCK)
    with pytest.raises(ValueError, match="too short") as error:
        corpus.split("train", ByteTokenizer())
    message = str(error.value)
    assert "300 tokens" in message and "at least 650" in message  # 10 chunks of 64 + 1
    assert "generator.block_size (for example to 29)" in message


def test_a_binary_file_is_named_with_the_byte_offset(tmp_path: Path) -> None:
    nul = write(tmp_path / "nul.txt", b"hello\x00world")
    with pytest.raises(ValueError, match=r"nul\.txt looks binary.*byte offset 5"):
        TextFiles(path=str(nul), block_size=8)
    latin = write(tmp_path / "latin.txt", b"caf\xe9 au lait")
    not_utf8 = r"latin\.txt is neither UTF-8 nor marked by a byte-order mark: byte offset 3"
    with pytest.raises(ValueError, match=not_utf8):
        TextFiles(path=str(latin), block_size=8)
    assert TextFiles(path=str(latin), block_size=2, encoding="latin-1").files == [latin]


def corpus_text(corpus: TextFiles) -> str:
    return bytes(corpus.split("train", ByteTokenizer()).tokens.tolist()).decode("utf-8")


MIXED = {  # file -> (its bytes, the encoding it is read with)
    "plain.txt": ("na\u00efve caf\u00e9 \u2014 plain UTF-8\n".encode(), "utf-8"),
    "bom.txt": ("\ufeffr\u00e9sum\u00e9 behind a UTF-8 BOM\n".encode(), "utf-8 (BOM)"),
    "legacy.txt": ("fa\u00e7ade in Latin-1\n".encode("latin-1"), "latin-1"),
    "wide.txt": ("\u00fcber in UTF-16 with its BOM\n".encode("utf-16"), "utf-16 (BOM)"),
    "wider.txt": (codecs.BOM_UTF32_BE + "\u00e5 UTF-32 big-endian\n".encode("utf-32-be"), "utf-32 (BOM)"),
}


def test_each_file_is_decoded_by_its_bom_then_utf8_then_the_fallback(tmp_path: Path, caplog) -> None:
    for name, (data, _) in MIXED.items():
        write(tmp_path / name, data)
    with caplog.at_level("INFO", logger="genloom_text.corpus"):
        corpus = TextFiles(path=str(tmp_path), block_size=2, encoding="latin-1")
    assert corpus.encodings == {tmp_path / name: encoding for name, (_, encoding) in sorted(MIXED.items())}
    text = corpus_text(corpus)
    for sentence in ("na\u00efve caf\u00e9 \u2014", "r\u00e9sum\u00e9", "fa\u00e7ade", "\u00fcber", "\u00e5"):
        assert sentence in text  # no mojibake: the UTF-8 files are not read as Latin-1
    assert "\ufeff" not in text
    summary = "5 file(s) from {}: 1 utf-8, 1 utf-8 (BOM), 1 utf-16 (BOM), 1 utf-32 (BOM); 1 latin-1 (the "
    assert summary.format(tmp_path) + "dataset.encoding fallback): legacy.txt" in caplog.text


def test_the_error_for_a_legacy_file_suggests_a_fallback_that_spares_the_utf8_files(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "d\u00e9j\u00e0 vu in UTF-8\n" * 20)
    write(tmp_path / "b.txt", "d\u00e9j\u00e0 vu in Latin-1\n".encode("latin-1"))
    with pytest.raises(ValueError, match="b.txt is neither UTF-8") as error:
        TextFiles(path=str(tmp_path), block_size=8)
    assert "dataset.encoding=latin-1" in str(error.value)
    assert "files that are UTF-8 or start with a byte-order mark are still read as such" in str(error.value)
    corpus = TextFiles(path=str(tmp_path), block_size=8, encoding="latin-1")
    assert corpus_text(corpus).count("d\u00e9j\u00e0 vu") == 21


def test_utf16_without_a_mark_is_read_with_the_fallback_and_binary_still_refused(tmp_path: Path) -> None:
    wide = write(tmp_path / "wide.txt", "plain ASCII in UTF-16 without a mark\n".encode("utf-16-le"))
    corpus = TextFiles(path=str(wide), block_size=2, encoding="utf-16-le")
    assert corpus.encodings == {wide: "utf-16-le"} and "plain ASCII" in corpus_text(corpus)
    binary = write(tmp_path / "blob.txt", b"ab\x00")  # valid UTF-8 with a NUL; odd for UTF-16
    with pytest.raises(ValueError, match=r"blob\.txt looks binary"):
        TextFiles(path=str(binary), block_size=2, encoding="utf-16-le")


def test_a_broken_file_behind_a_bom_or_not_in_the_fallback_is_named(tmp_path: Path) -> None:
    bad_bom = write(tmp_path / "bom.txt", b"\xef\xbb\xbfok \xff")
    with pytest.raises(ValueError, match=r"bom\.txt starts with a UTF-8 byte-order mark.*byte offset 6"):
        TextFiles(path=str(bad_bom), block_size=2, encoding="latin-1")
    sjis = write(tmp_path / "sjis.txt", b"\x82\xa0 \xff\xfe")
    with pytest.raises(ValueError, match=r"sjis\.txt is neither UTF-8 nor ascii text"):
        TextFiles(path=str(sjis), block_size=2, encoding="ascii")


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    path = str(write(tmp_path / "a.txt", "text " * 100))
    with pytest.raises(ValueError, match="dataset.encoding 'nope'"):
        TextFiles(path=path, block_size=8, encoding="nope")
    with pytest.raises(ValueError, match=r"dataset.val_fraction must be in \(0, 0.5\]"):
        TextFiles(path=path, block_size=8, val_fraction=0.9)
    with pytest.raises(ValueError, match="dataset.block_size must be a positive integer"):
        PydocCorpus(block_size=0)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        TextFiles(path=path, block_size=8).split("test", ByteTokenizer())  # type: ignore[arg-type]


def test_symlinked_folders_are_read_and_devices_named(tmp_path: Path) -> None:
    write(tmp_path / "elsewhere" / "b.txt", "linked text\n" * 30)
    write(tmp_path / "corpus" / "a.txt", "own text\n" * 30)
    (tmp_path / "corpus" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "corpus" / "loop").symlink_to(tmp_path / "corpus", target_is_directory=True)
    corpus = TextFiles(path=str(tmp_path / "corpus"), block_size=8)
    assert [p.relative_to(tmp_path / "corpus").as_posix() for p in corpus.files] == ["a.txt", "linked/b.txt"]
    globbed = TextFiles(path=f"{tmp_path}/corpus/**/*.txt", block_size=8)
    assert globbed.files == corpus.files
    with pytest.raises(ValueError, match="'/dev/null' is a character device, not a text file or folder"):
        TextFiles(path="/dev/null", block_size=8)
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ValueError, match=r"is a named pipe \(FIFO\), not a text file or folder"):
        TextFiles(path=str(tmp_path / "pipe"), block_size=8)
    with pytest.raises(ValueError, match="root of the file system"):
        TextFiles(path="/**/*.conf", block_size=8)
