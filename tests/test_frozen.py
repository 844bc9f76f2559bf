"""Two-stage pipelines: a frozen stage 1 (encoder/decoder from_checkpoint), self-contained stage-2
checkpoints, and splits encoded once per run directory. Only the fake plugin and genloom's
built-in plugin are loaded (the fake quantiser is the Tokenizing stage 1)."""

import json
import shutil
from pathlib import Path

import fake_plugin.quantiser
import pytest
import torch
from genloom import cache, checkpoint, cli, frozen, sampler
from hydra.core.global_hydra import GlobalHydra
from safetensors.torch import load, save_file


def load_file(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, read into memory (not mapped: the file may change)."""
    return load(Path(path).read_bytes())

QUIET = ["trainer=debug", "trainer.progress=false"]
MEDIA = [0.0, 0.5, 1.0, 0.5, 0.0, -0.5, -1.0, -0.5]


def said(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def train(run_dir: Path, pipeline: str, *overrides: str) -> int:
    status = cli.main(["train", f"pipeline={pipeline}", *QUIET, f"hydra.run.dir={run_dir}", *overrides])
    GlobalHydra.instance().clear()
    return status


def sample(checkpoint_dir: Path, out: Path, *overrides: str) -> int:
    status = cli.main(["sample", f"checkpoint={checkpoint_dir}", "n=3", f"hydra.run.dir={out}", *overrides])
    GlobalHydra.instance().clear()
    return status


@pytest.fixture(scope="module")
def trained_stage_1(tmp_path_factory) -> Path:
    """A pipeline=waves run (the quantiser, a few steps), trained once for this module."""
    import fake_plugin
    from genloom import plugins


    sources = [fake_plugin.source(), fake_plugin.two_stage_source(), fake_plugin.builtin_source()]
    plugins.set_active(plugins.load_plugins(sources, strict=True, disabled=[]))
    try:
        run = tmp_path_factory.mktemp("stage1") / "run"
        assert train(run, "waves") == 0
    finally:
        plugins.set_active(None)
    return run


@pytest.fixture
def stage_1(trained_stage_1, tmp_path) -> Path:
    """A copy of the stage-1 run that a test may delete or damage."""
    run = tmp_path / "stage1"
    shutil.copytree(trained_stage_1, run)
    return run


@pytest.fixture
def encode_calls(monkeypatch) -> list:
    """Every media item stage 1's own encoder encodes."""
    calls = []
    original = fake_plugin.quantiser.FloatsEncoder.encode

    def counted(self, media):
        calls.append(media)
        return original(self, media)

    monkeypatch.setattr(fake_plugin.quantiser.FloatsEncoder, "encode", counted)
    return calls


def stage_2(tmp_path: Path, stage_1: Path, *overrides: str) -> Path:
    run = tmp_path / "stage2"
    assert train(run, "wave_tokens", f"encoder.checkpoint={stage_1}", *overrides) == 0
    return run


# ------------------------------------------------------------------ sizes read from the stage 1


def test_a_stage_2_preset_reads_the_codebook_size_from_whatever_stage_1_it_is_given(
        two_stage_plugins, tmp_path):
    """wave_tokens sets generator.vocab_size=${frozen:encoder.codebook_size}: a stage 1 with 7
    levels (not the quantiser's default 5) needs no override, and the stage-2 checkpoint
    records the number it read."""
    wide = tmp_path / "wide"
    assert train(wide, "waves", "generator.levels=7") == 0
    run = stage_2(tmp_path, wide)
    stored = checkpoint.read(run).config
    assert stored.generator.vocab_size == 7
    assert sample(run, tmp_path / "out") == 0


def test_a_size_read_from_a_component_that_is_not_frozen_is_one_message(two_stage_plugins, tmp_path, capsys):
    assert train(tmp_path / "run", "waves", "generator.levels=${frozen:encoder.codebook_size}") == 1
    out = said(capsys)
    assert "${frozen:encoder.codebook_size}: encoder is 'floats', not from_checkpoint" in out
    assert "Traceback" not in out


def test_a_size_that_stage_1_does_not_have_is_one_message(two_stage_plugins, stage_1, tmp_path, capsys):
    assert train(tmp_path / "run", "wave_tokens", f"encoder.checkpoint={stage_1}",
                 "generator.vocab_size=${frozen:encoder.levels}") == 1
    out = said(capsys)
    assert "${frozen:encoder.levels}: a frozen stage 1 offers codebook_size and token_count" in out
    assert "Traceback" not in out


# ---------------------------------------------------------------------------------- the components


def test_the_frozen_encoder_is_stage_1s_encoder_then_its_tokenizer(two_stage_plugins, stage_1):
    encoder = frozen.encoder_from_checkpoint(checkpoint=str(stage_1))
    stage1 = sampler.load(stage_1, two_stage_plugins, "cpu")
    with torch.no_grad():
        expected = stage1.pipeline.generator.tokenize(stage1.pipeline.encoder.encode(MEDIA)[None])[0]
    codes = encoder.encode(MEDIA)
    assert codes.dtype == torch.long and codes.shape == (8,)
    assert torch.equal(codes, expected)
    assert int(codes.min()) >= 0 and int(codes.max()) < encoder.codebook_size == 5
    generator = encoder.stage.generator
    assert not generator.training and not any(p.requires_grad for p in generator.parameters())
    many = [MEDIA, [-v for v in MEDIA], [0.1] * 8]
    one_by_one = torch.stack([encoder.encode(m) for m in many])
    assert torch.equal(encoder.encode_many(many, batch_size=2), one_by_one)


def test_the_frozen_decoder_detokenizes_then_decodes_and_reads_codes(two_stage_plugins, stage_1, tmp_path):
    decoder = frozen.decoder_from_checkpoint(checkpoint=str(stage_1))
    stage1 = sampler.load(stage_1, two_stage_plugins, "cpu")
    codes = torch.tensor([0, 1, 2, 3, 4, 3, 2, 1])
    with torch.no_grad():
        expected = stage1.pipeline.decoder.decode(stage1.pipeline.generator.detokenize(codes[None])[0])
    assert decoder.decode(codes) == expected
    assert decoder.media_type == "text"
    assert decoder.input_range == (0.0, 4.0)  # codes in [0, K): what the value_range rule checks
    assert [p.name for p in decoder.write([expected], tmp_path)] == ["vector_000.txt"]  # stage 1's write
    with pytest.raises(ValueError, match=r"reads integer codes in \[0, 5\); got torch.int64 values"):
        decoder.decode(torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]))
    with pytest.raises(ValueError, match=r"reads 8 codes per example .* got a tensor of shape \(1, 3\)"):
        decoder.decode(torch.tensor([0, 1, 2]))


