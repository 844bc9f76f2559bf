"""A media prior steered by a caption's sentence embedding (``caption_embedding_dim``): its
projection to prefix vectors, through the loss, sampling, guidance, the KV cache and serving slots.

The embeddings here are random unit vectors, as hf_sentence's are L2-normalised; the
sentence encoder itself steers a prior end to end in plugins/image/tests/test_two_stage_minilm.py.
"""

import pytest
import torch
import torch.nn.functional as F
from genloom_text.model import Transformer
from test_model import rng
from test_prior import PATTERNS, K, L, fit, lively_prior, one_thread, prior  # noqa: F401 - a fixture
from test_slots import drain

D, VECTORS = 16, 2  # embedding width, prefix vectors
EMBEDDINGS = F.normalize(torch.randn(len(PATTERNS), D, generator=torch.Generator().manual_seed(2)), dim=1)


def embedding_prior(lively: bool = False, **options: object) -> Transformer:
    settings = {"prefix": "caption", "caption_embedding_dim": D, "caption_vectors": VECTORS, **options}
    return (lively_prior if lively else prior)(sequence_key="image", **settings)


@pytest.mark.usefixtures("one_thread")
def test_the_prior_learns_each_embedding_s_pattern_and_its_loss_falls() -> None:
    torch.manual_seed(0)
    model = embedding_prior()
    batch = {"image": PATTERNS, "condition": EMBEDDINGS}
    before = model.loss(batch)["loss"].item()
    fit(model, lambda labels: EMBEDDINGS[labels])
    assert model.loss(batch)["loss"].item() < before / 4
    for c, embedding in enumerate(EMBEDDINGS):
        assert model.generate(2, condition=embedding, temperature=0).tolist() == [PATTERNS[c].tolist()] * 2
        no_cache = model.generate(1, condition=embedding, rng=rng(c), use_cache=False)
        assert model.generate(1, condition=embedding, rng=rng(c)).tolist() == no_cache.tolist()
    # The layout: codes, separator, null (an embedding takes no ids); k vectors before the separator.
    assert (model.vocab_size, model.block_size, model.media.prefix_length) == (K + 2, 12, VECTORS)


def test_the_projection_starts_at_the_scale_of_the_token_embeddings() -> None:
    torch.manual_seed(0)
    model = embedding_prior(n_embd=64)
    vectors = model._caption_vectors(EMBEDDINGS)  # (4, k, C)
    assert vectors.shape == (len(EMBEDDINGS), VECTORS, 64)
    ratio = vectors.std().item() / model.tok_emb.weight.std().item()
    assert 0.7 < ratio < 1.4, ratio


def test_an_embedding_row_in_a_slot_batch_equals_its_lone_stream() -> None:
    torch.manual_seed(0)
    model = embedding_prior(lively=True, condition_dropout=0.1)
    rows = [
        {"condition": EMBEDDINGS[0], "temperature": 0},
        {"condition": EMBEDDINGS[1], "temperature": 1.0},
        {"temperature": 1.0},  # no caption: the null prefix
        {"condition": EMBEDDINGS[2], "temperature": 0.8, "top_k": 4},
    ]
    expected = [model.generate(1, rng=rng(i), **options)[0].tolist() for i, options in enumerate(rows)]
    batch = model.open_slots(8)
    # Three rows start together (their prompts prefilled side by side); one joins a step later.
    slots = [batch.add(rng=rng(i), **options) for i, options in enumerate(rows[:3])]
    got = {slot: output.tokens.tolist() for slot, output in batch.step().items()}
    slots.append(batch.add(rng=rng(3), **rows[3]))
    for slot, tokens in drain(batch, slots).items():
        got[slot] = got.get(slot, []) + tokens
    assert [got[s] for s in slots] == expected
    # Alone or beside other rows, a row's samples are the same (batch invariance).
    crowded = model.open_slots(8)
    slot = crowded.add(rng=rng(1), **rows[1])
    others = [crowded.add(rng=rng(10 + i), condition=EMBEDDINGS[3]) for i in range(5)]
    assert drain(crowded, [slot, *others])[slot] == expected[1]


def test_guidance_contrasts_the_embedding_s_prefix_with_the_null_one() -> None:
    torch.manual_seed(0)
    model = embedding_prior(lively=True, condition_dropout=0.1).eval()
    embedding, guidance = EMBEDDINGS[0], 3.0
    separator = torch.tensor([[model.media.separator]])
    null = torch.full((1, VECTORS), model.media.null)
    with torch.no_grad():
        prompt = torch.cat([null, separator], dim=1)  # placeholders where the vectors stand
        conditional = model(prompt, prefix=model._caption_vectors(embedding[None]))[0, -1, :K]
        unconditional = model(prompt)[0, -1, :K]  # the null token's own vectors
    guided = unconditional + guidance * (conditional - unconditional)
    first = model.generate(2, condition=embedding, temperature=0, guidance=guidance)[:, 0]
    assert first.tolist() == [guided.argmax().item()] * 2
    assert guided.argmax() != conditional.argmax()  # so the guidance is seen to act
    # Without a prompt the prior samples from the null prefix it learned through dropout.
    assert model.generate(1, temperature=0)[0, 0].item() == unconditional.argmax().item()


def test_a_caption_of_the_wrong_kind_or_width_is_one_clear_error() -> None:
    model = embedding_prior()
    codes = torch.zeros(2, L, dtype=torch.long)
    width = r"embeddings of 5 values, but generator.caption_embedding_dim=16: set"
    with pytest.raises(ValueError, match=width):
        model.loss({"image": codes, "condition": torch.rand(2, 5)})
    with pytest.raises(ValueError, match=width):
        model.generate(1, condition=torch.rand(5))
    ids = r"caption_embedding_dim=16 reads .* ids of shape \(2, 4\): encode them with condition_encoder"
    with pytest.raises(ValueError, match=ids):
        model.loss({"image": codes, "condition": torch.zeros(2, 4, dtype=torch.long)})
    with pytest.raises(ValueError, match=r'steered by a caption: sample it with prompt="...", not label='):
        model.generate(1, condition=torch.tensor(1))
    byte_model = prior(sequence_key="image", prefix="caption", caption_length=3)
    floats = r"float vectors of shape \(2, 384\) .* set generator.caption_embedding_dim=384"
    with pytest.raises(ValueError, match=floats):
        byte_model.loss({"image": codes, "condition": torch.rand(2, 384)})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prefix": "caption", "caption_embedding_dim": D},
         r"generator.caption_vectors must be a positive integer .*generator.caption_embedding_dim; got None"),
        ({"prefix": "caption", "caption_embedding_dim": D, "caption_vectors": 2, "caption_length": 8},
         r"generator.caption_length is the bytes of a caption.*set generator.caption_length=null"),
        ({"prefix": "caption", "caption_length": 8, "caption_vectors": 2},
         r"generator.caption_vectors is for a caption given as a sentence embedding"),
        ({"prefix": "label", "num_classes": 3, "caption_embedding_dim": D},
         r"generator.caption_embedding_dim is for generator.prefix=caption, but the prefix is label"),
        ({"prefix": "caption", "caption_embedding_dim": -1, "caption_vectors": 2},
         r"generator.caption_embedding_dim must be 0 .* got -1"),
    ],
)
def test_embedding_options_that_do_not_fit_name_the_key_to_set(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prior(**options)


def test_a_language_model_takes_no_embedding_options() -> None:
    with pytest.raises(ValueError, match=r"generator.caption_embedding_dim=16 only apply to a token prior"):
        Transformer(caption_embedding_dim=D)
