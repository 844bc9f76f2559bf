"""The transformer as a token prior over media codes: prefix conditions, fixed-length sampling."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from genloom.classes import check_condition_classes
from genloom.interfaces import ClassConditioned, SampleSpec
from genloom_text.model import Transformer
from genloom_text.prefix import PrefixBytes
from omegaconf import OmegaConf
from test_model import rng
from test_slots import drain

K, L = 8, 6  # media codes per position, codes per example


def prior(**options: object) -> Transformer:
    settings = {"media_vocab": K, "media_tokens": L, "block_size": 12, "n_layer": 1, "n_head": 2}
    settings["n_embd"] = 32
    return Transformer(**{**settings, **options})


def lively_prior(**options: object) -> Transformer:
    """A prior with large random weights, whose predictions vary with the context."""
    model = prior(**options)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    return model


PATTERNS = torch.randint(0, K, (4, L), generator=torch.Generator().manual_seed(0))  # class c -> its codes
CAPTIONS = ["red", "blue", "green", "a long caption"]
CAPTION_LENGTH = 4


def captions(encoder: PrefixBytes, labels: torch.Tensor) -> torch.Tensor:
    return torch.stack([encoder.encode(CAPTIONS[int(c)]) for c in labels])


def fit(model: Transformer, condition_of, steps: int = 80) -> None:
    """Train on examples whose codes are their class's pattern, in the image datasets' layout."""
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    labels = torch.randint(0, len(PATTERNS), (steps, 32), generator=torch.Generator().manual_seed(1))
    model.train()
    for step in range(steps):
        batch = {"image": PATTERNS[labels[step]], "condition": condition_of(labels[step])}
        loss = model.loss(batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


@pytest.fixture
def one_thread():
    """A tiny model trains fastest on one thread (many times faster when the cores are busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("prefix", ["label", "caption"])
def test_the_prior_learns_to_emit_each_condition_s_pattern(prefix: str, one_thread: None) -> None:
    torch.manual_seed(0)
    if prefix == "label":
        model = prior(sequence_key="image", prefix="label", num_classes=4)
        fit(model, lambda labels: labels)
        conditions = [torch.tensor(c) for c in range(4)]
    else:
        encoder = PrefixBytes(offset=K, length=CAPTION_LENGTH)
        model = prior(sequence_key="image", prefix="caption", caption_length=CAPTION_LENGTH)
        fit(model, lambda labels: captions(encoder, labels))
        conditions = [encoder.encode(caption) for caption in CAPTIONS]
    for c, condition in enumerate(conditions):
        assert model.generate(2, condition=condition, temperature=0).tolist() == [PATTERNS[c].tolist()] * 2
        samples = model.generate(16, condition=condition, rng=rng(c))
        assert samples.shape == (16, L) and samples.dtype == torch.long
        assert samples.min() >= 0 and samples.max() < K
        assert (samples == PATTERNS[c]).float().mean() > 0.9  # sampled at temperature 1, it is sure too


def test_a_media_prior_declares_fixed_length_codes_and_its_classes() -> None:
    model = prior(prefix="label", num_classes=5)
    assert model.sample_spec == SampleSpec(shape=(L,), dtype=torch.long)
    assert isinstance(model, ClassConditioned) and model.num_condition_classes == 5
    assert model.vocab_size == K + 5 + 2  # codes, labels, separator, null
    assert prior(prefix="caption", caption_length=4).num_condition_classes is None
    text = Transformer(block_size=16, n_layer=1, n_head=2, n_embd=32)
    assert text.num_condition_classes is None and text.vocab_size == 256
    assert text.sample_spec == SampleSpec(shape=(None,), dtype=torch.long)


def test_a_media_prior_without_a_block_size_fits_its_prefix_separator_and_codes() -> None:
    # The context the last code is predicted from: prefix, separator and the first L - 1 codes.
    assert prior(block_size=None).block_size == L
    assert prior(block_size=None, prefix="label", num_classes=3).block_size == 1 + L
    assert prior(block_size=None, prefix="caption", caption_length=5).block_size == 5 + L


def test_samples_are_only_codes_exactly_l_long_whatever_the_options() -> None:
    model = lively_prior(prefix="label", num_classes=4)
    # The unused ids above K are likely under these random weights; they are never drawn.
    for options in ({}, {"temperature": 2.0}, {"top_k": 3}, {"top_p": 0.5}, {"use_cache": False}):
        samples = model.generate(64, condition=torch.tensor(2), rng=rng(0), **options)
        assert samples.shape == (64, L) and samples.min() >= 0 and samples.max() < K, options


def test_the_loss_scores_the_codes_among_k_and_ignores_the_prefix() -> None:
    model = lively_prior(prefix="caption", caption_length=3).eval()
    codes = torch.randint(0, K, (2, L), generator=rng(3))
    condition = PrefixBytes(offset=K, length=3).encode("hi")[None].expand(2, -1)
    scores = model.loss({"tokens": codes, "condition": condition})
    separator = torch.full((2, 1), K + 257)
    logits = model(torch.cat([condition, separator, codes], dim=1)[:, :-1])  # (2, 3 + L, V)
    expected = F.cross_entropy(logits[:, 3:, :K].flatten(0, 1), codes.flatten())
    torch.testing.assert_close(scores["loss"], expected)
    torch.testing.assert_close(scores["bits_per_token"], expected / math.log(2))
    # Scoring every position (the caption's bytes too, among all ids) is another number.
    targets = torch.cat([condition[:, 1:], separator, codes], dim=1)
    every = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert not torch.isclose(every, scores["loss"])


def test_evaluation_scores_of_an_example_do_not_depend_on_its_batch() -> None:
    model = lively_prior(prefix="label", num_classes=4, condition_dropout=0.5).eval()
    codes = torch.randint(0, K, (5, L), generator=rng(4))
    labels = torch.tensor([0, 1, 2, 3, 1])
    whole = model.loss({"tokens": codes, "condition": labels})["loss"]
    alone = torch.stack([model.loss({"tokens": codes[i : i + 1], "condition": labels[i : i + 1]})["loss"]
                         for i in range(5)])
    torch.testing.assert_close(whole, alone.mean())
    assert model.loss({"tokens": codes, "condition": labels})["loss"] == whole  # no dropout in eval
    model.train()  # in training, dropout nulls some prefixes, which changes the loss
    trained = [model.loss({"tokens": codes, "condition": labels})["loss"] for _ in range(8)]
    assert any(t != whole for t in trained)


def test_stream_and_slot_batch_give_what_generate_gives() -> None:
    encoder = PrefixBytes(offset=K, length=3)
    requests = []
    for prefix, conditions, extra in (
        ("label", [torch.tensor(c) for c in (0, 3, 1)], {"num_classes": 4}),
        ("caption", [encoder.encode(t) for t in ("ab", "", "xyz!")], {"caption_length": 3}),
        ("none", [None], {}),
    ):
        model = lively_prior(prefix=prefix, **extra)
        requests = [
            (condition, seed, options)
            for seed, condition in enumerate(conditions)
            for options in ({}, {"temperature": 0}, {"temperature": 0.8, "top_k": 3}, {"top_p": 0.7})
        ]
        expected = [model.generate(1, condition=c, rng=rng(s), **o)[0].tolist() for c, s, o in requests]
        streamed = [torch.cat(list(model.stream(1, condition=c, rng=rng(s), **o)), dim=1)[0].tolist()
                    for c, s, o in requests]
        assert streamed == expected
        batch = model.open_slots(len(requests))
        slots = [batch.add(condition=c, rng=rng(s), **o) for c, s, o in requests]
        rows = drain(batch, slots)
        assert [rows[slot] for slot in slots] == expected, prefix
        assert all(len(row) == L and max(row) < K for row in expected)


def test_guidance_contrasts_with_the_null_prefix() -> None:
    model = lively_prior(prefix="label", num_classes=4, condition_dropout=0.1)
    label = torch.tensor(2)
    # guidance=1 is the conditional distribution; 0 the unconditional one (the null prefix).
    assert model.generate(3, condition=label, temperature=0, guidance=1.0).tolist() == \
        model.generate(3, condition=label, temperature=0).tolist()
    assert model.generate(3, condition=label, temperature=0, guidance=0.0).tolist() == \
        model.generate(3, temperature=0).tolist()
    guided = model.generate(4, condition=label, rng=rng(0), guidance=3.0)
    assert guided.shape == (4, L) and guided.max() < K
    streamed = list(model.stream(4, condition=label, rng=rng(0), guidance=3.0))
    assert torch.equal(torch.cat(streamed, dim=1), guided)
    with pytest.raises(ValueError, match=r"guidance=2.0 is not supported by continuous batching"):
        model.open_slots(2).add(condition=label, guidance=2.0)


def test_guidance_without_condition_dropout_warns(caplog: pytest.LogCaptureFixture) -> None:
    model = lively_prior(prefix="label", num_classes=4)
    with caplog.at_level(logging.WARNING):
        model.generate(1, condition=torch.tensor(0), guidance=2.0)
    assert "trained without condition dropout" in caplog.text
    with pytest.raises(ValueError, match=r"guidance=2.0 needs a conditioned media prior"):
        prior().generate(1, guidance=2.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prefix": "label"}, r"generator.prefix=label only apply to a token prior"),
        ({"media_vocab": K, "media_tokens": None}, r"generator.media_tokens must be a positive integer"),
        ({"media_vocab": K, "media_tokens": L, "prefix": "label"},
         r"generator.num_classes must be a positive integer .* and generator.prefix=label; got None"),
        ({"media_vocab": K, "media_tokens": L, "prefix": "words"}, r"generator.prefix must be one of none"),
        ({"media_vocab": K, "media_tokens": L, "caption_length": 4},
         r"generator.caption_length is for generator.prefix=caption"),
        ({"media_vocab": K, "media_tokens": L, "condition_dropout": 0.2}, r"and 0 without a prefix"),
        ({"media_vocab": 300, "media_tokens": L, "vocab_size": 256},
         r"generator.vocab_size \(256\) is too small for media_vocab 300 \+ separator \+ null = 302 ids"),
        ({"media_vocab": K, "media_tokens": 16, "block_size": 16, "prefix": "caption", "caption_length": 8},
         r"generator.block_size \(16\) is too short .* set it to at least 24"),
        ({"block_size": None}, r"generator.block_size=null sizes a media prior's context to fit; a language"),
    ],
)
def test_bad_options_are_one_clear_error(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Transformer(**{"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32, **options})


def test_bad_sampling_requests_are_one_clear_error() -> None:
    model = prior(prefix="label", num_classes=4)
    out_of_range = r"^label 7 is out of range: generator.num_classes=4 takes labels 0..3"
    with pytest.raises(ValueError, match=out_of_range):
        model.generate(1, condition=torch.tensor(7))
    with pytest.raises(ValueError, match=r"label -1 is out of range"):
        model.open_slots(1).add(condition=torch.tensor(-1))
    with pytest.raises(ValueError, match=r"by a class label: sample it with label=N \(0..3\), not prompt="):
        model.generate(1, condition=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"with label=N \(0..3\); it was not trained to sample without"):
        model.generate(1)
    with pytest.raises(ValueError, match=r"max_new_tokens=3, but every sample of this media prior is 6"):
        model.generate(1, condition=torch.tensor(1), max_new_tokens=3)
    with pytest.raises(ValueError, match=r"takes no stop sequence"):
        model.open_slots(1).add(condition=torch.tensor(1), stop=torch.tensor([1]))
    with pytest.raises(ValueError, match=r"takes no condition \(generator.prefix=none\)"):
        prior().generate(1, condition=torch.tensor(1))
    captioned = prior(prefix="caption", caption_length=4)
    with pytest.raises(ValueError, match=r'steered by a caption: sample it with prompt="...", not label='):
        captioned.generate(1, condition=torch.tensor(1))
    with pytest.raises(ValueError, match=r"encode captions with condition_encoder=prefix_bytes offset=8"):
        captioned.generate(1, condition=PrefixBytes(offset=300, length=4).encode("ab"))
    with pytest.raises(ValueError, match=r"reads 4 caption ids per example.*=prefix_bytes length=4"):
        captioned.generate(1, condition=PrefixBytes(offset=K, length=5).encode("ab"))


def test_bad_batches_are_one_clear_error() -> None:
    model = prior(sequence_key="image", prefix="label", num_classes=4)
    codes = torch.zeros(2, L, dtype=torch.long)
    with pytest.raises(ValueError, match=r"the batch has no 'image' \(generator.sequence_key\), only 'tok"):
        model.loss({"tokens": codes, "condition": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match=r"batch\['image'\] must hold 6 int64 media codes .* shape \(2, 5\)"):
        model.loss({"image": codes[:, :5], "condition": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match=r"holds code 8, outside \[0, 8\) \(generator.media_vocab\)"):
        model.loss({"image": codes + 8, "condition": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match=r"needs each example's condition .* set dataset.condition=label"):
        model.loss({"image": codes})
    with pytest.raises(ValueError, match=r"label 4 is out of range"):
        model.loss({"image": codes, "condition": torch.tensor([0, 4])})
    with pytest.raises(ValueError, match=r"reads one class index per example.* shape \(2, 3\)"):
        model.loss({"image": codes, "condition": torch.zeros(2, 3, dtype=torch.long)})
    # A sentence embedding (condition_encoder=hf_sentence) is no prefix: said, not cast to ids.
    caption_model = prior(sequence_key="image", prefix="caption", caption_length=3)
    with pytest.raises(ValueError, match=r"reads token ids, but the condition holds float vectors"):
        caption_model.loss({"image": codes, "condition": torch.rand(2, 384)})


def test_sampling_without_a_condition_uses_the_null_prefix_when_dropout_trained_it() -> None:
    model = lively_prior(prefix="caption", caption_length=3, condition_dropout=0.2)
    samples = model.generate(2, rng=rng(0))
    null = torch.full((2, 3), model.media.null)
    separator = torch.full((2, 1), model.media.separator)
    first = model(torch.cat([null, separator], dim=1))[:, -1, :K].argmax(-1)
    assert samples.shape == (2, L)
    assert model.generate(2, temperature=0)[:, 0].tolist() == first.tolist()


def test_prefix_bytes_pads_offsets_and_cuts_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    encoder = PrefixBytes(offset=100, length=4)
    assert encoder.encode("ab").tolist() == [197, 198, 356, 356]
    assert encoder.encode("").tolist() == [356] * 4
    with caplog.at_level(logging.WARNING):
        assert encoder.encode("abcd").tolist() == [197, 198, 199, 200]
    assert not caplog.text
    with caplog.at_level(logging.WARNING):
        # "é" is two bytes: the cut keeps whole characters only.
        assert encoder.encode("abcé and more").tolist() == [197, 198, 199, 356]
    assert "caption 'abcé and more' is 14 bytes, longer than condition_encoder.length=4: only 'abc' is used" \
        in caplog.text
    with pytest.raises(ValueError, match=r"condition_encoder.length must be an integer of at least 1, got 0"):
        PrefixBytes(length=0)
    with pytest.raises(ValueError, match=r"prefix_bytes encodes text, got int"):
        encoder.encode(3)


def test_prefix_bytes_reports_only_the_first_cut_captions(caplog: pytest.LogCaptureFixture) -> None:
    encoder = PrefixBytes(length=1)
    with caplog.at_level(logging.WARNING):
        for i in range(20):
            encoder.encode(f"caption {i}")
    assert len(caplog.records) == 5 and "further cut captions are not reported" in caplog.records[-1].message


def test_genloom_train_checks_a_label_prior_against_the_dataset_s_classes() -> None:
    class FiveClasses:
        condition_classes = {f"class {i}": 10 for i in range(5)}

    generator = {"name": "transformer", "num_classes": 4}
    config = OmegaConf.create({"dataset": {"name": "fake"}, "generator": generator})
    too_few = r"dataset=fake has 5 classes .* \(generator.num_classes=4\): set generator.num_classes=5"
    with pytest.raises(ValueError, match=too_few):
        check_condition_classes(FiveClasses(), prior(prefix="label", num_classes=4), config)
    check_condition_classes(FiveClasses(), prior(prefix="label", num_classes=5), config)
