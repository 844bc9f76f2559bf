"""logger=[tensorboard,mlflow] on a real tiny run, read back with TensorBoard's and MLflow's own readers."""

import json
import subprocess
import sys
import textwrap
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from genloom import checkpoint, cli, hookimpl
from genloom.testing import active_plugins, check_hooks, check_resume, only_plugins
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TINY = ["pipeline=text_debug", "trainer=debug", "trainer.progress=false"]  # 4 steps, evaluated at 2 and 4
LOGGERS = ["logger=[tensorboard,mlflow]", "logger.tensorboard.samples=2", "logger.mlflow.samples=2"]
EVERYTHING = {"scalars": 0, "tensors": 0, "images": 0, "audio": 0}  # EventAccumulator keeps every event


def tracking(tmp: Path) -> str:
    return f"logger.mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}"


def records(run: Path, split: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance=EVERYTHING)
    accumulator.Reload()
    return accumulator


def text(accumulator: EventAccumulator, tag: str) -> list[tuple[int, str]]:
    # torch's SummaryWriter.add_text files text under "<tag>/text_summary".
    return [(e.step, e.tensor_proto.string_val[0].decode())
            for e in accumulator.Tensors(f"{tag}/text_summary")]


def mlflow_run(uri: str, run: Path):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("text_debug")  # the pipeline's name, by default
    found = client.search_runs([experiment.experiment_id],
                               filter_string=f"tags.`genloom.run_dir` = '{run.resolve()}'")
    assert len(found) == 1, f"{len(found)} MLflow runs for {run}"
    return client, found[0]


@pytest.fixture(scope="module")
def logged(only_loggers, tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("logged")
    assert cli.main(["train", *TINY, *LOGGERS, tracking(tmp), f"hydra.run.dir={tmp / 'run'}"]) == 0
    return tmp / "run", f"sqlite:///{tmp / 'mlflow.db'}"


def test_tensorboard_holds_every_metric_the_config_and_the_samples(logged):
    run, _ = logged
    accumulator = events(run)
    train, val = records(run, "train"), records(run, "val")
    for key in ("loss", "lr", "throughput", "grad_norm"):
        logged_values = [(e.step, e.value) for e in accumulator.Scalars(f"train/{key}")]
        assert logged_values == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in train]
    for key in ("loss", "bits_per_byte"):
        logged_values = [(e.step, e.value) for e in accumulator.Scalars(f"val/{key}")]
        assert logged_values == [(r["step"], pytest.approx(r[f"val_{key}"], rel=1e-6)) for r in val]
    [(step, config)] = text(accumulator, "config")
    assert step == 0 and "    pipeline:\n      name: text_debug" in config
    # The text decoder's gallery, samples.md, as the decoder wrote it at each evaluation.
    assert text(accumulator, "samples/samples.md") == [
        (step, (run / "samples" / f"step_{step:06d}" / "samples.md").read_text()) for step in (2, 4)
    ]


def test_mlflow_holds_the_params_metrics_samples_and_last_checkpoint(logged):
    run, uri = logged
    client, found = mlflow_run(uri, run)
    run_id = found.info.run_id
    assert found.info.status == "FINISHED" and found.info.run_name == str(run)
    params = found.data.params
    assert params["trainer.max_steps"] == "4" and params["generator.n_embd"] == "32"
    assert params["pipeline.name"] == "text_debug" and params["trainer.betas"] == "[0.9, 0.95]"
    assert found.data.tags["genloom.pipeline"] == "pydoc/bytes/transformer/bytes"
    experiment = client.get_experiment(found.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI shows runs
    beside_the_database = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    assert experiment.artifact_location == beside_the_database.as_uri()
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]
    assert history == [(r["step"], pytest.approx(r["loss"])) for r in records(run, "train")]
    val = [(m.step, m.value) for m in client.get_metric_history(run_id, "val_bits_per_byte")]
    assert val == [(r["step"], pytest.approx(r["val_bits_per_byte"])) for r in records(run, "val")]

    def artifacts(path):
        return sorted(a.path.rpartition("/")[2] for a in client.list_artifacts(run_id, path))

    assert artifacts("config") == ["start_step_000000.yaml"]
    assert artifacts("samples") == ["step_000002", "step_000004"]
    written = sorted(p.name for p in (run / "samples" / "step_000004").iterdir())
    assert artifacts("samples/step_000004") == written == ["sample_000.txt", "sample_001.txt", "samples.md"]
    assert artifacts("checkpoints") == ["step_000004"]  # checkpoints=last
    stored = Path(client.download_artifacts(run_id, "checkpoints/step_000004/model.safetensors"))
    assert stored.read_bytes() == (run / "checkpoints" / "step_000004" / "model.safetensors").read_bytes()
    # The run's id is in the checkpoint, for a resume to continue it.
    _, extra = checkpoint.read_trainer_state(run / "checkpoints" / "step_000004")
    assert extra[checkpoint.PLUGIN_STATE]["loggers"]["mlflow_run_id"] == run_id


