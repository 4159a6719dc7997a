"""VonMisesFisher's single-direction torch path (issue 15): one autograd Function with a
hand-written backward for one mean direction and d ≤ 16 (d ≠ 3), checked against the batched
autograd path (Wood's t, then v, then embed_rotate) on the same draws."""

import pytest
import torch

import pyro_reparam_ext as prx
from pyro_reparam_ext.ops.sphere import (
    _vmf_tangent_coordinates,
    embed_rotate,
    vmf_marginal_dt_dconcentration,
    wood_sample_t,
)

# Both paths sum the same per-sample terms (n = 64 samples, d coordinates) in different orders
# and groupings, so their gradients differ by a few roundings of the summands, not of the sum
# (which cancels: loc's gradient is tangent and nearly 0 when κ is small). Scales: loc's terms
# are of order |a|/|loc| per sample (unit samples; the reflection's and the normalization's
# Jacobians have norm O(1)), so loc's scale is n·|a|/|loc|; κ's gradient is compared relative to
# itself (measured differences ≤ 1e-14 in float64 and ≤ 1e-6 in float32, here and over 257
# samples ≤ 8e-6). _ROUNDING: 1e-12 (float64: ε = 2.2e-16 times a few hundred terms) and 1e-5
# (float32: ε = 1.2e-7 likewise), the tolerances of the issue. The Function's κ tangent
# b·(l − first·z) (tests/test_vmf_tangent.py) adds its own rounding, of scale
# σ = eps·(d + 6)·|a|·(Σ_n b_n²)^½ (b_n = t′_n/(t_n(2 − t_n)): z's coordinates carry ~(d + 6)·eps
# absolute error, times b, random signs over samples and coordinates); 10σ is allowed on top.
_ROUNDING = {torch.float64: 1e-12, torch.float32: 1e-5}


def _tangent_sigma(kappa, dim, num_samples, a):
    """σ of the tangent's rounding model above, from the draws of seed 0 (Wood's t first)."""
    torch.manual_seed(0)
    t = wood_sample_t(kappa.detach(), dim, (num_samples,)).double()
    dt = vmf_marginal_dt_dconcentration(t, kappa.detach().double(), dim)
    b = dt / (t * (2 - t)).clamp(min=torch.finfo(kappa.dtype).tiny)
    return torch.finfo(kappa.dtype).eps * (dim + 6) * a.norm().item() * b.norm().item()


def _reference(loc, kappa, num_samples):
    """The batched path (what rsample takes for several mean directions) on one direction."""
    kappa = kappa.expand(loc.shape[:-1])  # as the distribution broadcasts it
    first, radius, direction = _vmf_tangent_coordinates(kappa, loc.shape[-1], (num_samples,))
    return embed_rotate(loc, first, radius, direction)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dim", [2, 5, 16])
def test_single_direction_function_equals_batched_path(dim, dtype):
    """Same samples bitwise (same RNG calls, same rotation matrix, same products) and the same
    loc (not unit: its normalization is differentiated too) and κ gradients, for loc of shape
    (d,) and (1, d), both signs of loc₁ (the reflection's sign choice), κ from 1e-3 to 1e4, with
    both, one or none of loc and κ requiring a gradient."""
    gen = torch.Generator().manual_seed(dim)
    a = torch.randn(dim, dtype=dtype, generator=gen)
    cases = [(1.0, 1e-3), (-1.0, 1.0), (1.0, 50.0), (-1.0, 1e4)]
    for loc_shape in [(dim,), (1, dim)]:
        for flip, kappa_value in cases:
            raw = torch.randn(loc_shape, dtype=dtype, generator=gen)
            raw[..., 0] = flip * raw[..., 0].abs()
            for wrt in [("loc", "kappa"), ("loc",), ("kappa",), ()]:
                loc = (1.7 * raw).requires_grad_("loc" in wrt)
                kappa = torch.tensor(kappa_value, dtype=dtype, requires_grad="kappa" in wrt)
                inputs = [x for x in (loc, kappa) if x.requires_grad]
                torch.manual_seed(0)
                z = prx.VonMisesFisher(loc, kappa, validate_args=False).rsample((64,))
                torch.manual_seed(0)
                expected = _reference(loc, kappa, 64)
                assert z.shape == expected.shape == (64,) + loc_shape
                assert torch.equal(z.detach(), expected.detach()), (loc_shape, kappa_value, wrt)
                if not inputs:
                    assert not z.requires_grad
                    continue
                got = torch.autograd.grad((z @ a).sum(), inputs)
                want = torch.autograd.grad((expected @ a).sum(), inputs)
                rounding = _ROUNDING[dtype]
                loc_scale = 64 * a.norm().item() / loc.detach().norm().item()
                for x, g, w in zip(inputs, got, want, strict=True):
                    assert g.shape == w.shape
                    if x is loc:
                        atol = rounding * loc_scale
                    else:
                        atol = rounding * w.abs().item() + 10 * _tangent_sigma(kappa, dim, 64, a)
                    torch.testing.assert_close(g, w, rtol=0, atol=atol)


def test_single_direction_sample_equals_rsample():
    """sample() (no_grad: the Function skips dt/dκ) draws the same points as rsample()."""
    loc = torch.nn.functional.normalize(torch.randn(16, dtype=torch.float64), dim=-1)
    dist = prx.VonMisesFisher(loc.requires_grad_(), torch.tensor(4.0, requires_grad=True))
    torch.manual_seed(7)
    sampled = dist.sample((32,))
    torch.manual_seed(7)
    reparameterized = dist.rsample((32,))
    assert not sampled.requires_grad and reparameterized.requires_grad
    assert torch.equal(sampled, reparameterized.detach())
