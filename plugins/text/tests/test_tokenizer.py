"""The bytes encoder and decoder: lossless text, safe streaming, readable sample files."""

import pytest
import torch
from genloom.interfaces import Decoder, Encoder, StreamingDecoder
from genloom_text.tokenizer import ByteDecoder, ByteTokenizer

TEXTS = [
    "plain ASCII, with punctuation!\n\ttabs too",
    "accents: café, naïve, Ångström, façade",
    "emoji: 🐍🚀 and a flag 🇫🇷",
    "CJK: 汉字 かな カナ 한국어",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_lossless(text: str) -> None:
    tokens = ByteTokenizer().encode(text)
    assert tokens.dtype == torch.long and tokens.dim() == 1
    assert tokens.tolist() == list(text.encode("utf-8"))
    assert ByteDecoder().decode(tokens) == text


def test_components_satisfy_the_core_protocols() -> None:
    assert isinstance(ByteTokenizer(), Encoder)
    assert isinstance(ByteDecoder(), Decoder)
    assert isinstance(ByteDecoder(), StreamingDecoder)
    assert ByteTokenizer.vocab_size == 256 and ByteDecoder.media_type == "text"


def test_decode_skips_padding_and_replaces_invalid_bytes() -> None:
    decoder = ByteDecoder()
    assert decoder.decode(torch.tensor([104, -1, 105, -1, -1])) == "hi"
    assert decoder.decode(torch.tensor([0xFF, 65])) == "\ufffdA"


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        ByteTokenizer().encode("bad \udc80 text")
    with pytest.raises(ValueError, match="token id 300 is not a byte"):
        ByteDecoder().decode(torch.tensor([65, 300]))


def test_incremental_decoding_waits_for_the_last_byte_of_a_character() -> None:
    text = "é🐍汉a"
    tokens = ByteTokenizer().encode(text)
    decode_chunk = ByteDecoder().incremental()
    pieces = [decode_chunk(tokens[i : i + 1]) for i in range(len(tokens))]
    assert [p for p in pieces if p] == ["é", "🐍", "汉", "a"]


def test_incremental_decoding_skips_padding_across_chunks() -> None:
    decode_chunk = ByteDecoder().incremental()
    assert decode_chunk(torch.tensor([-1, 0xC3])) == ""
    assert decode_chunk(torch.tensor([0xA9, -1])) == "é"
    # Each call starts its own decoder: a fresh one has nothing pending.
    assert ByteDecoder().incremental()(torch.tensor([0x41])) == "A"


def test_write_creates_one_file_per_sample_and_a_gallery(tmp_path) -> None:
    media = ["first sample\n", "one with a ``` fence inside"]
    paths = ByteDecoder().write(media, tmp_path / "samples")
    assert [p.name for p in paths] == ["sample_000.txt", "sample_001.txt", "samples.md"]
    assert [p.read_text(encoding="utf-8") for p in paths[:2]] == media
    gallery = paths[2].read_text(encoding="utf-8")
    assert "## sample_000" in gallery and "## sample_001" in gallery
    # The fence around the second sample is longer than the backticks inside it.
    assert "````text\none with a ``` fence inside\n````" in gallery
