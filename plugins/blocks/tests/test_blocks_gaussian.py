"""The Gaussian pieces of the VAE objective: seeded evaluation noise, the likelihood, the KL, the prior."""

import math

import pytest
import torch
from genloom_blocks.gaussian import gaussian_nll, posterior_sample, prior_sample, standard_normal_kl


def test_evaluation_noise_is_one_seeded_draw_and_training_noise_is_fresh() -> None:
    mean, logvar = torch.zeros(3, 2, 4), torch.zeros(3, 2, 4)
    z = posterior_sample(mean, logvar, training=False)
    assert torch.equal(z, posterior_sample(mean, logvar, training=False))
    assert torch.equal(z[0], z[2])  # an example's draw does not depend on its batch
    assert torch.equal(posterior_sample(mean[:1], logvar[:1], training=False)[0], z[0])
    assert not torch.equal(posterior_sample(mean, logvar, training=True)[0], z[0])


def test_the_likelihood_and_kl_are_summed_per_example_and_averaged_over_the_batch() -> None:
    x, x_hat = torch.zeros(2, 1, 3), torch.tensor([[[1.0, 0, 0]], [[0, 0, 0]]])
    log_sigma = torch.tensor(0.0)
    expected = 3 * 0.5 * math.log(2 * math.pi) + 0.5 * 0.5  # half an example's squared error of 1
    assert float(gaussian_nll(x, x_hat, log_sigma)) == pytest.approx(expected)
    floored = gaussian_nll(x, x, torch.tensor(-20.0))  # sigma never shrinks below 1e-3
    assert float(floored) == pytest.approx(3 * (math.log(1e-3) + 0.5 * math.log(2 * math.pi)))
    assert float(standard_normal_kl(torch.zeros(2, 5), torch.zeros(2, 5))) == 0
    one_off = torch.tensor([[1.0, 0], [0, 0]])  # KL 0.5 in the first example, 0 in the second
    assert float(standard_normal_kl(one_off, torch.zeros(2, 2))) == pytest.approx(0.25)


def test_the_prior_is_scaled_by_temperature_and_its_options_checked() -> None:
    cpu = torch.device("cpu")
    draw = lambda t: prior_sample(3, (2,), temperature=t, rng=torch.Generator().manual_seed(0), device=cpu)  # noqa: E731
    assert torch.allclose(draw(0.5), 0.5 * draw(1.0)) and not draw(0.0).any()
    with pytest.raises(ValueError, match="n=0 must be at least 1"):
        prior_sample(0, (2,), temperature=1.0, rng=None, device=cpu)
    with pytest.raises(ValueError, match="temperature=-1.0 must be at least 0"):
        draw(-1.0)
    with pytest.raises(ValueError, match=r"create it with torch.Generator\(device='cuda'\)"):
        prior_sample(1, (2,), temperature=1.0, rng=torch.Generator(), device=torch.device("cuda"))
