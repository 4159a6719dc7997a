"""PowerSpherical's torch fast paths (issue 15): the d = 3 sampler without a Gamma draw and the
single-direction autograd Function with a hand-written backward (d ≤ 16)."""

import numpy as np
import pytest
import torch

import pyro_reparam_ext as prx
from pyro_reparam_ext.distributions.power_spherical import _marginal, _marginal_dim3
from pyro_reparam_ext.ops.sphere import householder_rotate
from tests.test_sphere import (
    KS_CONCENTRATIONS,
    KS_SAMPLES,
    _assert_power_spherical_marginal,
    _frame,
)


def _reference(loc, kappa, num_samples):
    """The same draws (same RNG calls in the same order) through autograd: (first, radius)
    from the marginal helpers, rotated by householder_rotate."""
    dim = loc.shape[-1]
    v = torch.randn((num_samples,) + loc.shape[:-1] + (dim - 1,), dtype=loc.dtype)
    norm_sq = (v * v).sum(-1)
    if dim == 3:
        first, radius = _marginal_dim3(kappa, norm_sq)
    else:
        gamma_alpha = torch._standard_gamma((kappa + (dim - 1) / 2).expand(norm_sq.shape))
        first, radius = _marginal(gamma_alpha, norm_sq)
    y = torch.cat([first.unsqueeze(-1), radius.unsqueeze(-1) * v], dim=-1)
    return householder_rotate(loc, y)


@pytest.mark.parametrize("dim", [2, 3, 5, 16])
def test_single_direction_function_equals_autograd(dim):
    """The hand-written backward is the exact derivative of the same map: values and the
    gradients in loc (not unit, so its normalization is differentiated too) and κ equal the
    autograd reference on the same draws to float64 rounding (1e-12 relative), for loc of
    shape (d,) and (1, d), both signs of loc₁ (the reflection's sign choice), κ from 0 to 1e4."""
    gen = torch.Generator().manual_seed(dim)
    a = torch.randn(dim, dtype=torch.float64, generator=gen)
    for loc_shape in [(dim,), (1, dim)]:
        for flip, kappa_value in [(1.0, 0.0), (-1.0, 1.0), (1.0, 50.0), (-1.0, 1e4)]:
            loc = torch.randn(loc_shape, dtype=torch.float64, generator=gen)
            loc[..., 0] = flip * loc[..., 0].abs()
            loc = (1.7 * loc).requires_grad_()
            kappa = torch.tensor(kappa_value, dtype=torch.float64, requires_grad=True)
            torch.manual_seed(0)
            z = prx.PowerSpherical(loc, kappa, validate_args=False).rsample((64,))
            torch.manual_seed(0)
            expected = _reference(loc, kappa, 64)
            torch.testing.assert_close(z, expected, rtol=0, atol=1e-12)
            got = torch.autograd.grad((z @ a).sum(), [loc, kappa])
            want = torch.autograd.grad((expected @ a).sum(), [loc, kappa])
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12 * w.abs().max().item())
            # only one of the two requiring a gradient (the Function skips the other's work)
            for wrt in [loc, kappa]:
                fixed_loc = loc if wrt is loc else loc.detach()
                fixed_kappa = kappa if wrt is kappa else kappa.detach()
                torch.manual_seed(0)
                z = prx.PowerSpherical(fixed_loc, fixed_kappa, validate_args=False).rsample((64,))
                (g,) = torch.autograd.grad((z @ a).sum(), [wrt])
                w = want[0] if wrt is loc else want[1]
                torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12 * w.abs().max().item())


def test_dim3_pathwise_derivative_matches_finite_differences():
    """d = 3 draws are an explicit smooth map of κ at a fixed seed, so d/dκ of f = Σ w·z equals
    the central difference (f(κ + h) − f(κ − h))/2h, float64, h = 1e-5·max(κ, 1): truncation
    h²|f‴|/6 ≲ 1e-9 (f‴ = O(n) for n = 256 samples, scaled by 1/max(κ, 1)³) and rounding
    ≈ 256·1e-16/h ≤ 3e-9, so 1e-7·max(1, |f′|) is a loose bound. Both the single-direction
    Function and the batched path (two mean directions) are checked."""
    mu, _ = _frame(3, 2, seed=4)
    for loc in [torch.tensor(mu[0]), torch.tensor(mu)]:
        weights = torch.randn((256,) + loc.shape, dtype=torch.float64)

        def f(kappa, loc=loc, weights=weights):
            torch.manual_seed(3)
            return (prx.PowerSpherical(loc, kappa).rsample((256,)) * weights).sum()

        for kappa_value in [0.5, 7.0, 300.0]:
            kappa = torch.tensor(kappa_value, dtype=torch.float64, requires_grad=True)
            (derivative,) = torch.autograd.grad(f(kappa), [kappa])
            h = 1e-5 * max(kappa_value, 1.0)
            with torch.no_grad():
                difference = (f(kappa + h) - f(kappa - h)) / (2 * h)
            assert derivative.abs() > 0
            tolerance = 1e-7 * max(1.0, derivative.abs().item())
            assert abs(derivative.item() - difference.item()) <= tolerance, (kappa_value, loc.shape)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dim", [3, 16])
