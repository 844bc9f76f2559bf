"""`genloom train`, `sample` and `eval` on the image pipelines, in-process, on tiny configs."""

import json
from pathlib import Path

import pytest
from genloom import cli
from PIL import Image

TINY = ["pipeline=image_debug", "trainer=debug", "trainer.progress=false", "trainer.max_steps=6"]
CAPTIONS = [  # the debug pipeline steered by captions ("the digit 7") instead of labels
    "+condition_encoder=caption_words",
    "generator.condition=caption",
]


def sample(run: Path, out: Path, *args: str) -> dict[str, bytes]:
    assert cli.main(["sample", f"checkpoint={run}", "n=4", f"hydra.run.dir={out}", *args]) == 0
    return {p.name: p.read_bytes() for p in sorted((out / "samples").iterdir())}


@pytest.fixture(scope="module")
def trained(only_image, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    assert cli.main(["train", *TINY, f"hydra.run.dir={run}"]) == 0
    return run


def test_training_logs_psnr_and_elbo(trained: Path) -> None:
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"][-1]
    assert {"val_loss", "val_psnr", "val_elbo", "val_recon", "val_kl"} <= set(val)
    assert val["val_elbo"] == pytest.approx(-(val["val_recon"] + val["val_kl"]), rel=1e-4)
    assert json.loads((trained / "plugins.json").read_text()) == {"image": None, "blocks": None}


def test_a_checkpoint_samples_the_same_pngs_for_the_same_seed(trained: Path, tmp_path: Path) -> None:
    first = sample(trained, tmp_path / "a", "label=1", "seed=3")
    assert list(first) == ["grid.png", "sample_000.png", "sample_001.png", "sample_002.png", "sample_003.png"]
    assert first == sample(trained, tmp_path / "b", "label=1", "seed=3")
    assert Image.open(tmp_path / "a" / "samples" / "sample_000.png").size == (8, 8)


def test_the_label_changes_the_samples(trained: Path, tmp_path: Path) -> None:
    ones = sample(trained, tmp_path / "one", "label=1")
    twos = sample(trained, tmp_path / "two", "label=2")
    assert all(ones[name] != twos[name] for name in ones)


def test_eval_reports_psnr_and_elbo_and_shows_reconstructions(trained: Path, tmp_path: Path) -> None:
    assert cli.main(["eval", f"checkpoint={trained}", "batch_size=6", f"hydra.run.dir={tmp_path}"]) == 0
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert scores["step"] == 6 and {"psnr", "elbo", "loss"} <= set(scores)
    sheet = Image.open(tmp_path / "reconstructions" / "reconstructions.png")
    assert sheet.size == (2 * (2 * 96 + 2) + 3 * 8, 3 * 96 + 4 * 8)  # 6 pairs, two to a row


def test_a_prompt_for_a_label_model_is_one_clear_error(trained: Path, tmp_path: Path, capsys) -> None:
    status = cli.main(["sample", f"checkpoint={trained}", 'prompt="a seven"', f"hydra.run.dir={tmp_path}"])
    assert status == 1
    output = capsys.readouterr()
    assert "[ERROR] - the pixels encoder encodes PIL images, got 'a seven'" in output.out
    assert "Traceback" not in output.out + output.err


def test_a_caption_model_trains_and_follows_its_prompts(only_image, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", *TINY, *CAPTIONS, f"hydra.run.dir={run}"]) == 0
    one = sample(run, tmp_path / "one", 'prompt="the digit 1"')
    assert one == sample(run, tmp_path / "again", 'prompt="The digit 1!"')  # same words, same ids
    two = sample(run, tmp_path / "two", 'prompt="the digit 2"')
    assert one["sample_000.png"] != two["sample_000.png"]


def test_the_shapes_preset_selects_its_condition_encoder(only_image, tmp_path: Path) -> None:
    tiny_shapes = [
        "dataset=shapes_debug",
        "encoder=pixels_debug",
        "generator=vae_debug",
        "generator.condition=caption",
    ]
    args = ["train", "pipeline=shapes", *tiny_shapes, "trainer=debug", "trainer.progress=false"]
    assert cli.main([*args, f"hydra.run.dir={tmp_path}"]) == 0


def class_folders(root: Path, counts: dict[str, int]) -> Path:
    for i, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for j in range(n):
            Image.new("RGB", (12, 10), (60 * i, 255 - 60 * i, 17 * j)).save(root / name / f"{j}.png")
    return root


FOLDER = ["pipeline=image_folder_debug", "trainer.progress=false", "trainer.max_steps=4"]
LABELS = ["dataset.labels=true", "generator.condition=label"]


def test_a_folder_preset_trains_on_your_images_and_samples_a_class(only_image, tmp_path: Path) -> None:
    data = class_folders(tmp_path / "pets", {"cats": 4, "dogs": 4, "owls": 4})
    run = tmp_path / "run"
    args = [*FOLDER, *LABELS, "generator.num_classes=3", f"dataset.path={data}", f"hydra.run.dir={run}"]
    assert cli.main(["train", *args]) == 0
    assert "grid.png" in sample(run, tmp_path / "owls", "label=2")


def test_more_classes_than_the_generator_takes_stops_before_training(only_image, tmp_path, capsys) -> None:
    data = class_folders(tmp_path / "pets", {"cats": 4, "dogs": 4, "owls": 4})
    run = tmp_path / "run"
    args = [*FOLDER, *LABELS, "generator.num_classes=2", f"dataset.path={data}", f"hydra.run.dir={run}"]
    assert cli.main(["train", *args]) == 1
    out = capsys.readouterr()
    assert (
        f"dataset.path '{data}' has 3 classes (cats 4, dogs 4, owls 4) but the generator takes 2 "
        "(generator.num_classes=2): set generator.num_classes=3"
    ) in out.out
    assert "Traceback" not in out.out + out.err and not (run / "checkpoints").exists()


def test_a_caption_preset_on_a_folder_points_to_the_folder_preset(only_image, tmp_path: Path, capsys) -> None:
    data = class_folders(tmp_path / "pets", {"cats": 4})
    args = ["pipeline=shapes", "dataset=image_folder", f"dataset.path={data}", f"hydra.run.dir={tmp_path}"]
    assert cli.main(["train", *args]) == 1
    assert "pipeline=image_folder dataset.path=" in capsys.readouterr().out
def test_eval_scores_the_same_at_any_batch_size(trained: Path, tmp_path: Path) -> None:
    scores = []
    for size in (1, 3, 8):
        out = tmp_path / f"b{size}"
        assert cli.main(["eval", f"checkpoint={trained}", f"batch_size={size}", f"hydra.run.dir={out}"]) == 0
        written = json.loads((out / "eval.json").read_text())
        assert written["weights"] == "raw"  # trained without trainer.ema
        scores.append({k: v for k, v in written.items() if k not in ("checkpoint", "weights")})
    assert scores[1] == pytest.approx(scores[0], rel=1e-5)
    assert scores[2] == pytest.approx(scores[0], rel=1e-5)