def test_encoder_and_decoder_of_one_stage_1_load_it_once(two_stage_plugins, stage_1):
    encoder = frozen.encoder_from_checkpoint(checkpoint=str(stage_1))
    decoder = frozen.decoder_from_checkpoint(checkpoint=str(stage_1 / "checkpoints"))
    assert encoder.stage is decoder.stage


def test_step_picks_a_step_of_the_stage_1_run(two_stage_plugins, stage_1):
    encoder = frozen.encoder_from_checkpoint(checkpoint=str(stage_1), step=2)
    assert encoder.stage.source.step == 2
    expected = r"step=3: .*step_000003 does not exist \(steps there: step_000002, step_000004\)"
    with pytest.raises(checkpoint.CheckpointError, match=expected):
        frozen.encoder_from_checkpoint(checkpoint=str(stage_1), step=3)


# ---------------------------------------------------------------------- the whole two-stage path


def test_a_stage_2_checkpoint_samples_after_stage_1_is_deleted(two_stage_plugins, stage_1, tmp_path, capsys):
    run = stage_2(tmp_path, stage_1)
    step_dir = checkpoint.resolve(run)
    source = json.loads((step_dir / "frozen" / "encoder" / "source.json").read_text())
    stage_1_step = checkpoint.resolve(stage_1)
    assert source == {"path": str(stage_1_step.resolve()), "step": 4,
                      "sha256": frozen.sha256(stage_1_step / "model.safetensors")}
    for key in ("encoder", "decoder"):
        stored = step_dir / "frozen" / key
        assert sorted(p.name for p in stored.iterdir()) == [
            "config.yaml", "meta.json", "model.safetensors", "source.json"]
        weights = (stage_1_step / "model.safetensors").read_bytes()
        assert (stored / "model.safetensors").read_bytes() == weights
    assert checkpoint.read_config(step_dir / "config.yaml").encoder.checkpoint == str(stage_1)  # the record
    shutil.rmtree(stage_1)
    said(capsys)
    assert sample(run, tmp_path / "samples") == 0
    files = sorted((tmp_path / "samples" / "samples").glob("*.txt"))
    assert [f.name for f in files] == ["vector_000.txt", "vector_001.txt", "vector_002.txt"]
    assert all(len(f.read_text().split()) == 8 for f in files)  # stage 1's vectors, decoded from codes
    assert cli.main(["eval", f"checkpoint={run}", f"hydra.run.dir={tmp_path / 'eval'}"]) == 0
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["step"] == 4
    assert "Traceback" not in said(capsys)


