"""The κ tangent of VonMisesFisher's single-direction Function, dz/dκ = b·(l − first·z) with
b = −t′/(t(2 − t)) (one number per sample, y′ ⊥ y in the plane of y and e₁), against float64
autograd through the explicit map κ ↦ z = householder_rotate(loc, (1 − t, sqrt(t(2 − t))·v/|v|))
with t(κ) = t₀ + (κ − κ₀)·t′ on the same draws and the same t′ (the rule's own accuracy is
tests/test_sphere.py's). Weights G (one random row per sample) make ⟨G, dz/dκ⟩, the κ
gradient of Σ G∘z, see every sample's tangent.

Rounding model: z's coordinates carry at most ~(d + 6)·eps absolute error (y's few-ulp entries
times R, summed over d), and the tangent multiplies (l − first·z) by b, so sample n contributes
an error of scale σ_n = eps·|b_n|·(d + 6)·|G_n|₂ (random signs over the coordinates); samples
round independently, σ = sqrt(Σσ_n²), and 10σ is allowed."""

import pytest
import torch

from pyro_reparam_ext.distributions.von_mises_fisher import _VonMisesFisherByMatrix
from pyro_reparam_ext.ops.sphere import (
    householder_rotate,
    vmf_marginal_dt_dconcentration,
    wood_sample_t,
)

_NUM_SAMPLES = 128


def _draws(dim, kappa_value, dtype, seed):
    """Wood's t (one exact 0 among them: t′ = 0 there, and b must stay finite), Gaussian v,
    a unit loc with either sign of loc₁, and the weights G."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    t = wood_sample_t(torch.tensor(kappa_value, dtype=dtype), dim, (_NUM_SAMPLES,))
    t[0] = 0
    v = torch.randn((_NUM_SAMPLES, dim - 1), dtype=dtype, generator=gen)
    loc = torch.randn(dim, dtype=dtype, generator=gen)
    loc[0] = (-1) ** seed * loc[0].abs()
    weights = torch.randn((_NUM_SAMPLES, dim), dtype=dtype, generator=gen)
    return t, v, loc / loc.norm(), weights


def _function_gradient(loc, kappa_value, t, v, weights):
    kappa = torch.tensor(kappa_value, dtype=t.dtype, requires_grad=True)
    z = _VonMisesFisherByMatrix.apply(loc, kappa, t, v, True)
    (got,) = torch.autograd.grad((z * weights).sum(), [kappa])
    return got


def _reference_gradient(loc, kappa_value, t, v, weights, dt):
    """float64 autograd through the explicit map, t′ = ``dt`` given."""
    loc, t, v, weights, dt = (x.double() for x in (loc, t, v, weights, dt))
    kappa = torch.tensor(kappa_value, dtype=torch.float64, requires_grad=True)
    t_kappa = t + (kappa - kappa_value) * dt
    # (clamped as in the library: no 0·∞ at the sample t = 0, where t′ = 0)
    square = (t_kappa * (2 - t_kappa)).clamp(min=torch.finfo(torch.float64).tiny)
    radius = torch.sqrt(square / (v * v).sum(-1))
    y = torch.cat([(1 - t_kappa).unsqueeze(-1), radius.unsqueeze(-1) * v], dim=-1)
    (want,) = torch.autograd.grad((householder_rotate(loc, y) * weights).sum(), [kappa])
    return want


def _sigma(dtype, dim, t, dt, weights):
    t, dt, weights = (x.double() for x in (t, dt, weights))
    b = dt / (t * (2 - t)).clamp(min=torch.finfo(dtype).tiny)
    return torch.finfo(dtype).eps * (dim + 6) * (b * weights.norm(dim=-1)).norm()


@pytest.mark.parametrize("dim", [2, 5, 16])
@pytest.mark.parametrize("kappa_value", [1e-3, 1.0, 50.0, 1e4])
def test_tangent_equals_autograd_float64(dim, kappa_value):
    """float64: the one-number-per-sample tangent equals autograd's full y′R within 10σ, for
    both signs of loc₁ (the reflection's sign choice)."""
    for seed in (0, 1):
        t, v, loc, weights = _draws(dim, kappa_value, torch.float64, seed)
        dt = vmf_marginal_dt_dconcentration(t, torch.tensor(kappa_value, dtype=t.dtype), dim)
        got = _function_gradient(loc, kappa_value, t, v, weights)
        want = _reference_gradient(loc, kappa_value, t, v, weights, dt)
        sigma = _sigma(torch.float64, dim, t, dt, weights)
        assert torch.isfinite(got)
        assert abs(got - want) <= 10 * sigma, (seed, got.item(), want.item(), sigma.item())


@pytest.mark.parametrize("dim", [2, 5, 16])
@pytest.mark.parametrize("kappa_value", [1.0, 1e3, 1e5, 1e7])
def test_float32_tangent_within_rounding_model(dim, kappa_value):
    """float32 Function against float64 autograd on the same draws (t, v cast exactly; the
    float32 t′ cast too, so only the tangent's rounding is compared), κ up to 1e7, where
    t ≈ (d − 1)/(2κ) is a few float32 ulps."""
    t, v, loc, weights = _draws(dim, kappa_value, torch.float32, 0)
    dt = vmf_marginal_dt_dconcentration(t, torch.tensor(kappa_value, dtype=t.dtype), dim)
    got = _function_gradient(loc, kappa_value, t, v, weights)
    want = _reference_gradient(loc, kappa_value, t, v, weights, dt)
    sigma = _sigma(torch.float32, dim, t, dt, weights)
    assert torch.isfinite(got)
    assert abs(got.double() - want) <= 10 * sigma, (got.item(), want.item(), sigma.item())
