"""encoder=bpe: a byte-level BPE fitted on the training split and stored in the checkpoint."""

import hashlib
import json
import math
import random
import shutil
import subprocess
import sys
import textwrap
from pydoc_data.topics import topics

import pytest
import torch
from genloom import checkpoint, cli, sampler
from genloom.distributed import Placement
from genloom.testing import only_plugins
from genloom.trainer import evaluate
from genloom_text.bpe import BpeDecoder, BpeTokenizer
from genloom_text.corpus import TextSplits
from genloom_text.model import Transformer

CORPUS = "\n\n".join(topics[name] for name in sorted(topics))[:60_000]
TRAIN = ["train", "pipeline=text_bpe_debug", "trainer=debug", "trainer.progress=false",
         "trainer.eval_every=100", "trainer.checkpoint_every=100"]


@pytest.fixture(scope="module")
def fitted() -> tuple[BpeTokenizer, BpeDecoder]:
    encoder = BpeTokenizer(vocab_size=400)
    encoder.fit([CORPUS[i : i + 4096] for i in range(0, len(CORPUS), 4096)])
    decoder = BpeDecoder()
    decoder.load_fitted(encoder.fitted_state())
    return encoder, decoder


def random_text(rng: random.Random, length: int) -> str:
    """Any Unicode but surrogates and U+FFFD: emoji with joiners, CJK, combining marks, NUL..."""
    pools = [
        (0x20, 0x7E), (0x00, 0x1F), (0xA0, 0xFF), (0x300, 0x36F), (0x4E00, 0x9FFF),
        (0x1F300, 0x1FAFF), (0x200D, 0x200D), (0xAC00, 0xD7A3), (0xE000, 0xFFFC), (0x10000, 0x10FFFF),
    ]
    chars = []
    for _ in range(length):
        low, high = rng.choice(pools)
        chars.append(chr(rng.randint(low, high)))
    return "".join(chars)


def test_any_utf8_round_trips_and_streams_whole_characters(fitted):
    encoder, decoder = fitted
    rng = random.Random(0)
    texts = [random_text(rng, rng.randint(0, 40)) for _ in range(300)]
    texts += ["", "\x00", "e\u0301", "👩\u200d👩\u200d👧", "日本語のテキスト", "\U0010ffff", CORPUS[:500]]
    for text in texts:
        ids = encoder.encode(text)
        assert ids.dtype == torch.long and (ids.numel() == 0 or int(ids.max()) < encoder.vocab_size)
        assert decoder.decode(ids) == text
        # Streamed in random chunks, no piece shows half a character.
        stream = decoder.incremental()
        cuts = sorted(rng.sample(range(len(ids) + 1), min(len(ids) + 1, 4)))
        pieces = [stream(ids[a:b]) for a, b in zip([0, *cuts], [*cuts, len(ids)], strict=True)]
        assert "".join(pieces) == text
        assert all("\ufffd" not in piece for piece in pieces)


def test_ids_below_256_are_the_bytes_and_merges_shorten_text(fitted):
    encoder, _ = fitted
    assert encoder.encode("\n").tolist() == [10]
    assert encoder.encode("\x00").tolist() == [0]
    assert encoder.token_bytes()[:256].tolist() == [1] * 256
    assert encoder.vocab_size == 400
    ids = encoder.encode(CORPUS)
    assert len(CORPUS.encode()) / len(ids) > 1.5  # merges learnt: far fewer tokens than bytes
    assert int(encoder.token_bytes()[ids].sum()) == len(CORPUS.encode())