def test_a_moved_stage_2_run_still_samples(two_stage_plugins, stage_1, tmp_path):
    run = stage_2(tmp_path, stage_1)
    moved = tmp_path / "elsewhere"
    shutil.move(run, moved)
    shutil.move(stage_1, tmp_path / "stage1-moved")
    model = sampler.load(moved, two_stage_plugins, "cpu")
    assert model.pipeline.encoder.stage.files == checkpoint.resolve(moved) / "frozen" / "encoder"


@pytest.mark.slow  # trains two runs
def test_a_resumed_stage_2_run_does_not_encode_again_and_reads_the_same_tensors(
    two_stage_plugins, stage_1, tmp_path, encode_calls
):
    run = stage_2(tmp_path, stage_1, "trainer.max_steps=2")
    assert len(encode_calls) == 32  # every example of both splits, once
    cached = {p.name: load_file(str(p)) for p in sorted((run / "cache").glob("*.safetensors"))}
    assert sorted(n.split("-")[0] for n in cached) == ["train", "val"]
    shutil.rmtree(stage_1)  # the resume reads the stage 1 stored in the checkpoint
    encode_calls.clear()
    assert train(run, "wave_tokens", f"encoder.checkpoint={stage_1}", "trainer.resume=true",
                 "trainer.max_steps=4") == 0
    assert encode_calls == []
    assert checkpoint.resolve(run).name == "step_000004"
    again = {p.name: load_file(str(p)) for p in sorted((run / "cache").glob("*.safetensors"))}
    assert again.keys() == cached.keys()
    assert all(torch.equal(again[n][k], cached[n][k]) for n in cached for k in cached[n])


def test_the_cached_split_holds_exactly_what_the_frozen_encoder_gives(two_stage_plugins, stage_1, tmp_path):
    run = stage_2(tmp_path, stage_1, "trainer.max_steps=2")
    encoder = frozen.encoder_from_checkpoint(checkpoint=str(stage_1))
    waves = fake_plugin.quantiser.Waves(key="tokens")
    expected = torch.stack([encoder.encode(waves.media(i)) for i in range(32) if i % 4 == 0])
    (val,) = (run / "cache").glob("val-*.safetensors")
    assert torch.equal(load_file(str(val))["tokens"], expected)


