"""Evaluation weights a metric by its ``"<name>/weight"`` entry: a ratio of totals, at any batch size."""

import pytest
import torch
from genloom.distributed import Placement
from genloom.trainer import evaluate
from torch import nn

CPU = Placement(torch.device("cpu"))
# Each example: bits spent on it and the bytes it covers (windows of equal tokens, unequal bytes).
DATA = [{"bits": torch.tensor(b), "bytes": torch.tensor(n)}
        for b, n in ((10.0, 4), (30.0, 20), (7.0, 1), (12.0, 12), (50.0, 9))]


class BitsPerByte(nn.Module):
    """Reports the batch's total bits over total bytes, with the bytes as its weight."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def loss(self, batch):
        covered = batch["bytes"].sum().float()
        return {"loss": batch["bits"].mean() + self.weight, "bits_per_byte": batch["bits"].sum() / covered,
                "bits_per_byte/weight": covered}


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
def test_a_weighted_metric_is_the_splits_total_over_its_total(batch_size):
    metrics = evaluate(BitsPerByte(), DATA, batch_size=batch_size, max_batches=None, placement=CPU)
    assert metrics["bits_per_byte"] == pytest.approx(109.0 / 46)  # not the mean of the ratios (3.51)
    assert metrics["loss"] == pytest.approx(109.0 / 5)  # unweighted metrics: per-example means
    assert set(metrics) == {"loss", "bits_per_byte"}  # the weight itself is not reported
