"""The benchmarks' quick modes still run, so that `make bench` cannot rot unnoticed.

The peers (transformers) are benchmark-only dependencies: what needs them is skipped
when they are absent, and everything else runs genloom against itself.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None

pytestmark = pytest.mark.slow


def bench(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_startup_lists_plugins_without_importing_torch() -> None:
    out = bench("startup.py", "--quick")
    plugins_row = next(line for line in out.splitlines() if line.startswith("genloom plugins"))
    assert plugins_row.split()[-1] == "no"


def test_text_train_times_the_trainer_and_the_bare_loop() -> None:
    out = bench("text_train.py", "--quick", "--contenders", "trainer", "bare")
    row = next(line for line in out.splitlines() if line.startswith("tiny"))
    assert row.rstrip().endswith("%")  # the trainer's overhead over the bare loop


def test_text_train_compares_with_hugging_face() -> None:
    pytest.importorskip("transformers")
    out = bench("text_train.py", "--quick", "--contenders", "bare", "hf", "trainer")
    assert "trainer/HF" in out


def test_text_profile_splits_the_step_into_operators() -> None:
    out = bench("text_profile.py", "--quick")
    assert "eager, tiny" in out and "aten::addmm" in out


def test_text_sample_outputs_agree_token_for_token() -> None:
    # The script exits non-zero when the cached, recomputed (and HF) greedy tokens differ.
    # --quick leaves compile=True out (it compiles for seconds; test_compiled_decoding covers it).
    out = bench("text_sample.py", "--quick", "--scaling")
    assert out.count("identical token for token") == 2  # the greedy and continuous batching tables
    greedy, continuous = [line for line in out.splitlines() if line.startswith("model")]
    assert ("genloom/HF" in greedy) == HAVE_TRANSFORMERS
    assert ("engine/HF padded" in continuous) == HAVE_TRANSFORMERS
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("batch  context"))
    cells = [line.split()[:2] for line in lines[header + 1 :]]  # the decode step by batch and context
    assert cells == [["1", "16"], ["1", "64"], ["4", "16"], ["4", "64"]]


def test_tokenizers_scores_bytes_and_bpe_on_the_same_held_out_text() -> None:
    out = bench("text_tokenizers.py", "--tiny", "--tokenizers", "bytes", "bpe-512")
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines()]
    scores = {(row[0], row[1]): row for row in cells if len(row) == 8 and row[0] in ("pydoc", "stdlib .py")}
    samples = [row for row in cells if len(row) == 3 and row[0] in ("pydoc", "stdlib .py")]
    assert len(scores) == 4 and len(samples) == 4
    for corpus in ("pydoc", "stdlib .py"):
        byte_row, bpe_row = scores[(corpus, "bytes")], scores[(corpus, "bpe-512")]
        assert float(byte_row[3]) == 1.0 and float(bpe_row[3]) > 1.5  # bytes per token
        assert 0 < float(byte_row[7]) < 8 and 0 < float(bpe_row[7]) < 8  # held-out bits per byte


def test_runtime_overhead_reports_both_generators_and_griffin_lim() -> None:
    out = bench("runtime_overhead.py", "--quick")
    assert "image (image_debug)" in out and "audio (audio_debug)" in out
    assert "real-time factor" in out


def test_gpu_benchmark_runs_tiny_on_cpu() -> None:
    out = bench("gpu.py", "--tiny")
    assert "MFU" in out and "decoding" in out


def test_serve_compares_continuous_batching_with_batching_off() -> None:
    out = bench("serve.py", "--quick", "--contenders", "genloom cb", "genloom off")
    rows = [line for line in out.splitlines() if line.startswith("| genloom")]
    assert {row.split("|")[1].strip() for row in rows} == {"genloom cb", "genloom off"}
    assert len(rows) == 4  # two contenders at C = 1 and 4, greedy texts asserted equal


def test_image_quality_judges_glyphs_and_every_shape_colour_prompt(tmp_path: Path) -> None:
    results = tmp_path / "image.json"
    out = bench("image.py", "--quick", "--approaches", "vae",
                "--workdir", str(tmp_path), "--json", str(results))
    tasks = json.loads(results.read_text())["tasks"]
    assert len(tasks["glyphs"]["approaches"]["vae"]["per_condition"]) == 10
    shapes = tasks["shapes"]
    assert set(shapes["judge"]["accuracy_on_real_val"]) == {"shape", "colour", "both"}
    assert len(shapes["approaches"]["vae"]["per_condition"]) == 49  # every shape x colour prompt
    assert "a red star" in shapes["approaches"]["vae"]["per_condition"]
    assert "overall: colour right" in out and "training wall time" in out


def test_audio_quality_judges_pitch_and_caption_prompts(tmp_path: Path) -> None:
    results = tmp_path / "audio.json"
    out = bench("audio.py", "--quick", "--approaches", "vae",
                "--workdir", str(tmp_path), "--json", str(results))
    tasks = json.loads(results.read_text())["tasks"]
    assert len(tasks["notes"]["approaches"]["vae"]["per_condition"]) == 12  # one octave, C4 to B4
    assert "a sine C4" in tasks["notes_caption"]["approaches"]["vae"]["per_condition"]
    assert "overall: within 1 semitone" in out


@pytest.mark.parametrize(
    ("script", "task", "other"), [("image.py", "glyphs", "shapes"), ("audio.py", "notes", "notes_caption")]
)
def test_quality_refuses_a_word_that_is_not_an_override(script: str, task: str, other: str) -> None:
    # `--tasks notes notes_caption` once judged notes only: notes_caption went to Hydra unseen.
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--tasks", task, other],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert f"{other}: not a Hydra override (KEY=VALUE)" in done.stderr
    assert "comma-separated" in done.stderr


def test_lora_trains_and_saves_far_less_than_full_fine_tuning() -> None:
    pytest.importorskip("peft")
    pytest.importorskip("genloom_hf")
    out = bench("lora.py", "--tiny")
    rows = {cells[0]: cells for line in out.splitlines() if line.startswith("| ")
            for cells in [[cell.strip() for cell in line.split("|")[1:-1]]]}
    full, lora = rows["full (every weight)"], rows["LoRA r=8 (c_attn)"]

    def number(cell: str) -> float:
        return float(cell.split()[0].replace(",", ""))

    assert number(lora[1]) < number(full[1]) / 5  # trainable parameters
    assert number(lora[6]) < number(full[6])  # checkpoint weights
    assert all(number(cell) > 0 for cell in (*full[2:4], *lora[2:4]))  # step time, peak RSS


def test_ema_scores_the_raw_and_the_averaged_weights_of_each_checkpoint(tmp_path) -> None:
    out = bench("ema.py", "--pipelines", "text_debug", "--schedules", "constant", "--steps", "4",
                "--every", "2", "--eval-batches", "1", "--workdir", str(tmp_path))
    rows = [line for line in out.splitlines() if line.startswith("| 2 |") or line.startswith("| 4 |")]
    assert len(rows) == 2
    (result,) = json.loads((tmp_path / "ema.json").read_text()).values()
    assert [row["step"] for row in result["rows"]] == [2, 4]
    assert all(row["raw"]["loss"] != row["ema"]["loss"] for row in result["rows"])


def test_image_folder_measures_held_and_lazy_folders_in_fresh_processes() -> None:
    out = bench("image_folder.py", "--quick")
    lines = [line.split() for line in out.splitlines() if line.strip().startswith("64 ")]
    rows = {line[1]: line for line in lines if not line[1].isdigit()}
    assert rows.keys() == {"held", "lazy", "lazy/2w", "cached", "cached/2w"}
    assert rows["held"][-1] == "1.00x" and float(rows["lazy/2w"][4]) > 0  # the workers' memory is read
    (fill,) = [line for line in lines if line[1].isdigit()]
    assert fill[1] == "64" and float(fill[4]) > 0  # every file cached, and read back from the cache


def test_text_scaling_measures_tokens_per_second_and_memory_in_a_fresh_process() -> None:
    out = bench("text_scaling.py", "--quick")
    (row,) = [line.split() for line in out.splitlines() if line.strip().startswith("0.02M")]
    tokens_per_s, peak_mb = float(row[3]), float(row[7])
    assert tokens_per_s > 0 and peak_mb > 100  # a process with torch holds more than 100 MiB


def test_text_data_prepares_reads_back_and_trains_on_a_generated_corpus() -> None:
    out = bench("text_data.py", "--quick")
    row = next(line for line in out.splitlines() if line.startswith("| 1 MB"))
    assert "not run" not in row  # prepared, read back, held in memory and prepared with a fitted BPE
    assert "mapped / in memory" in out


def test_startup_scaling_lists_every_fake_plugin() -> None:
    # The script exits non-zero when `genloom plugins` does not list every fake plugin.
    out = bench("startup_scaling.py", "--quick")
    assert next(line for line in out.splitlines() if line.startswith("| 3 |"))


def test_make_bench_runs_every_benchmark_script() -> None:
    # A new script in benchmarks/ must join run_all.py's list (or be named a library there).
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCHMARKS))
    listed = {script for script, _, _ in run_all.BENCHMARKS}
    scripts = {path.name for path in BENCHMARKS.glob("*.py")}
    assert scripts - run_all.LIBRARIES == listed
    assert listed <= scripts


def test_hook_overhead_times_the_unused_event_with_the_installed_plugins() -> None:
    # The installed plugins include the built-in EMA, which implements the per-step event
    # and declines it for a run without trainer.ema.decay: unused, the step pays one test.
    out = bench("hook_overhead.py")
    assert "unused (the trainer's check)" in out and "one step, image_debug batch 4" in out


def test_compile_cost_measures_a_cold_and_a_warm_compile() -> None:
    out = bench("compile_cost.py", "--quick")
    (row,) = [line.split() for line in out.splitlines() if line.startswith("text_debug")]
    cold_first, warm_first = float(row[2]), float(row[4])
    assert cold_first > warm_first > 0  # the warm run found the cold run's kernels cached
    assert row[6].endswith("x")