@pytest.mark.slow  # trains two runs
def test_a_damaged_cache_is_encoded_again_not_reused(two_stage_plugins, stage_1, tmp_path, encode_calls,
                                                     capsys):
    run = stage_2(tmp_path, stage_1, "trainer.max_steps=2")
    (train_cache,) = (run / "cache").glob("train-*.safetensors")
    good, tensors = train_cache.read_bytes(), load_file(str(train_cache))
    train_cache.write_bytes(good[: len(good) // 2])  # as a crash without write_atomic would leave it
    encode_calls.clear()
    assert train(run, "wave_tokens", f"encoder.checkpoint={stage_1}", "trainer.resume=true",
                 "trainer.max_steps=4") == 0
    assert len(encode_calls) == 24  # the train split only, encoded again
    assert "does not read back" in said(capsys)
    assert load_file(str(train_cache)).keys() == tensors.keys()
    assert all(torch.equal(load_file(str(train_cache))[k], tensors[k]) for k in tensors)


def test_another_stage_1_or_dataset_does_not_read_a_stale_cache():
    config = {"name": "waves", "dim": 8, "examples": 32, "key": "tokens"}
    key = cache.cache_key(config, "train", {"encoder": "a" * 64})
    assert key != cache.cache_key(config, "val", {"encoder": "a" * 64})
    assert key != cache.cache_key(config, "train", {"encoder": "b" * 64})
    assert key != cache.cache_key({**config, "examples": 33}, "train", {"encoder": "a" * 64})
    assert key == cache.cache_key(dict(reversed(config.items())), "train", {"encoder": "a" * 64})


def test_a_split_that_augments_at_random_is_not_cached(tmp_path, caplog):
    class _Random(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"x": torch.randn(2)}  # a fresh draw at every read

    class Noisy:
        def split(self, name, encoder, condition_encoder=None):
            return _Random()

    splits = cache.cached_splits(Noisy(), fake_plugin.quantiser.FloatsEncoder(), None,
                                 directory=tmp_path / "cache", keys={"train": "k" * 64}, progress=False)
    assert isinstance(splits["train"], _Random)
    assert not (tmp_path / "cache").exists()
    assert "draws at random per example" in caplog.text


# ------------------------------------------------------------------------------------ the mistakes


def test_a_missing_stage_1_is_one_message(two_stage_plugins, tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert train(tmp_path / "run", "wave_tokens", f"encoder.checkpoint={missing}") == 1
    out = said(capsys)
    assert f"encoder.checkpoint='{missing}': checkpoint '{missing}' does not exist" in out
    # Met first by ${frozen:encoder.codebook_size}: the message is the stage's, not OmegaConf's wrapper.
    assert "while resolving interpolation" not in out and "full_key" not in out
    assert "Traceback" not in out


def test_a_forgotten_encoder_checkpoint_says_what_to_give(two_stage_plugins, tmp_path, capsys):
    assert train(tmp_path / "run", "wave_tokens") == 1
    out = said(capsys)
    assert "from_checkpoint needs encoder.checkpoint=RUN: the stage-1 run directory" in out
    assert "Traceback" not in out


@pytest.mark.slow  # trains two runs
def test_a_stage_1_whose_generator_is_not_tokenizing_is_one_message(two_stage_plugins, tmp_path, capsys):
    counting = tmp_path / "counting"
    assert train(counting, "counting") == 0
    said(capsys)
    assert train(tmp_path / "run", "wave_tokens", f"encoder.checkpoint={counting}") == 1
    out = said(capsys)
    assert (f"encoder.checkpoint='{counting}': the generator of {counting}/checkpoints/step_000004 is "
            "'bigram' (Bigram), which is not Tokenizing (it lacks codebook_size, token_count, tokenize, "
            "detokenize); from_checkpoint needs a stage-1 autoencoder") in out
    assert "Traceback" not in out


@pytest.mark.slow  # trains two runs
def test_encoder_and_decoder_of_different_stage_1s_are_refused(two_stage_plugins, stage_1, tmp_path, capsys):
    other = tmp_path / "other"
    assert train(other, "waves", "seed=1") == 0
    said(capsys)
    assert train(tmp_path / "run", "wave_tokens", f"encoder.checkpoint={stage_1}",
                 f"decoder.checkpoint={other}") == 1
    assert "hold different stage-1 weights; the decoder must undo the encoder's codes" in said(capsys)


@pytest.mark.slow  # trains two runs
def test_resuming_with_another_stage_1_is_refused(two_stage_plugins, stage_1, tmp_path, capsys):
    run = stage_2(tmp_path, stage_1, "trainer.max_steps=2")
    other = tmp_path / "other"
    assert train(other, "waves", "seed=1") == 0
    said(capsys)
    assert train(run, "wave_tokens", f"encoder.checkpoint={other}", "trainer.resume=true",
                 "trainer.max_steps=4") == 1
    out = said(capsys)
    assert f"encoder.checkpoint={other} holds other stage-1 weights" in out
    assert "A resumed run keeps its frozen stage 1" in out
    assert checkpoint.resolve(run).name == "step_000002"


# -------------------------------------------------------------------- a tampered stored stage 1


@pytest.fixture
def stored(two_stage_plugins, stage_1, tmp_path) -> Path:
    """A stage-2 run whose stage 1 is gone: only its stored copies remain."""
    run = stage_2(tmp_path, stage_1, "trainer.max_steps=2")
    shutil.rmtree(stage_1)
    return run


def test_a_stored_stage_1_config_with_a_target_is_refused(stored, tmp_path, capsys):
    config = checkpoint.resolve(stored) / "frozen" / "encoder" / "config.yaml"
    config.write_text(config.read_text().replace("name: quantiser", "name: quantiser\n  _target_: os.system"))
    assert sample(stored, tmp_path / "out") == 1
    out = said(capsys)
    assert "config key generator._target_ is a Hydra instantiation key" in out
    assert str(config) in out and "Traceback" not in out


def test_stored_weights_that_no_longer_match_their_record_are_refused(stored, tmp_path, capsys):
    weights = checkpoint.resolve(stored) / "frozen" / "decoder" / "model.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.01  # sound safetensors, other values
    weights.unlink()  # (the copies are hard links: change this one only)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    assert sample(stored, tmp_path / "out") == 1
    out = said(capsys)
    assert f"{weights} does not match its source record" in out
    assert "stage 2 was trained on the codes of the recorded ones" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("damage", ["missing", "source", "link"])
def test_an_incomplete_or_linked_stored_copy_is_one_message(stored, tmp_path, capsys, damage):
    copy = checkpoint.resolve(stored) / "frozen" / "encoder"
    if damage == "missing":
        shutil.rmtree(copy)
        expected = "encoder is from_checkpoint, but"
    elif damage == "source":
        (copy / "source.json").write_text('{"path": 1}')
        expected = "source.json is damaged: it needs path (a string)"
    else:
        shutil.move(copy, tmp_path / "outside")
        copy.symlink_to(tmp_path / "outside")
        expected = "is a symbolic link; a checkpoint's frozen copies are directories in it"
    assert sample(stored, tmp_path / "out") == 1
    out = said(capsys)
    assert expected in out and "Traceback" not in out
