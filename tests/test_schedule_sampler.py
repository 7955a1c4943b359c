import numpy as np
import pytest

from ddrf_runtime.sampler import sample_ddim
from ddrf_runtime.schedule import cosine_alphas_cumprod, ddim_timesteps


def test_cosine_schedule_is_monotone_and_bounded():
    a = cosine_alphas_cumprod(500)
    assert a.dtype == np.float64 and a.shape == (500,)
    assert np.all(np.diff(a) < 0)
    assert 0.99 < a[0] < 1.0 and 0.0 < a[-1] < 1e-3


def test_ddim_timesteps_are_original_indices():
    ts = ddim_timesteps(500, 5)
    assert ts.tolist() == [499, 374, 250, 125, 0]
    assert ddim_timesteps(500, 1).tolist() == [499]
    with pytest.raises(ValueError):
        ddim_timesteps(500, 0)
    with pytest.raises(ValueError):
        ddim_timesteps(500, 501)


def test_ddim_with_oracle_denoiser_recovers_x0_and_sees_original_t():
    a = cosine_alphas_cumprod(100)
    x0 = np.linspace(-1, 1, 12).reshape(1, 3, 2, 2)
    seen = []

    def oracle(x, t):
        seen.append(t)
        return x0

    noise = np.random.default_rng(0).standard_normal(x0.shape)
    out = sample_ddim(oracle, noise, ddim_timesteps(100, 4), a)
    np.testing.assert_allclose(out, x0)
    assert seen == [99, 66, 33, 0]


def test_ddim_deterministic_path_matches_closed_form():
    """With a denoiser that returns a fixed fraction of x, the DDIM update is a known linear map."""
    a = cosine_alphas_cumprod(50)
    ts = ddim_timesteps(50, 3)
    x = np.ones((1, 1, 1, 1))
    out = sample_ddim(lambda x, t: 0.5 * x, x, ts, a)
    v = 1.0
    for i, t in enumerate(ts[:-1]):
        x0 = 0.5 * v
        eps = (v - np.sqrt(a[t]) * x0) / np.sqrt(1 - a[t])
        v = np.sqrt(a[ts[i + 1]]) * x0 + np.sqrt(1 - a[ts[i + 1]]) * eps
    np.testing.assert_allclose(out, 0.5 * v)
