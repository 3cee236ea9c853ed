"""Training timesteps: uniform, or cubic (favouring the noisy steps where a condition decides the layout)."""

from __future__ import annotations

import pytest
import torch

from train.losses import sample_timesteps


def test_cubic_sampling_favours_the_noisy_steps_and_stays_in_the_schedule() -> None:
    generator = torch.Generator().manual_seed(0)
    uniform = sample_timesteps(20_000, 1000, "uniform", generator).float()
    cubic = sample_timesteps(20_000, 1000, "cubic", generator).float()
    for t in (uniform, cubic):
        assert t.min() >= 0 and t.max() <= 999
    assert abs(uniform.median().item() - 500) < 20
    assert abs(cubic.median().item() - 1000 * (1 - 0.5**3)) < 20  # the median of u³ is 1/8
    assert (cubic > 500).float().mean() > 0.75


def test_an_unknown_sampling_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown timestep sampling"):
        sample_timesteps(4, 1000, "lognormal", torch.Generator())