def test_single_direction_marginal_matches_beta_ks(dim, dtype):
    """KS of (1 + μᵀz)/2 against Beta(α, β) on the single-direction path (one loc, one κ at a
    time; test_sphere's KS test samples a batch of κ, which takes the batched path), with
    test_sphere's KS threshold (false alarm 1e-6 per comparison)."""
    torch_dtype = getattr(torch, dtype)
    mu = _frame(dim, 1, seed=dim + 1)[0][0]
    torch.manual_seed(1)
    z = [
        prx.PowerSpherical(
            torch.tensor(mu, dtype=torch_dtype), torch.tensor(kappa, dtype=torch_dtype)
        ).rsample((KS_SAMPLES,))
        for kappa in KS_CONCENTRATIONS
    ]
    assert z[0].dtype == torch_dtype
    _assert_power_spherical_marginal(np.stack([x.numpy() for x in z], 1), mu, dim, "single")


@pytest.mark.parametrize("dim", [3, 16])
def test_single_direction_sample_equals_rsample(dim):
    """sample() (no_grad: the Function skips the κ tangent) draws the same points as
    rsample() from the same seed, to float64 rounding."""
    loc = torch.tensor(_frame(dim, 1, seed=2)[0][0]).requires_grad_()
    dist = prx.PowerSpherical(loc, torch.tensor(4.0, requires_grad=True))
    torch.manual_seed(7)
    sampled = dist.sample((64,))
    torch.manual_seed(7)
    reparameterized = dist.rsample((64,))
    assert not sampled.requires_grad and reparameterized.requires_grad
    torch.testing.assert_close(sampled, reparameterized.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kappa_value", [1.0, 1e3, 1e5, 1e7])
def test_single_direction_float32_concentration_gradient_is_precise(kappa_value):
    """The float32 κ gradient of the single-direction Function (tangent b·(l − first·z) taken
    from the rounded z) against float64 autograd on the same draws (d = 3: the float32 v, cast
    exactly, is the whole draw). Rounding model: z's coordinates carry at most ~(d + 6)·eps
    absolute error (y's few-ulp entries times R, summed over d), so sample n contributes an
    error of scale σ_n = eps·|b_n|·(d + 6)·|a|₂ (random signs over the coordinates); samples
    round independently, σ = sqrt(Σσ_n²), and 10σ is allowed (measured: 0.2σ to 0.9σ up to
    κ = 1e7, where t = 1 − first ≈ 2/κ is a few float32 ulps). The cancelling form
    b = first′/(1 − first²) measured 2.6σ at κ = 1e5 and is not finite from κ = 1e6."""
    dim, num_samples = 3, 256
    gen = torch.Generator().manual_seed(11)
    loc64 = torch.randn(dim, dtype=torch.float64, generator=gen)
    loc64 = loc64 / loc64.norm()
    a64 = torch.randn(dim, dtype=torch.float64, generator=gen)
    kappa32 = torch.tensor(kappa_value, dtype=torch.float32, requires_grad=True)
    torch.manual_seed(5)
    z = prx.PowerSpherical(loc64.float(), kappa32, validate_args=False).rsample((num_samples,))
    (got,) = torch.autograd.grad((z @ a64.float()).sum(), [kappa32])
    torch.manual_seed(5)
    v = torch.randn((num_samples, dim - 1), dtype=torch.float32).double()  # rsample's draw
    kappa64 = torch.tensor(kappa_value, dtype=torch.float64, requires_grad=True)
    norm_sq = (v * v).sum(-1)
    first, radius, scale = _marginal_dim3(kappa64, norm_sq, tangent=True)
    y = torch.cat([first.unsqueeze(-1), radius.unsqueeze(-1) * v], dim=-1)
    (want,) = torch.autograd.grad((householder_rotate(loc64, y) @ a64).sum(), [kappa64])
    sigma = torch.finfo(torch.float32).eps * (dim + 6) * a64.norm() * scale.detach().norm()
    assert abs(got.double() - want) <= 10 * sigma, (kappa_value, got.item(), want.item())
