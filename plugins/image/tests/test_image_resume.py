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
