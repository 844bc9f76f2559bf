"""Exact resume of the image pipeline: the VAE's sampling noise and condition dropout, mid-epoch."""

import pytest
from genloom.testing import check_resume

# 36 train glyphs in batches of 4: 9 micro-batches an epoch, so a stop after step 2 is
# mid-epoch at either grad_accum.
TINY = ["pipeline=image_debug", "trainer=debug", "trainer.max_steps=4", "trainer.eval_every=100",
        "trainer.checkpoint_every=100"]


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_a_resumed_run_logs_exactly_the_uninterrupted_losses(image_plugin, tmp_path, grad_accum):
    records = check_resume(image_plugin, [*TINY, f"trainer.grad_accum={grad_accum}"], stop_after=2,
                           directory=tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]


def test_a_resumed_stage_1_run_logs_exactly_the_uninterrupted_losses(image_plugin, tmp_path):
    tiny = ["pipeline=glyphs_vq_debug", *TINY[2:]]
    records = check_resume(image_plugin, tiny, stop_after=2, directory=tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]



def test_a_lazy_folder_in_two_workers_trains_exactly_as_one_held_in_memory(image_plugin, tmp_path):
    import numpy as np
    from genloom import cli
    from genloom.testing import active_plugins, train_records
    from PIL import Image

    generator = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):  # 9 train images in batches of 4: 2 batches an epoch, so 5 steps cross epochs
        Image.fromarray(generator.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    common = ["train", "pipeline=image_folder_debug", f"dataset.path={folder}", "trainer.max_steps=5",
              "trainer.eval_every=100", "trainer.checkpoint_every=100", "trainer.progress=false",
              "trainer.log_every=1"]
    lazy = ["dataset.lazy=true", "trainer.num_workers=2"]
    with active_plugins(image_plugin):
        assert cli.main([*common, *lazy, f"hydra.run.dir={tmp_path / 'lazy'}"]) == 0
        assert cli.main([*common, f"hydra.run.dir={tmp_path / 'held'}"]) == 0
    records = train_records(tmp_path / "lazy")
    assert records == train_records(tmp_path / "held") and [r["step"] for r in records] == [1, 2, 3, 4, 5]
