"""The conditioning layers: embeddings with a "no condition", FiLM blocks in 1-D and 2-D, id checks."""

import pytest
import torch
from genloom_blocks.conditioning import (
    ConditionEmbedding,
    ConditionIds,
    ConvNorm,
    Down,
    Up,
    condition_embedding,
    embed,
)


def test_no_condition_has_an_embedding_of_its_own() -> None:
    torch.manual_seed(0)
    labels = ConditionEmbedding("label", num_classes=3, caption_buckets=1, dim=4)
    assert torch.equal(labels(None, 2), labels(torch.tensor([3, 3]), 2))  # index num_classes
    assert not torch.allclose(labels(None, 1), labels(torch.tensor([0]), 1))
    captions = ConditionEmbedding("caption", num_classes=1, caption_buckets=9, dim=4)
    assert torch.equal(captions(None, 2), captions(torch.zeros(2, 5, dtype=torch.long), 2))  # all padding
    padded = captions(torch.tensor([[2, 7, 0, 0]]), 1)
    assert torch.allclose(padded, captions(torch.tensor([[2, 7]]), 1))  # padding takes no part in the mean
    assert embed(None, torch.tensor([1]), 1) is None
    assert condition_embedding("none", 3, 9, 4) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("colour", 3, 9, 4), "generator.condition must be one of none, label, caption; got 'colour'"),
        (("label", 0, 9, 4), "generator.num_classes must be at least 1, got 0"),
        (("caption", 3, 9, 0), "generator.condition_dim must be at least 1, got 0"),
    ],
)
def test_bad_sizes_name_the_generator_key(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        condition_embedding(*args)


@pytest.mark.parametrize(("dims", "size"), [(1, (16,)), (2, (8, 6))])
def test_film_blocks_halve_and_double_1d_and_2d_maps_and_start_as_identity(dims: int, size: tuple) -> None:
    torch.manual_seed(0)
    x, c = torch.randn(2, 4, *size), torch.randn(2, 5)
    down, up = Down(4, 8, 5, dims=dims), Up(8, 4, 5, dims=dims)
    h = down(x, c)
    assert h.shape == (2, 8, *(s // 2 for s in size))
    assert up(h, c).shape == x.shape
    assert torch.equal(down(x, c), down(x, None))  # FiLM is zero at first: the condition's effect is learned
    with torch.no_grad():
        down.block.film.bias.normal_()
    assert not torch.allclose(down(x, c), down(x, None))
    assert ConvNorm(4, 8, 0, dims=dims).film is None  # unconditioned: no FiLM parameters at all
    with pytest.raises(ValueError, match="dims=3"):
        ConvNorm(4, 8, 5, dims=3)


def test_training_drops_conditions_to_no_condition_and_evaluation_keeps_them() -> None:
    torch.manual_seed(0)
    labels = ConditionIds("label", num_classes=3, caption_buckets=1, dropout=0.5)
    ids = labels.batch({"condition": torch.zeros(1000, dtype=torch.long)}, 1000, train=True)
    assert 400 < int((ids == 3).sum()) < 600 and set(ids.tolist()) == {0, 3}
    kept = labels.batch({"condition": torch.ones(4, dtype=torch.long)}, 4, train=False)
    assert kept.tolist() == [1, 1, 1, 1]
    captions = ConditionIds("caption", num_classes=1, caption_buckets=9, dropout=0.5)
    words = captions.batch({"condition": torch.full((1000, 3), 4)}, 1000, train=True)
    dropped = (words == 0).all(1)
    assert 400 < int(dropped.sum()) < 600 and (words[~dropped] == 4).all()


def test_batch_errors_say_which_dataset_condition_to_set() -> None:
    audio = ConditionIds(
        "label", num_classes=5, caption_buckets=1, dropout=0.0,
        dataset_conditions={"label": ("pitch", "timbre", "label")}, classes_hint=" (pitches: high - low + 1)",
    )
    with pytest.raises(ValueError, match=r"no 'condition'; set dataset.condition=pitch \(or timbre, label\)"):
        audio.batch({}, 2, train=True)
    with pytest.raises(ValueError, match=r"has shape \(2, 3\); set dataset.condition=pitch"):
        audio.batch({"condition": torch.zeros(2, 3, dtype=torch.long)}, 2, train=True)
    with pytest.raises(ValueError, match=r"data holds label 9, which is not a class.*\(pitches: high - low"):
        audio.batch({"condition": torch.tensor([1, 9])}, 2, train=True)
    image = ConditionIds("caption", num_classes=1, caption_buckets=9, dropout=0.0)
    with pytest.raises(ValueError, match=r"has shape \(2,\); set dataset.condition=caption$"):
        image.batch({"condition": torch.zeros(2, dtype=torch.long)}, 2, train=True)
    with pytest.raises(ValueError, match=r"generator.condition_dropout must lie in \[0, 1\), got 1.0"):
        ConditionIds("label", num_classes=2, caption_buckets=1, dropout=1.0)


def test_sampling_conditions_are_expanded_and_wrong_ones_explained() -> None:
    labels = ConditionIds("label", num_classes=3, caption_buckets=1, dropout=0.0)
    cpu = torch.device("cpu")
    assert labels.sampling(torch.tensor(2), 3, cpu).tolist() == [2, 2, 2]
    assert labels.sampling(None, 3, cpu) is None
    with pytest.raises(ValueError, match="label=3 is not a class of this model.*labels 0..2"):
        labels.sampling(torch.tensor(3), 1, cpu)
    with pytest.raises(ValueError, match="conditioned on labels.*label=N, 0 <= N < 3, not a prompt"):
        labels.sampling(torch.tensor([5, 9, 2]), 1, cpu)
    with pytest.raises(ValueError, match="integer ids"):
        labels.sampling(torch.tensor(1.0), 1, cpu)
    captions = ConditionIds("caption", num_classes=1, caption_buckets=9, dropout=0.0)
    assert captions.sampling(torch.tensor([4, 2, 0]), 2, cpu).tolist() == [[4, 2, 0], [4, 2, 0]]
    with pytest.raises(ValueError, match="outside 0..9 .generator.caption_buckets."):
        captions.sampling(torch.tensor([10]), 1, cpu)
    with pytest.raises(ValueError, match='prompt="a caption", not label='):
        captions.sampling(torch.tensor(2), 1, cpu)
    with pytest.raises(ValueError, match="trained without a condition"):
        ConditionIds("none", num_classes=1, caption_buckets=1, dropout=0.0).sampling(torch.tensor(1), 1, cpu)


def test_a_caption_embedding_is_projected_at_the_scale_of_the_word_tables() -> None:
    torch.manual_seed(0)
    sentences = ConditionEmbedding("caption", num_classes=1, caption_buckets=9, dim=64,
                                   caption_embedding_dim=384)
    vectors = torch.nn.functional.normalize(torch.randn(32, 384), dim=1)  # unit length, as MiniLM's
    assert torch.equal(sentences(None, 2), sentences(torch.zeros(2, 384), 2))  # all zeros: no condition
    projected = sentences.table(vectors)  # (32, 64)
    # Entries ~1 like the N(0, 1) label and word tables; nn.Linear's default init gives ~0.03.
    assert 0.8 < projected.std().item() < 1.2
    with pytest.raises(ValueError, match="caption_embedding_dim must be 0 .* or the width"):
        condition_embedding("caption", 1, 9, 4, caption_embedding_dim=-1)


def test_word_ids_and_embeddings_are_told_apart_with_the_keys_to_change() -> None:
    words = ConditionIds("caption", num_classes=1, caption_buckets=9, dropout=0.0)
    sentences = ConditionIds("caption", num_classes=1, caption_buckets=9, dropout=0.5,
                             caption_embedding_dim=6)
    vectors, ids = torch.rand(4, 6), torch.randint(1, 10, (4, 3))
    with pytest.raises(ValueError, match="float vectors of 6 values.*set generator.caption_embedding_dim=6"):
        words.batch({"condition": vectors}, 4, train=False)
    with pytest.raises(ValueError, match="are word ids.*condition_encoder=hf_sentence"):
        sentences.batch({"condition": ids}, 4, train=False)
    with pytest.raises(ValueError, match="embeddings of 5 values, but generator.caption_embedding_dim=6"):
        sentences.batch({"condition": torch.rand(4, 5)}, 4, train=False)
    with pytest.raises(ValueError, match="the prompt, encoded by the condition encoder, is float vectors"):
        words.sampling(torch.rand(6), 2, torch.device("cpu"))
    torch.manual_seed(0)
    dropped = sentences.batch({"condition": vectors}, 4, train=True)  # dropped rows are all zeros
    kept = (dropped == vectors).all(1)
    assert torch.equal(dropped[~kept], torch.zeros_like(dropped[~kept])) and 0 < kept.sum() < 4
    prompt = sentences.sampling(vectors[0].double(), 3, torch.device("cpu"))
    assert prompt.shape == (3, 6) and prompt.dtype == torch.float32
    assert sentences.sampling(None, 3, torch.device("cpu")) is None
