"""hf_tokenizer: encoding, decoding, streaming without broken characters, the text datasets."""

import pytest
import torch
from genloom_hf.tokenizer import HFTokenizer, HFTokenizerDecoder
from genloom_text.corpus import TextFiles

TEXT = "Grüße, 世界! naïve café — emoji 🧵 and plain words\nsecond line"


def test_text_round_trips_and_llama_starts_with_bos(model_dir) -> None:
    encoder, decoder = HFTokenizer(path=str(model_dir)), HFTokenizerDecoder(path=str(model_dir))
    ids = encoder.encode(TEXT)
    assert ids.dtype == torch.long and ids.dim() == 1
    assert decoder.decode(ids) == TEXT
    plain = HFTokenizer(path=str(model_dir), add_special_tokens=False).encode(TEXT)
    if model_dir.name.startswith("tiny-llama"):
        assert ids[0].item() == 1 and ids[1:].tolist() == plain.tolist()  # <s> first
    else:
        assert ids.tolist() == plain.tolist()


def test_streaming_one_token_at_a_time_never_shows_half_a_character(model_dir) -> None:
    encoder, decoder = HFTokenizer(path=str(model_dir)), HFTokenizerDecoder(path=str(model_dir))
    ids = encoder.encode(TEXT)
    step = decoder.incremental()
    pieces = [step(torch.tensor([[i]])) for i in ids.tolist()]
    assert "".join(pieces) == TEXT
    assert not any("\ufffd" in piece for piece in pieces)
    assert sum(piece == "" for piece in pieces) > 0  # some tokens held back (split characters)
    padded = decoder.incremental()  # -1 is a stopped row's padding: skipped
    assert "".join(padded(torch.tensor([i, -1])) for i in ids.tolist()) == TEXT


def test_the_text_datasets_work_unchanged_with_it(gpt2_dir, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text(TEXT * 40, encoding="utf-8")
    encoder = HFTokenizer(path=str(gpt2_dir))
    train = TextFiles(path=str(tmp_path), block_size=16).split("train", encoder)
    example = train[0]["tokens"]
    assert example.shape == (17,) and int(example.max()) < encoder.vocab_size


def test_a_directory_without_tokenizer_json_and_foreign_ids_are_refused(gpt2_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="encoder.path=.* holds no tokenizer.json"):
        HFTokenizer(path=str(tmp_path))
    decoder = HFTokenizerDecoder(path=str(gpt2_dir))
    with pytest.raises(ValueError, match="token id 5000 is outside the tokenizer .* decoder.path"):
        decoder.decode(torch.tensor([1, 5000]))


def test_token_bytes_count_the_bytes_each_id_decodes_to(model_dir) -> None:
    encoder = HFTokenizer(path=str(model_dir), add_special_tokens=False)
    lengths = encoder.token_bytes()
    assert lengths.shape == (encoder.vocab_size,)
    ids = encoder.encode(TEXT)
    assert int(lengths[ids].sum()) == len(TEXT.encode("utf-8"))
    eos = "<|endoftext|>" if "gpt2" in model_dir.name else "</s>"
    assert lengths[encoder.tokenizer.token_to_id(eos)] == 0


def test_the_token_cache_keys_by_the_tokenizer_and_its_options(gpt2_dir, tmp_path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "notes.txt").write_text(TEXT * 40, encoding="utf-8")
    plain = HFTokenizer(path=str(gpt2_dir), add_special_tokens=False)
    assert plain.fingerprint() != HFTokenizer(path=str(gpt2_dir)).fingerprint()
    cache = tmp_path / "cache"
    cached = TextFiles(path=str(tmp_path / "corpus"), block_size=16, cache_dir=str(cache))
    held = TextFiles(path=str(tmp_path / "corpus"), block_size=16, token_cache=False)
    for split in ("train", "val"):
        a, b = cached.split(split, plain), held.split(split, plain)
        assert torch.equal(a.starts, b.starts)
        assert all(torch.equal(a[i]["tokens"], b[i]["tokens"]) for i in range(len(a)))
        assert all(torch.equal(a[i]["bytes"], b[i]["bytes"]) for i in range(len(a)))
    assert len(list(cache.glob("*.tokens"))) == 1
