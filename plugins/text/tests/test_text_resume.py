"""Exact resume of the text pipeline: the Transformer with dropout, stopped mid-epoch."""

import pytest
from genloom.testing import check_resume

TINY = ["pipeline=text_debug", "trainer=debug", "trainer.max_steps=4", "trainer.eval_every=100",
        "trainer.checkpoint_every=100", "generator.dropout=0.2"]


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_a_resumed_run_logs_exactly_the_uninterrupted_losses(text_plugin, tmp_path, grad_accum):
    records = check_resume(text_plugin, [*TINY, f"trainer.grad_accum={grad_accum}"], stop_after=2,
                           directory=tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