def test_a_resumed_run_continues_its_mlflow_run_and_tensorboard_reads_as_one_run(loggers_plugin, tmp_path):
    overrides = [*TINY, *LOGGERS, tracking(tmp_path)]
    # Stopped by SIGINT after step 2 and resumed, drawing samples at each evaluation: the
    # logged losses equal an uninterrupted run's, so drawing leaves training exactly as it was.
    check_resume(loggers_plugin, overrides, stop_after=2, directory=tmp_path)
    run, uri = tmp_path / "interrupted", f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, found = mlflow_run(uri, run)
    assert found.info.status == "FINISHED"
    history = [(m.step, m.value) for m in client.get_metric_history(found.info.run_id, "loss")]
    assert history == [(r["step"], pytest.approx(r["loss"])) for r in records(run, "train")]
    assert [m.step for m in client.get_metric_history(found.info.run_id, "loss")] == [1, 2, 3, 4]
    configs = sorted(a.path for a in client.list_artifacts(found.info.run_id, "config"))
    assert configs == ["config/start_step_000000.yaml", "config/start_step_000002.yaml"]
    assert [e.step for e in events(run).Scalars("train/loss")] == [1, 2, 3, 4]

    # Resumed from a checkpoint before its last logged step (as after a crash), the run logs
    # steps 3 and 4 again; TensorBoard hides the first ones (purge_step), as metrics.jsonl drops them.
    straight = tmp_path / "straight"
    with_logs = [*overrides, f"trainer.resume={straight / 'checkpoints' / 'step_000002'}"]
    with active_plugins(loggers_plugin):
        assert cli.main(["train", *with_logs, f"hydra.run.dir={straight}"]) == 0
    accumulator = events(straight)
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in accumulator.Scalars("val/loss")] == [2, 4]


class Corrupter:
    """Turns the MLflow database into garbage after the first evaluation (a disk gone bad)."""

    def __init__(self, database: Path) -> None:
        self.database = database

    @hookimpl
    def genloom_evaluated(self, step):
        if step == 2:
            self.database.unlink()
            self.database.write_bytes(b"not a database" * 100)


def test_a_logger_that_fails_midway_warns_once_and_training_and_the_other_logger_go_on(
        loggers_plugin, tmp_path, capsys):
    loggers_plugin.manager.register(Corrupter(tmp_path / "mlflow.db"))
    run = tmp_path / "run"
    with active_plugins(loggers_plugin):
        assert cli.main(["train", *TINY, *LOGGERS, tracking(tmp_path), f"hydra.run.dir={run}"]) == 0
    out = capsys.readouterr().out
    assert out.count("mlflow logger failed while") == 1 and "training goes on without it" in out
    assert "Traceback" not in out and (run / "checkpoints" / "step_000004").is_dir()
    assert [e.step for e in events(run).Scalars("val/loss")] == [2, 4]


def test_loggers_that_cannot_start_warn_and_training_finishes(only_loggers, tmp_path, capsys):
    blocked = tmp_path / "a_file"
    blocked.write_text("a file where a folder should be")
    cannot = [f"logger.tensorboard.dir={blocked / 'tensorboard'}",
              f"logger.mlflow.tracking_uri=sqlite:///{blocked / 'mlflow.db'}"]
    assert cli.main(["train", *TINY, *LOGGERS, *cannot, f"hydra.run.dir={tmp_path / 'run'}"]) == 0
    out = capsys.readouterr().out
    assert out.count("tensorboard logger could not start (") == 1
    assert out.count("mlflow logger could not start (") == 1
    assert "Traceback" not in out and (tmp_path / "run" / "checkpoints" / "step_000004").is_dir()


