"""After the run: ``loss.png`` in every run directory, ``genloom runs`` and ``runs compare``.

One tree of real (tiny, fake-plugin) training runs is built once for the module: a finished
run, one stopped by SIGINT, one stopped and resumed, a two-job sweep, a killed one (its lock
left behind) and two broken directories.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import fake_plugin
import pytest
from genloom import cli, hookimpl, losscurve, plugins, rundir
from genloom.plugins import PluginSource, load_plugins
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

RUN = ["pipeline=counting", "trainer=debug", "trainer.progress=false", "trainer.max_steps=6",
       "trainer.batch_size=8", "trainer.log_every=1", "trainer.eval_every=2", "trainer.checkpoint_every=2"]


class StopAt:
    """Sends this process SIGINT after a step: the trainer saves, then stops."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def genloom_train_step_end(self, step, metrics):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def use_plugins(*extra: PluginSource) -> None:
    plugins.set_active(load_plugins([fake_plugin.source(), *extra], strict=True, disabled=[]))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """``outputs/`` and ``multirun/`` of real runs, plus what each loss.png draw left."""
    root = tmp_path_factory.mktemp("runs")
    out, draws = root / "outputs" / "train", []
    real_plot = losscurve.write_loss_plot

    def recorded(metrics_path, png, *, title):
        wrote = real_plot(metrics_path, png, title=title)
        draws.append((png, hashlib.sha256(png.read_bytes()).hexdigest(), title))
        return wrote

    mp = pytest.MonkeyPatch()
    mp.setattr(losscurve, "write_loss_plot", recorded)
    # Every evaluation due (these runs take a second; the rate limit has its own test below).
    mp.setattr(losscurve.LossPlot, "MIN_INTERVAL", 0.0)
    mp.setattr(losscurve.LossPlot, "SHARE", 0)
    try:
        use_plugins()
        assert cli.main(["train", *RUN, f"hydra.run.dir={out / 'finished'}"]) == 0
        draws_of_finished = list(draws)
        stop = PluginSource("stop", lambda: StopAt(3), "tests")
        for name in ("stopped", "resumed"):
            use_plugins(stop)
            assert cli.main(["train", *RUN, f"hydra.run.dir={out / name}"]) == 128 + signal.SIGINT
        use_plugins()
        assert cli.main(["train", *RUN, "trainer.resume=true", f"hydra.run.dir={out / 'resumed'}"]) == 0
        assert cli.main(["train", "-m", *RUN, "trainer.max_steps=2", "trainer.lr=0.01,0.001",
                         f"hydra.sweep.dir={root / 'multirun' / 'sweep'}"]) == 0
    finally:
        mp.undo()
        plugins.set_active(None)
        GlobalHydra.instance().clear()

    killed = out / "killed"  # as `kill -9` leaves it: the lock file, held by nobody, naming a
    # pid that is alive again (reused; here this very process): the lock, not the pid, is asked
    shutil.copytree(out / "stopped", killed)
    (killed / ".genloom.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))

    live = out / "live"  # a run in progress: a process (this one) holds its lock
    shutil.copytree(out / "stopped", live)
    live_lock = rundir.RunDirLock(live)

    torn = out / "torn"  # no .hydra/, a torn metrics line, a `latest` naming nothing
    (torn / "checkpoints").mkdir(parents=True)
    (torn / "checkpoints" / "latest").write_text("step_000009")
    (torn / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 2.5}\n{"step": 2, "spl')
    garbled = out / "garbled"  # Hydra's record overwritten with junk; crashed before any metric
    (garbled / ".hydra").mkdir(parents=True)
    (garbled / ".hydra" / "config.yaml").write_text("trainer: [unclosed\n")
    (garbled / "train.log").write_text("")
    yield root, draws_of_finished
    live_lock.release()


def runs_json(capsys, *args) -> list[dict]:
    assert cli.main(["runs", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluations_redraw_loss_png_beside_metrics(tree):
    root, draws = tree
    png = root / "outputs" / "train" / "finished" / losscurve.FILE
    assert [d[0] for d in draws] == [png] * 3  # evaluations at steps 2, 4 and 6
    assert len({d[1] for d in draws}) == 3  # each a new picture: one more point per curve
    assert "generator=" in draws[0][2] and "finished" in draws[0][2]
    with Image.open(png) as image:
        image.verify()  # a complete, valid PNG
    with Image.open(png) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 600 <= width <= 1200 and 380 <= height <= 500
    assert not list(png.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def test_the_loss_series_come_from_metrics_jsonl(tree):
    root, _ = tree
    series = losscurve.read_series(root / "outputs" / "train" / "resumed" / "metrics.jsonl")
    assert [step for step, _ in series["train"]["loss"]] == [1, 2, 3, 4, 5, 6]  # one run, resumed
    assert [step for step, _ in series["val"]["val_loss"]] == [2, 4, 6]


def test_runs_lists_each_run_with_its_status_steps_metrics_and_checkpoint(tree, capsys, monkeypatch):
    root, _ = tree
    monkeypatch.chdir(root)
    runs = {Path(r["path"]).name: r for r in runs_json(capsys)}  # default: outputs/ and multirun/
    assert set(runs) == {"finished", "stopped", "resumed", "killed", "live", "torn", "garbled", "0", "1"}
    expected = {"finished": ("finished", 6), "resumed": ("finished", 6), "stopped": ("stopped", 3),
                "killed": ("crashed", 3), "live": ("running", 3), "0": ("finished", 2), "1": ("finished", 2)}
    for name, (status, step) in expected.items():
        run = runs[name]
        assert (run["status"], run["step"], run["max_steps"]) == (status, step, run["max_steps"])
        assert run["problems"] == []
        assert run["pipeline"]["generator"] == "bigram"
        assert run["checkpoint"] == str(Path(run["path"]) / "checkpoints" / f"step_{step:06d}")
        assert run["wall_seconds"] is not None and run["wall_seconds"] >= 0
        assert run["val"]["val_loss"] > 0 and run["train"]["loss"] > 0
    assert runs["finished"]["max_steps"] == 6 and runs["0"]["max_steps"] == 2
    records = (root / "outputs/train/finished/metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in records]
    assert runs["finished"]["val"] == {k: v for k, v in metrics[-1].items() if k not in ("step", "split")}

    assert runs["torn"]["problems"] == [
        "no .hydra/config.yaml (not written by genloom train, or removed)",
        "metrics.jsonl: 1 unreadable line(s) skipped",
        "checkpoints/latest names 'step_000009', which is not a complete checkpoint",
    ]
    assert (runs["torn"]["step"], runs["torn"]["train"]) == (1, {"loss": 2.5})
    assert runs["garbled"]["problems"][0].startswith(".hydra/config.yaml is unreadable: ")
    assert runs["garbled"]["problems"][1] == "no metrics.jsonl (stopped before its first log)"

    assert cli.main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = ["run", "status", "steps", "pipeline", "loss", "val_loss", "wall", "checkpoint"]
    assert lines[0].split() == header
    stopped = next(line for line in lines if line.startswith("outputs/train/stopped "))
    assert stopped.split()[1:3] == ["stopped", "3/6"]
    assert stopped.split()[-1] == "checkpoints/step_000003"
    at = lines.index(next(line for line in lines if line.startswith("outputs/train/torn ")))
    assert lines[at + 1] == "    ! no .hydra/config.yaml (not written by genloom train, or removed)"


def test_runs_sorts_by_a_metric_either_way_and_names_the_metrics_it_has(tree, capsys):
    root, _ = tree
    by_val = runs_json(capsys, str(root), "--sort", "val_loss")
    values = [r["val"]["val_loss"] for r in by_val if "val_loss" in r["val"]]
    assert values == sorted(values) and len(values) == 7
    assert all("val_loss" not in r["val"] for r in by_val[7:])  # runs without it come last
    descending = runs_json(capsys, str(root), "--sort", "-val_loss")
    assert [r["val"]["val_loss"] for r in descending[:7]] == sorted(values, reverse=True)

    assert cli.main(["runs", str(root), "--sort", "val_los"]) == 2
    err = capsys.readouterr().err
    assert "no run has the metric 'val_los' for --sort; the runs have: " in err and "val_loss" in err
    assert cli.main(["runs", str(root / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_runs_where_there_are_none_says_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["runs"]) == 1
    assert "no outputs/ or multirun/ folder here" in capsys.readouterr().err
    (tmp_path / "outputs").mkdir()
    assert cli.main(["runs"]) == 0
    assert capsys.readouterr().out == "no training runs found\n"
    assert cli.main(["--help"]) == 0
    assert "\n  runs      the training runs under outputs/" in capsys.readouterr().out


def test_compare_shows_exactly_the_differing_config_keys_and_both_metrics(tree, capsys):
    root, _ = tree
    sweep = root / "multirun" / "sweep"
    assert cli.main(["runs", "compare", str(sweep / "0"), str(sweep / "1"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"] == {"trainer.lr": {"a": 0.01, "b": 0.001}}
    assert set(report["metrics"]) >= {"loss", "val_loss", "lr"}
    assert report["metrics"]["lr"][0] != report["metrics"]["lr"][1]

    out_dir = root / "outputs" / "train"
    assert cli.main(["runs", "compare", str(out_dir / "finished"), str(out_dir / "resumed")]) == 0
    text = capsys.readouterr().out
    config_rows = text.split("\n\n")[1].splitlines()
    assert config_rows[0].split() == ["config", "key", "A", "B"]
    assert [row.split() for row in config_rows[1:]] == [["trainer.resume", "false", "true"]]
    assert "val_loss" in text.split("\n\n")[2]


def test_compare_marks_keys_only_one_run_has(tmp_path, capsys):
    for name, text in (("a", "trainer:\n  lr: 0.1\n  ema: {decay: 0.9}\n"), ("b", "trainer:\n  lr: 0.1\n")):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text(text)
    assert cli.main(["runs", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "trainer.ema.decay  0.9  (absent)" in capsys.readouterr().out
    assert cli.main(["runs", "compare", str(tmp_path / "a"), str(tmp_path)]) == 2
    assert "is not a training run directory" in capsys.readouterr().err


def test_runs_imports_no_torch(tree):
    root, _ = tree
    script = ("import sys, genloom.cli as c; c.main(['runs', sys.argv[1]]); "
              "print('torch' in sys.modules, 'hydra' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1] == "False False"
    assert "outputs/train/finished" in out


def test_frequent_evaluations_redraw_at_most_every_few_seconds_and_always_at_the_end(tmp_path):
    # 1000 evaluations a second apart in a fast run must not draw 1000 pictures (each takes
    # a few hundred ms: a test of torchrun spent minutes drawing); the last is always drawn.
    metrics = tmp_path / "metrics.jsonl"
    clock, drawn = [0.0], []

    def draw(metrics_path, png, *, title):
        drawn.append(clock[0])
        clock[0] += 0.3  # the draw's own time
        return True

    plot = losscurve.LossPlot(metrics, tmp_path / losscurve.FILE, title="run", draw=draw,
                              clock=lambda: clock[0])
    for step in range(1, 1001):
        clock[0] += 0.01  # training between evaluations
        plot.update(final=step == 1000)
    assert drawn[0] == pytest.approx(0.01)  # the first evaluation is drawn at once
    gaps = [b - a for a, b in zip(drawn, drawn[1:-1], strict=False)]
    assert all(gap >= losscurve.LossPlot.MIN_INTERVAL for gap in gaps)
    assert drawn[-1] == pytest.approx(clock[0] - 0.3)  # the final evaluation, drawn
    assert len(drawn) < 10
