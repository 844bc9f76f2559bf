"""Evaluation reports how much of a tokenizer's codebook a whole split uses (CodeUsage)."""

import math

import pytest
import torch
from genloom.distributed import Placement
from genloom.interfaces import CodeUsage
from genloom.trainer import evaluate
from torch import nn

K = 6
CPU = Placement(torch.device("cpu"))


class CountingTokenizer(nn.Module):
    """Each example ``x`` (3,) holds its own codes; the loss is a per-example mean."""

    codebook_size = K

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def loss(self, batch):
        return {"loss": batch["x"].float().mean() + self.weight}

    def code_counts(self, batch):
        return torch.bincount(batch["x"].flatten(), minlength=K)


DATA = [{"x": torch.tensor(codes)} for codes in ([0, 0, 1], [1, 1, 1], [2, 0, 1], [4, 4, 4], [0, 1, 2])]


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_code_perplexity_and_dead_codes_are_the_splits_at_any_batch_size(batch_size):
    model = CountingTokenizer()
    assert isinstance(model, CodeUsage)
    metrics = evaluate(model, DATA, batch_size=batch_size, max_batches=None, placement=CPU)
    counts = [4, 6, 2, 0, 3, 0]  # codes 3 and 5 never occur
    p = [c / 15 for c in counts if c]
    assert metrics["code_perplexity"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))
    assert metrics["dead_codes"] == 2


def test_a_generator_without_codes_reports_no_code_usage():
    class Plain(nn.Module):
        def loss(self, batch):
            return {"loss": batch["x"].float().mean()}

    metrics = evaluate(Plain(), DATA, batch_size=2, max_batches=None, placement=CPU)
    assert set(metrics) == {"loss"}