def test_a_wrong_logger_setting_is_one_message(only_loggers, tmp_path, capsys):
    assert cli.main(["train", *TINY, "logger=tensorboard", "logger.tensorboard.samples=-1",
                     f"hydra.run.dir={tmp_path}"]) == 1
    out = capsys.readouterr().out
    assert "logger.tensorboard.samples=-1 must be at least 0 (0: no samples)" in out
    assert "Traceback" not in out


def test_without_a_logger_nothing_is_imported_or_written(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from genloom import cli
        from genloom.testing import only_plugins
        with only_plugins({{"loggers": "genloom_loggers.plugin", "text": "genloom_text.plugin"}}):
            assert cli.main(["train", *{TINY!r}, "hydra.run.dir={tmp_path}"]) == 0
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorboard", "mlflow")
                       or m.startswith("torch.utils.tensorboard")
                       or m in ("genloom_loggers.session", "genloom_loggers.tensorboard_logger",
                                "genloom_loggers.mlflow_logger"))
        print("imported:", heavy)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "samples").exists()
    assert not (tmp_path / "outputs").exists()  # no mlflow.db


def test_image_samples_are_images_in_tensorboard(tmp_path):
    plugins = {"loggers": "genloom_loggers.plugin", "image": "genloom_image.plugin",
               "blocks": "genloom_blocks.plugin"}
    run = tmp_path / "run"
    with only_plugins(plugins):
        assert cli.main(["train", "pipeline=image_debug", "trainer=debug", "trainer.progress=false",
                         "logger=tensorboard", f"hydra.run.dir={run}"]) == 0
    accumulator = events(run)
    assert accumulator.Tags()["images"] == ["samples/grid.png"]  # the decoder's gallery
    shown = accumulator.Images("samples/grid.png")
    assert [e.step for e in shown] == [2, 4]
    with Image.open(run / "samples" / "step_000004" / "grid.png") as grid:
        assert (shown[-1].width, shown[-1].height) == grid.size


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(samples.shape[1] if samples.ndim == 2 else 1)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes((samples * (2 ** (8 * width - 1) - 1)).astype(f"<i{width}").tobytes())


def test_audio_clips_are_audio_in_tensorboard(tmp_path):
    from genloom.trainer import DrawnSamples
    from genloom_loggers import tensorboard_logger

    time_axis = np.arange(1600) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * time_axis)  # 0.1 s of A4
    write_wav(tmp_path / "sample_000.wav", tone, 16000)
    write_wav(tmp_path / "sample_001.wav", np.stack([tone, -tone / 2], axis=1), 16000)  # stereo
    Image.new("RGB", (20, 10), "red").save(tmp_path / "spectrograms.png")
    drawn = DrawnSamples("audio", [tone, tone], [tmp_path / "sample_000.wav", tmp_path / "sample_001.wav",
                                                  tmp_path / "spectrograms.png"], tmp_path)
    run = SimpleNamespace(run_dir=tmp_path, step=0, config=OmegaConf.create({"seed": 0}))
    logger = tensorboard_logger.Logger(tensorboard_logger.Settings(dir="tb"), run)
    logger.log_samples(2, drawn)
    logger.close("max_steps")

    accumulator = EventAccumulator(str(tmp_path / "tb"), size_guidance=EVERYTHING)
    accumulator.Reload()
    assert sorted(accumulator.Tags()["audio"]) == ["samples/sample_000.wav", "samples/sample_001.wav"]
    clip = accumulator.Audio("samples/sample_000.wav")[0]
    assert (clip.step, clip.sample_rate, clip.length_frames) == (2, 16000, 1600)
    assert accumulator.Tags()["images"] == ["samples/spectrograms.png"]
    # Stereo is mixed down to mono: (tone - tone / 2) / 2, within 16-bit rounding.
    mono, rate = tensorboard_logger.read_wav(tmp_path / "sample_001.wav")
    assert rate == 16000 and np.allclose(mono, tone / 4, atol=1e-4)


def test_the_hook_module_keeps_the_contract():
    check_hooks("genloom_loggers.plugin")  # every @hookimpl names a specification and its arguments