def test_fitting_is_deterministic_across_processes(fitted):
    encoder, _ = fitted
    code = textwrap.dedent("""
        import hashlib
        from genloom_text.bpe import BpeTokenizer
        from pydoc_data.topics import topics
        corpus = "\\n\\n".join(topics[name] for name in sorted(topics))[:60_000]
        encoder = BpeTokenizer(vocab_size=400)
        encoder.fit([corpus[i : i + 4096] for i in range(0, len(corpus), 4096)])
        print(hashlib.sha256(encoder.fitted_state().encode()).hexdigest())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha256(encoder.fitted_state().encode()).hexdigest()


def test_an_unfitted_encoder_says_so():
    with pytest.raises(ValueError, match="not been fitted"):
        BpeTokenizer().encode("text")
    with pytest.raises(ValueError, match="encoder.vocab_size"):
        BpeTokenizer(vocab_size=100)


def test_fitting_streams_the_text_and_holds_one_piece_at_a_time():
    """A corpus larger than memory can be fitted: ``fit`` must not gather the pieces first."""
    import tracemalloc

    piece = CORPUS[:8192]
    pieces = 2_500  # 20 MB of text, made one piece at a time
    tracemalloc.start()
    try:
        BpeTokenizer(vocab_size=300).fit(piece[: 8192 - i % 7] for i in range(pieces))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"fitting held {peak / 2**20:.1f} MiB of Python objects for 20 MB of pieces"


def test_fitting_on_nothing_but_empty_pieces_says_so():
    with pytest.raises(ValueError, match="no training text"):
        BpeTokenizer().fit(iter(["", "", ""]))


def test_bits_per_byte_are_total_bits_over_total_bytes(fitted):
    encoder, decoder = fitted
    splits = TextSplits(CORPUS[:8_000], source="test text", block_size=12, val_fraction=0.25)
    val = splits.split("val", encoder)
    torch.manual_seed(0)
    model = Transformer(vocab_size=encoder.vocab_size, block_size=12, n_layer=1, n_head=2, n_embd=16).eval()
    bits, nbytes = 0.0, 0
    with torch.no_grad():
        for i in range(len(val)):
            tokens = val[i]["tokens"]
            logits = model(tokens[None, :-1])[0].double()  # (T, vocab)
            nats = torch.nn.functional.cross_entropy(logits, tokens[1:], reduction="sum")
            bits += float(nats) / math.log(2)
            nbytes += len(decoder._bytes(tokens[1:]))  # the bytes the targets decode to
    placement = Placement(torch.device("cpu"))
    for batch_size in (1, 5, len(val)):
        metrics = evaluate(model, val, batch_size=batch_size, max_batches=None, placement=placement)
        assert metrics["bits_per_byte"] == pytest.approx(bits / nbytes, rel=1e-5)
        assert "bits_per_byte/weight" not in metrics


def test_validation_text_is_kept_out_of_fitting():
    splits = TextSplits(CORPUS, source="test text", block_size=16, val_fraction=0.1)
    pieces = splits.pieces()
    assert "".join(pieces["train"]) != CORPUS and len(pieces["val"]) >= 1
    seen = []

    class Spy(BpeTokenizer):
        def fit(self, media):
            media = list(media)
            seen.extend(media)
            super().fit(media)

    encoder = Spy(vocab_size=300)
    encoder.fit(pieces["train"])
    val = splits.split("val", encoder)
    assert not set(seen) & set(pieces["val"])
    # Every validation window decodes to text from a validation piece.
    decoder = BpeDecoder()
    decoder.load_fitted(encoder.fitted_state())
    window = decoder.decode(val[0]["tokens"])
    assert any(window in piece for piece in pieces["val"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A text_bpe_debug run on a corpus file, trained for 4 steps, then resumed on changed text."""
    root = tmp_path_factory.mktemp("bpe")
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    out = root / "run"
    with only_plugins(["genloom_text.plugin"]):
        assert cli.main([*TRAIN, "dataset=text_files", f"dataset.path={corpus}", "trainer.max_steps=4",
                         f"hydra.run.dir={out}"]) == 0
    first = (out / "checkpoints" / "step_000004" / "tokenizer.json").read_text()
    # Resuming on a corpus whose text changed must not fit again: the checkpoint's tokenizer rules.
    corpus.write_text(CORPUS[::-1], encoding="utf-8")
    with only_plugins(["genloom_text.plugin"]):
        assert cli.main([*TRAIN, "dataset=text_files", f"dataset.path={corpus}", "trainer.max_steps=6",
                         "trainer.resume=true", f"hydra.run.dir={out}"]) == 0
    corpus.unlink()  # sampling needs the checkpoint alone
    return out, first


def test_resume_restores_the_tokenizer_instead_of_fitting_again(run):
    out, first = run
    assert (out / "checkpoints" / "step_000006" / "tokenizer.json").read_text() == first
    assert json.loads(first)["model"]["type"] == "BPE"


def test_sampling_needs_the_checkpoint_alone(run, tmp_path, capsys):
    out, _ = run
    prompt = "日本 👍"  # fits the context of 16 tokens
    with only_plugins(["genloom_text.plugin"]):
        assert cli.main(["sample", f"checkpoint={out}", "n=1", f'prompt="{prompt}"', "max_new_tokens=8",
                         f"hydra.run.dir={tmp_path}"]) == 0
    text = (tmp_path / "samples" / "sample_000.txt").read_text(encoding="utf-8")
    # Streamed after the prompt as it is generated (a last, unfinished character held back).
    assert text and f"--- sample 0 ---\n{prompt}{text[:3]}" in capsys.readouterr().out


def test_an_hf_export_carries_the_fitted_tokenizer(run, tmp_path):
    transformers = pytest.importorskip("transformers")
    out, _ = run
    hf = tmp_path / "hf"
    with only_plugins(["genloom_text.plugin"]) as plugins:
        assert cli.main(["export", f"checkpoint={out}", "format=hf", f"out={hf}"]) == 0
        encoder = sampler.load(out, plugins, "cpu").pipeline.encoder
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf)
    text = "The 日本語 👍 e\u0301 def f(x):\n    return x"
    assert tokenizer(text)["input_ids"] == encoder.encode(text).tolist()
    assert tokenizer.decode(encoder.encode(text).tolist()) == text


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda p: p.write_text("{not json"), "is not valid JSON"),
        (lambda p: p.write_text("[1, 2]"), "must hold a JSON object"),
        (lambda p: p.write_text('{"model": {"type": "WordPiece", "vocab": {}}}'), "not a BPE tokenizer"),
        (lambda p: p.write_text(_swapped_bytes(p.read_text())), "not the 256 bytes in byte order"),
        (lambda p: p.write_text(_renamed_type(p.read_text())), "tokenizers library cannot read it"),
        (lambda p: p.unlink(), "is missing"),
        (lambda p: (p.unlink(), p.mkdir()), "not a regular file"),
    ],
    ids=["not-json", "not-object", "not-bpe", "bytes-reordered", "unreadable", "missing", "directory"],
)
def test_a_damaged_tokenizer_json_is_refused_clearly(run, tmp_path, damage, said):
    out, _ = run
    step = tmp_path / "step_000006"
    shutil.copytree(out / "checkpoints" / "step_000006", step)
    damage(step / "tokenizer.json")
    with only_plugins(["genloom_text.plugin"]) as plugins, pytest.raises(
        checkpoint.CheckpointError, match=said
    ) as caught:
        sampler.load(step, plugins, "cpu")
    assert "tokenizer.json" in str(caught.value)


