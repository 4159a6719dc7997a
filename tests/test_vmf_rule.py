"""The κ-gradient rule of the torch vMF marginal (``vmf_marginal_dt_dconcentration``) against
closed forms and against a converged version of itself (issue 15).

Tolerance: the rule's documented relative error (ops/sphere.py: measured ≤ 4e-8 in float64),
asserted as 1e-7, the accuracy the float64 rule had before it moved to τ = tan((φ − θ)/4)
(float64 rounding adds ~1e-13 relative, negligible)."""

from __future__ import annotations

import math

import numpy as np
import torch

from pyro_reparam_ext.ops import sphere
from pyro_reparam_ext.ops.bessel import bessel_iv_ratio
from pyro_reparam_ext.ops.sphere import _inverse_cdf_t_dim3, vmf_marginal_dt_dconcentration

T_GRID = torch.tensor([1e-6, 1e-3, 0.05, 0.5, 1.0, 1.5, 1.95, 1.999], dtype=torch.float64)


def test_rule_at_zero_concentration_matches_closed_form():
    """κ = 0: p(θ) ∝ sin^{d−2}θ and A = 0, so ∂F/∂κ = sin^{d−1}θ/((d − 1)Z), dθ/dκ =
    −sin θ/(d − 1) and dt/dκ = sin θ·dθ/dκ = −t(2 − t)/(d − 1), for every d. (At d = 2 the
    tail reaches a pole for every θ.)"""
    for dim in [2, 3, 4, 16, 128, 4096]:
        got = vmf_marginal_dt_dconcentration(T_GRID, torch.zeros(()), dim)
        expected = -T_GRID * (2 - T_GRID) / (dim - 1)
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=0, msg=f"d={dim}")


def test_rule_at_dim3_matches_the_exact_inverse_cdf():
    """d = 3: t(u; κ) = −log(1 − (1 − u)(1 − e^{−2κ}))/κ is the exact inverse CDF, so autograd
    through it gives dt/dκ at fixed CDF value in closed form, for every κ and u (u ≥ 1e-4:
    closer to the antipode, 2 − t ≲ 1e-9, the rule loses accuracy at small κ, as before the
    rule moved to τ = tan((φ − θ)/4): 9e-5 at κ = 1e-3, u = 1e-9)."""
    u = torch.tensor([1e-4, 2e-3, 0.01, 0.3, 0.5, 0.7, 0.99, 1 - 1e-6], dtype=torch.float64)
    for value in [1e-3, 0.1, 1.0, 10.0, 1e3, 1e5]:
        kappa = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        t = _inverse_cdf_t_dim3(kappa, u)
        eye = torch.eye(len(u), dtype=u.dtype)
        (expected,) = torch.autograd.grad(t, kappa, eye, is_grads_batched=True)
        got = vmf_marginal_dt_dconcentration(t, kappa, 3)
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=0, msg=f"kappa={value}")


def test_rule_matches_the_converged_rule_on_a_dense_grid(monkeypatch):
    """The rule against itself with (30, 14) panels × nodes (converged: it matches the
    mpmath references of tests/test_sphere.py to ≤ 6e-11 on every row but the one at
    t = 1 − A_3(10), where the rounding of A sets 8e-8), in float64, on d ∈ [2, 4096],
    κ ∈ [1e-3, 1e5] and t from 1e-3 to 20 times the mean of t plus points between the mode
    and the mean (the tails that contain the mode), within the documented 1e-7."""
    cases = []
    for dim in [2, 3, 4, 5, 8, 16, 64, 256, 1024, 4096]:
        for value in [1e-3, 0.1, 1.0, 5.0, 10.0, 30.0, 100.0, 1e3, 1e5]:
            kappa = torch.tensor(value, dtype=torch.float64)
            mean = 1 - bessel_iv_ratio(dim / 2 - 1, kappa).item()
            mode = 1 - 2 * value / (dim - 2 + math.hypot(2 * value, dim - 2))
            t = np.concatenate(
                [np.linspace(mode, mean, 9)[1:-1], mean * np.geomspace(1e-3, 20, 30)]
            )
            cases.append((dim, kappa, torch.tensor(t[(t > 0) & (t < 1.9)])))
    got = [vmf_marginal_dt_dconcentration(t, kappa, dim) for dim, kappa, t in cases]
    monkeypatch.setattr(sphere, "_RULE_SIZE", (30, 14))
    monkeypatch.setattr(sphere, "_RULE_TENSORS", {})
    for (dim, kappa, t), value in zip(cases, got, strict=True):
        expected = vmf_marginal_dt_dconcentration(t, kappa, dim)
        torch.testing.assert_close(value, expected, rtol=1e-7, atol=0, msg=f"d={dim} κ={kappa}")