def test_the_cli_reports_a_damaged_tokenizer_in_one_line(run, tmp_path, capsys):
    out, _ = run
    step = tmp_path / "step_000006"
    shutil.copytree(out / "checkpoints" / "step_000006", step)
    (step / "tokenizer.json").write_text("{not json")
    with only_plugins(["genloom_text.plugin"]):
        assert cli.main(["sample", f"checkpoint={step}", f"hydra.run.dir={tmp_path / 'out'}"]) == 1
    captured = capsys.readouterr()
    assert "tokenizer.json is not valid JSON" in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err


def test_a_generator_too_small_for_the_vocabulary_is_refused(tmp_path, capsys):
    with only_plugins(["genloom_text.plugin"]):
        code = cli.main(["train", "pipeline=text_debug", "encoder=bpe", "decoder=bpe",
                         "encoder.vocab_size=300", "trainer=debug", f"hydra.run.dir={tmp_path}"])
    assert code == 1
    captured = capsys.readouterr()
    assert "generator.vocab_size=256 is smaller than the 300 token ids" in captured.out + captured.err


def _swapped_bytes(state: str) -> str:
    data = json.loads(state)
    vocab = data["model"]["vocab"]
    a, b = (token for token, i in vocab.items() if i in (0, 1))
    vocab[a], vocab[b] = vocab[b], vocab[a]
    return json.dumps(data)


def _renamed_type(state: str) -> str:
    data = json.loads(state)
    data["decoder"] = {"type": "NoSuchDecoder"}
    return json.dumps(data)
