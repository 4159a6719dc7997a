"""Sampling on the unit sphere S^{d−1} ⊂ R^d with pathwise gradients (PyTorch).

Building blocks of :class:`~pyro_reparam_ext.distributions.VonMisesFisher` and
:class:`~pyro_reparam_ext.distributions.PowerSpherical`:

* :func:`householder_rotate` maps a point given in the frame where the mean direction is the
  first basis vector e₁ to the frame of ``loc`` by one Householder reflection, in O(d) per
  point (no d×d matrix, no QR);
* :func:`uniform_tangent` draws directions uniformly on S^{d−2} (the tangent part);
* :func:`wood_sample_t` draws t = 1 − μᵀz of a von Mises–Fisher sample by Wood's rejection
  sampler [1] from a fixed pool of vectorized proposals (no loop, no host synchronization);
* :func:`vmf_marginal_sample_t` attaches the implicit reparameterization gradient [2]
  dt/dκ = (∂F/∂κ)/p(w) (w = 1 − t, F the CDF of w) to such a sample; for d = 3 it is
  replaced by the exact inverse-CDF sampler, differentiated directly.

The marginal of w = μᵀz has density ∝ exp(κw)(1 − w²)^{(d−3)/2} on [−1, 1] [1, eq. 3].
Working with t = 1 − w instead of w keeps full relative precision at large κ, where
t ≈ (d − 1)/(2κ) is tiny.

Example::

    >>> kappa = torch.tensor(10.0, requires_grad=True)
    >>> t = vmf_marginal_sample_t(kappa, dim=5, sample_shape=(1000,))
    >>> (1 - t).mean().backward()            # unbiased estimate of dA_5/dκ

References:
    [1] A. T. A. Wood (1994). Simulation of the von Mises Fisher distribution.
        Communications in Statistics — Simulation and Computation 23(1), 157–164.
    [2] M. Figurnov, S. Mohamed, A. Mnih (2018). Implicit Reparameterization Gradients. NeurIPS.
    [3] T. R. Davidson, L. Falorsi, N. De Cao, T. Kipf, J. M. Tomczak (2018). Hyperspherical
        Variational Auto-Encoders. UAI (Householder reflection, Algorithm 1).
    [4] G. Ulrich (1984). Computer generation of distributions on the m-sphere. Journal of the
        Royal Statistical Society C (Applied Statistics) 33(2), 158–163.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from pyro_reparam_ext.ops.bessel import DEBYE_MIN_ORDER, _ratio_forward, _sum_to_shape, constant

__all__ = [
    "embed_rotate",
    "householder_rotate",
    "uniform_tangent",
    "vmf_marginal_dt_dconcentration",
    "vmf_marginal_sample_t",
    "wood_sample_t",
]


def householder_rotate(loc: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Rotate points ``y`` given relative to e₁ into the frame where e₁ ↦ ``loc``.

    Uses the reflection H = I − 2uuᵀ/|u|² with u = e₁ + s·loc, s = sign(loc₁), followed by
    the sign flip −s: the map y ↦ −s·H y is orthogonal and sends e₁ to loc. Choosing the sign
    keeps |u|² = 2(1 + |loc₁|) ≥ 2, so it is stable for every loc (the textbook
    u = e₁ − loc [3] divides by zero at loc = e₁). ``loc`` is normalized first, so gradients
    with respect to it are tangent to the sphere.

    :param torch.Tensor loc: mean directions, shape ``batch + (d,)``.
    :param torch.Tensor y: points, shape ``sample + batch + (d,)``.
    """
    loc = loc / torch.linalg.vector_norm(loc, dim=-1, keepdim=True)
    sign = torch.where(loc[..., :1] >= 0, 1.0, -1.0).to(loc.dtype)
    e1 = torch.zeros_like(loc)
    e1[..., 0] = 1
    u = e1 + sign * loc
    # vecdot and addcmul: one pass over the samples each (not a product plus a sum / a
    # product plus a difference)
    scale = 2 * torch.linalg.vecdot(u, y).unsqueeze(-1) / (u * u).sum(-1, keepdim=True)
    return torch.addcmul(y, scale, u, value=-1) * -sign


def _dot_rows(x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Σ_j x[n, p, j]·vectors[p, j]: one matrix-vector product when there is one parameter
    (einsum's general path costs a dozen small ops)."""
    if vectors.shape[0] == 1:
        return (x[:, 0] @ vectors[0]).unsqueeze(-1)
    return torch.einsum("npj,pj->np", x, vectors)


def _sum_rows(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_n weights[n, p]·x[n, p, j], as :func:`_dot_rows`."""
    if weights.shape[1] == 1:
        return (weights[:, 0] @ x[:, 0]).unsqueeze(0)
    return torch.einsum("npj,np->pj", x, weights)


_ONES: dict = {}


def _squared_norms(rows: torch.Tensor) -> torch.Tensor:
    """|row|² of an (N, k) matrix as an (N, 1) column. Up to 16 columns one matrix product
    with a column of ones (built once per (k, dtype, device)), about half the CPU time of a
    reduction kernel there (measured 12 against 16 µs for ``vecdot`` at 1024 × 15); wider
    rows by ``vecdot`` (the product measured 10–25% slower from k = 127)."""
    k = rows.shape[-1]
    if k > 16:
        return torch.linalg.vecdot(rows, rows).unsqueeze(-1)
    key = (k, rows.dtype, rows.device)
    if key not in _ONES:
        with torch.inference_mode(False):
            _ONES[key] = torch.ones((k, 1), dtype=rows.dtype, device=rows.device)
    return torch.mm(rows * rows, _ONES[key])


#: ambient dimension from which :func:`embed_rotate` uses the hand-written backward (measured:
#: slower than autograd's at d ≤ 16, about equal at d = 64–128, 2–3× faster at d = 1024)
_FUSED_MIN_DIM = 128


class _EmbedRotate(torch.autograd.Function):
    """z = ŝ·H·y for y = (first, radius·direction), H = I − c·uuᵀ, c = 2/|u|², with a
    hand-written backward: four passes over the samples forward and four backward, against
    about twice that for the same expression taken apart by autograd (:func:`embed_rotate`).
    Inputs are flattened to (samples, parameters, ...) with the parameters' shape last."""

    @staticmethod
    def forward(ctx, u, first, radius, direction, flip):
        ctx.shapes = u.shape, first.shape
        dim = u.shape[-1]
        num_params = flip.numel()
        u = u.reshape(num_params, dim)
        u0, u_rest = u[:, 0], u[:, 1:]
        flip = flip.reshape(num_params)
        f, r = first.reshape(-1, num_params), radius.reshape(-1, num_params)
        v = direction.reshape(-1, num_params, dim - 1)
        c = 2 / torch.linalg.vecdot(u, u)
        w = _dot_rows(v, u_rest)  # u_restᵀ·direction
        k = c * torch.addcmul(u0 * f, r, w)  # c·uᵀy
        z = torch.empty(f.shape + (dim,), dtype=u.dtype, device=u.device)
        torch.mul(v, (flip * r).unsqueeze(-1), out=z[..., 1:])
        z[..., 1:].addcmul_((flip * k).unsqueeze(-1), u_rest, value=-1)
        z[..., 0] = flip * (f - k * u0)
        ctx.save_for_backward(u, f, r, v, flip, c, w, k)
        return z.reshape(first.shape + (dim,))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        u, f, r, v, flip, c, w, k = ctx.saved_tensors
        u0, u_rest = u[:, 0], u[:, 1:]
        g = grad.reshape(f.shape + u.shape[-1:])
        g0, g_rest = g[..., 0], g[..., 1:]
        q = torch.addcmul(_dot_rows(g_rest, u_rest), u0, g0)  # uᵀg
        g_direction = torch.linalg.vecdot(g_rest, v)
        cq = c * q
        d_first = flip * (g0 - cq * u0)
        d_radius = flip * (g_direction - cq * w)
        # d(gᵀz)/du = −ŝc(q·y + p·g − c·p·q·u) summed over the samples, p = uᵀy = k/c
        p = k / c
        sum_qy = torch.cat([(q * f).sum(0).unsqueeze(-1), _sum_rows(v, q * r)], dim=-1)
        inner = sum_qy + _sum_rows(g, p) - (c * (p * q).sum(0)).unsqueeze(-1) * u
        d_u = (-flip * c).unsqueeze(-1) * inner
        u_shape, sample_shape = ctx.shapes
        return (
            d_u.reshape(u_shape),
            d_first.reshape(sample_shape),
            d_radius.reshape(sample_shape),
            None,
            None,
        )


#: ambient dimension up to which :func:`embed_rotate` rotates a single mean direction by a d×d
#: matrix product (measured: fewer small ops win at d ≤ 16, the O(d²) product loses from d = 32
#: in float64 and d = 64 in float32)
_MATRIX_MAX_DIM = 16

_BASIS_TENSORS: dict = {}


def _identity_and_e1(dim: int, dtype: torch.dtype, device: torch.device):
    """−I_d and e₁, built once per (d, dtype, device)."""
    key = (dim, dtype, device)
    if key not in _BASIS_TENSORS:
        with torch.inference_mode(False):  # (ordinary tensors: autograd may save them)
            eye = torch.eye(dim, dtype=dtype, device=device)
            _BASIS_TENSORS[key] = -eye, eye[0].clone()
    return _BASIS_TENSORS[key]


def _reflection_matrix(unit: torch.Tensor):
    """R = −s·I + (s/u₁)·u uᵀ for a unit vector l (s = sign(l₁) as ``copysign``, so −1 at
    l₁ = −0: either sign is stable there; u = e₁ + s·l, u₁ = 1 + |l₁|), the symmetric
    orthogonal matrix with e₁R = l: :func:`householder_rotate`'s map as a d×d matrix. Built
    from w = s·u = l + s·e₁ (s·e₁ = copysign(e₁, l), one op) as R = −s·I + w qᵀ with
    q = w/w₁ (s² = 1), one ``addcmul`` and no ``outer``; shared by the autograd path
    (:func:`_rotate_by_matrix`) and the Functions' (:func:`_rotation_matrix`), so their
    samples are equal bitwise. Returns (R, q)."""
    minus_eye, e1 = _identity_and_e1(unit.shape[0], unit.dtype, unit.device)
    s_e1 = torch.copysign(e1, unit)  # (s, ±0, …, ±0)
    w = unit + s_e1
    q = w / w[:1]
    return torch.addcmul(minus_eye * s_e1[:1], w[:, None], q), q


def _rotation_matrix(loc: torch.Tensor):
    """R of :func:`_reflection_matrix` for one mean direction l = loc/|loc|. Returns
    (R, |loc|, l, q) with q = w/w₁ (what :func:`_householder_matrix_backward` takes); no
    autograd."""
    dim = loc.shape[-1]
    if loc.dim() != 1:
        loc = loc.reshape(dim)
    norm = torch.linalg.vector_norm(loc)
    unit = loc / norm
    rotation, q = _reflection_matrix(unit)
    return rotation, norm, unit, q


def _householder_matrix_backward(d_rotation, norm, unit, q):
    """d/d loc of ⟨d_rotation, R(loc)⟩ for :func:`_rotation_matrix`: through u,
    (s/u₁)(dR + dRᵀ)u − (s/u₁²)(uᵀ dR u)·e₁, times ∂u/∂l = s (s² = 1, so s drops out), then
    the normalization's Jacobian (I − l lᵀ)/|loc|. The expression is even in u and of degree
    0, so it is taken in q = u/u₁ (:func:`_rotation_matrix`'s q = w/w₁, the same numbers):
    (dR + dRᵀ)q − ½(qᵀ(dR + dRᵀ)q)·e₁, five small ops before the projection."""
    p = torch.mv(d_rotation + d_rotation.t(), q)
    e1 = _identity_and_e1(q.shape[0], q.dtype, q.device)[1]
    # qᵀdRq = qᵀp/2; the ½ as addcmul's value
    d_unit = torch.addcmul(p, e1, torch.dot(q, p), value=-0.5)
    return torch.addcmul(d_unit, unit, torch.dot(d_unit, unit), value=-1).div_(norm)


def _single_direction_backward(ctx, grad):
    """(d loc, d κ) of the single-direction sampling Functions (PowerSpherical's and the
    vMF's, which save (norm, unit, q, y, dz/dκ) of :func:`_rotation_matrix` and ``shapes``):
    κ's gradient is one inner product with the saved tangent dz/dκ, loc's goes through
    :func:`_householder_matrix_backward`."""
    norm, unit, q, y, d_z = ctx.saved_tensors
    loc_shape, concentration_shape = ctx.shapes
    g = grad if grad.dim() == 2 else grad.reshape(y.shape)
    d_loc = d_concentration = None
    if ctx.needs_input_grad[1]:
        d_concentration = torch.dot(g.reshape(-1), d_z.reshape(-1))
        if d_concentration.shape != concentration_shape:
            d_concentration = d_concentration.reshape(concentration_shape)
    if ctx.needs_input_grad[0]:
        d_loc = _householder_matrix_backward(torch.mm(y.t(), g), norm, unit, q)
        if d_loc.shape != loc_shape:
            d_loc = d_loc.reshape(loc_shape)
    return d_loc, d_concentration


def _rotate_by_matrix(loc, first, radius, direction):
    """:func:`embed_rotate` for one mean direction (``loc`` has d elements): z = y·R with
    y = (first, radius·direction) and the symmetric orthogonal R = −s·(I − u uᵀ/u₁), the
    Householder map of :func:`householder_rotate` (|u|² = 2u₁, u₁ = 1 + |loc₁|) as one d×d
    matrix. Autograd then needs two matrix products over the samples and a few ops on d×d
    tensors, instead of a dozen passes over the samples. (An autograd Function with the
    backward of :func:`_householder_matrix_backward` measured 2-3% slower here: the Python
    backward costs what the saved autograd nodes do.)"""
    loc = loc.reshape(loc.shape[-1])
    rotation, _ = _reflection_matrix(loc / torch.linalg.vector_norm(loc))
    y = torch.cat([first.unsqueeze(-1), radius.unsqueeze(-1) * direction.detach()], dim=-1)
    return y @ rotation


def embed_rotate(
    loc: torch.Tensor, first: torch.Tensor, radius: torch.Tensor, direction: torch.Tensor
) -> torch.Tensor:
    """The point y = (first, radius·direction), given relative to e₁, rotated into the frame
    where e₁ ↦ ``loc``: ``householder_rotate(loc, cat([first, radius·direction]))`` in one
    step, without building y (what both sphere families sample: a scalar along the mean
    direction and a scaled tangent direction). ``direction`` carries no gradient and need not
    be a unit vector (radius·|direction| is what counts).

    :param torch.Tensor loc: mean directions, shape ``batch + (d,)``.
    :param torch.Tensor first: the e₁ coordinate, shape ``sample + batch``.
    :param torch.Tensor radius: the tangent scale, shape ``sample + batch``.
    :param torch.Tensor direction: tangent directions, shape ``sample + batch + (d − 1,)``.
    """
    first, radius = torch.broadcast_tensors(first, radius)
    if loc.shape[-1] <= _MATRIX_MAX_DIM and loc.shape[-1] == loc.numel():
        return _rotate_by_matrix(loc, first, radius, direction)
    loc = loc / torch.linalg.vector_norm(loc, dim=-1, keepdim=True)
    sign = torch.where(loc[..., :1] >= 0, 1.0, -1.0).to(loc.dtype)
    e1 = torch.zeros_like(loc)
    e1[..., 0] = 1
    u = torch.addcmul(e1, sign, loc)
    if loc.shape[-1] >= _FUSED_MIN_DIM:
        return _EmbedRotate.apply(u, first, radius, direction.detach(), -sign)
    # small d: the same expression through autograd (its backward runs in C++, cheaper than
    # a Python backward when each pass over the samples is short)
    flip = -sign[..., 0]
    u0, u_rest = u[..., 0], u[..., 1:]
    direction = direction.detach()
    k = torch.addcmul(u0 * first, radius, torch.linalg.vecdot(direction, u_rest)) / u0
    rest = torch.addcmul(
        (flip * radius).unsqueeze(-1) * direction, (flip * k).unsqueeze(-1), u_rest, value=-1
    )
    return torch.cat([(flip * (first - k * u0)).unsqueeze(-1), rest], dim=-1)


def uniform_tangent(shape, dim: int, *, like: torch.Tensor) -> torch.Tensor:
    """Directions uniform on S^{dim−1}, shape ``shape + (dim,)``, with ``like``'s dtype/device."""
    v = torch.randn(tuple(shape) + (dim,), dtype=like.dtype, device=like.device)
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def _wood_envelope(concentration: torch.Tensor, dim: int) -> torch.Tensor:
    """b = (d−1)/(2κ + sqrt(4κ² + (d−1)²)), Wood's envelope parameter in its stable form
    (the root as hypot(2κ, d − 1))."""
    m = constant(dim - 1.0, concentration.dtype, concentration.device)
    two_kappa = concentration + concentration
    return m / (two_kappa + torch.hypot(two_kappa, m))


def _wood_constants(kappa: torch.Tensor, dim: int):
    """Wood's per-parameter constants for :func:`wood_sample_t`: b (:func:`_wood_envelope`),
    −h = (b − 1)/2 and c₀ = κb/p + (d−1)·log p with p = (1 + b)/2, in ten small ops (the
    same numbers bitwise as 2κb/(1 + b) + (d−1)·log((1 + b)/2): halving is exact)."""
    dtype, device = kappa.dtype, kappa.device
    half = constant(0.5, dtype, device)
    b = _wood_envelope(kappa, dim)
    minus_h = torch.addcmul(constant(-0.5, dtype, device), half, b)
    p = torch.addcmul(half, half, b)
    c0 = torch.mul(kappa, b).div_(p).add_(p.log_(), alpha=dim - 1)
    return b, minus_h, c0


def _twice_symmetric_beta(a: float, log_u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """2x for a Beta(a, a) draw x from two uniforms by Ulrich's polar method [4] (a ≥ 1/2):
    with r = sqrt(1 − u^{2/(2a−1)}), x = (1 + r cos 2πv)/2, written as
    2x = u^{2/(2a−1)}/(1 + r) + 2r cos²πv so that x keeps its relative precision near 0.
    Exact, loop-free and cheaper than a Gamma-based Beta sampler. Takes log u (the caller
    takes it together with its own acceptance test's logarithm); ``log_u`` and ``v`` are
    overwritten. (2x, not x: the caller folds the ½ into its per-parameter constants.)
    """
    dtype, device = v.dtype, v.device
    cos = v.mul_(constant(math.pi, dtype, device)).cos_()
    cos_sq = cos.mul_(cos)  # (square_ is pow_(2): a Python-number operand, a conversion more)
    if a == 0.5:  # the arcsine law: r = 1
        return cos_sq.add_(cos_sq)
    log_uc = log_u.mul_(constant(2 / (2 * a - 1), dtype, device))
    r = torch.expm1(log_uc).neg_().sqrt_()
    one = constant(1.0, dtype, device)
    return torch.addcmul(log_uc.exp_().div_(r + one), r, cos_sq, value=2)


#: lower bound on the acceptance rate of Wood's proposal (measured ≥ 0.65 over d ∈ [2, 4096],
#: κ ∈ [1e-4, 1e5]; it tends to ≈ 0.66–0.71 as κ → ∞)
_MIN_ACCEPTANCE = 0.6
#: log of the probability, per parameter element, that the proposal pool holds too few
#: accepted draws (then an unaccepted proposal fills the slot: never seen in practice)
_LOG_SHORTFALL = -23 * math.log(10)


def _bernoulli_kl(q: float, p: float) -> float:
    """KL(Bernoulli(q) ‖ Bernoulli(p)), 0 ≤ q < 1, 0 < p < 1."""
    return (1 - q) * math.log((1 - q) / (1 - p)) + (q * math.log(q / p) if q > 0 else 0.0)


@cache
def _num_proposals(num_samples: int, log_shortfall: float = _LOG_SHORTFALL) -> int:
    """Smallest pool size M with P(Binomial(M, p) < n) ≤ e^{log_shortfall} for n samples and
    acceptance p = _MIN_ACCEPTANCE, by the Chernoff bound P(X ≤ k) ≤ exp(−M·KL(k/M ‖ p))."""
    p, k, m = _MIN_ACCEPTANCE, num_samples - 1, num_samples
    while True:
        q = k / m
        if q < p and -m * _bernoulli_kl(q, p) <= log_shortfall:
            return m
        m += max(1, m // 64)


@cache
def _num_failures_bound(num_elements: int, log_failure: float) -> int:
    """Smallest K with P(F > K) ≤ e^{_LOG_SHORTFALL} for F ~ Binomial(N, e^{log_failure}), N
    elements, by the Chernoff bound P(F ≥ k) ≤ exp(−N·KL(k/N ‖ p)) for k/N > p (N if none
    smaller holds)."""
    p = math.exp(log_failure)
    for k in range(1, num_elements + 1):
        q = k / num_elements
        if q >= 1 or (q > p and -num_elements * _bernoulli_kl(q, p) <= _LOG_SHORTFALL):
            return k - 1 if q < 1 else num_elements
    return num_elements


def wood_sample_t(concentration: torch.Tensor, dim: int, sample_shape=()) -> torch.Tensor:
    """t = 1 − w for w ~ exp(κw)(1 − w²)^{(d−3)/2} on [−1, 1], by Wood's algorithm [1].

    Proposal: x ~ Beta((d−1)/2, (d−1)/2) (by Ulrich's method, :func:`_symmetric_beta`),
    w = (1 − (1+b)x)/(1 − (1−b)x), i.e.
    t = 2bx/(1 − (1−b)x); accepted when
    κw + (d−1) log(1 − x₀w) − c ≥ log u (x₀ = (1−b)/(1+b), c = κx₀ + (d−1) log(1 − x₀²)),
    rewritten in t without cancellation. No loop and no host synchronization: for the n
    samples of each parameter element a fixed pool of M proposals is drawn at once, M sized
    from the acceptance rate (:func:`_num_proposals`: M ≈ 1.8n for n = 1024, 58 for n = 1),
    and the first n accepted proposals, in proposal order, are the samples (a partition of
    the pool by the acceptance flags, :func:`_accepted_first_positions`). Each accepted
    proposal is an exact draw, and taking the first n of an i.i.d. stream keeps them i.i.d.
    The envelope b is computed once per parameter. Not differentiable: gradients come from
    :func:`vmf_marginal_sample_t`.

    :param torch.Tensor concentration: κ ≥ 0, shape ``batch``.
    :param int dim: ambient dimension d ≥ 2.
    :returns: t with shape ``sample_shape + batch``, detached.
    """
    kappa = concentration.detach()
    sample_shape = torch.Size(sample_shape)
    samples = _wood_samples(kappa, dim, sample_shape.numel(), kappa.shape)
    if len(sample_shape) == 1:  # (already the shape: a reshape costs a dispatch)
        return samples
    return samples.reshape(sample_shape + kappa.shape)


def _wood_samples(kappa: torch.Tensor, dim: int, num_samples: int, shape) -> torch.Tensor:
    """:func:`wood_sample_t` for a detached κ: ``num_samples`` draws per element, shape
    (num_samples,) + ``shape`` (κ's shape, or one that κ broadcasts to: (1,) for a 0-dim κ
    gives the column that the single-direction Function takes)."""
    pool = (_num_proposals(num_samples),) + tuple(shape)
    dtype, device = kappa.dtype, kappa.device
    # no autograd bookkeeping on the sampler's ~35 small ops; the result is written into an
    # ordinary tensor (which autograd may then save), not returned as an inference tensor
    samples = torch.empty(pool, dtype=dtype, device=device)
    with torch.inference_mode():
        # per parameter: b, −h = −(1 − b)/2 and c₀ (:func:`_wood_constants`)
        b, minus_h, c0 = _wood_constants(kappa, dim)
        uniforms = torch.rand((3,) + pool, dtype=dtype, device=device)
        # log u of the Beta draw's and of the acceptance test's uniforms in one op (u = 0
        # gives −inf, the limit that both take correctly: 2x = 2cos²πv, always accepted)
        uniforms[0::2].log_()
        log_u, v, log_u_test = uniforms.unbind(0)
        x2 = _twice_symmetric_beta((dim - 1) / 2, log_u, v)  # 2x
        # t = 2bx/(1 − (1 − b)x) = b·(2x)/q with q = 1 − h·(2x), h = (1 − b)/2
        q = torch.addcmul(constant(1.0, dtype, device), x2, minus_h)
        t_prop = torch.mul(x2, b).div_(q)
        # the acceptance log-ratio c₀ − κt + (d−1)·log((1+b)/2 + (1−b²)t/(4b)), where
        # (1+b)/2 + (1−b²)t/(4b) = ((1+b)/2)·(1 + (1−b)t/(2b)) and 1 + (1−b)t/(2b) = 1/q
        log_ratio = torch.addcmul(c0, kappa, t_prop, value=-1).add_(q.log_(), alpha=1 - dim)
        rejected = log_ratio < log_u_test
        # each proposal scattered to its place; the first n places are the samples
        samples.scatter_(0, _accepted_first_positions(rejected), t_prop)
    return samples[:num_samples]


_POOL_INDEX: dict = {}


def _pool_index(size: int, ndim: int, device: torch.device) -> torch.Tensor:
    """arange(size) shaped (size, 1, …, 1) with ``ndim`` dims, built once per key."""
    key = (size, ndim, device)
    if key not in _POOL_INDEX:
        with torch.inference_mode(False):
            index = torch.arange(size, device=device)
            _POOL_INDEX[key] = index.reshape((-1,) + (1,) * (ndim - 1))
    return _POOL_INDEX[key]


def _stable_partition_positions(rejected: torch.Tensor) -> torch.Tensor:
    """Where each proposal lands when the pool (dim 0) is stably sorted with the accepted
    ones first: the k-th accepted goes to k, the k-th rejected to (number accepted) + k.
    From one cumulative sum, cheaper than a stable argsort of the flags."""
    rank = rejected.cumsum(0)  # rejected ones up to and including j
    # (number accepted) − 1, the pool size as a cached tensor (not converted on every call)
    last_accepted = constant(rejected.shape[0] - 1, rank.dtype, rank.device) - rank[-1:]
    index = _pool_index(rejected.shape[0], rejected.dim(), rejected.device)
    return torch.where(rejected, rank + last_accepted, index - rank)


def _accepted_first_positions(rejected: torch.Tensor) -> torch.Tensor:
    """Where each proposal lands for :func:`wood_sample_t`: the k-th accepted at k, as in
    :func:`_stable_partition_positions`, and the k-th rejected at M − k (M the pool size), so
    the rejected ones end the pool in reverse order: they fill the first n places only when
    fewer than n were accepted (probability ≤ e^{_LOG_SHORTFALL}), and then any of them will
    do. Three ops instead of six: (rejected ? M : j) − (number rejected up to j)."""
    size = rejected.shape[0]
    rank = rejected.cumsum(0)
    index = _pool_index(size, rejected.dim(), rejected.device)
    return torch.where(rejected, constant(size, rank.dtype, rank.device), index).sub_(rank)


# The κ-derivative integral ∫ (cos φ − A) e^{L(φ)−L(θ)} dφ is taken over the tail of θ where
# the score cos φ − A has one sign (no cancellation), with a rule placed by a quadratic model of
# L at the start of the decaying part: P panels on a geometric grid from the decay length ℓ to
# where the model has dropped by _LOG_DROP, the first one stretched back to θ across the mode
# when the tail contains it, each with an N-node Gauss–Legendre rule in τ = tan((φ − θ)/4)
# (rational in τ, so no sine or cosine per node: :func:`_weighted_integral`). Measured in
# float64 arithmetic against the mpmath references (tests/test_sphere.py) and against the same
# rule with (30, 14) on 3935 points over d ∈ [2, 4096], κ ∈ [1e-3, 1e5] (a subset in
# tests/test_vmf_rule.py): (5, 7), 35 nodes, relative error ≤ 4e-8. Both dtypes use it: no
# smaller (P, N) measured within float32's 4e-7 ((6, 5): 1.1e-6, (5, 6): 1.3e-6, (4, 8):
# 6.7e-7). The earlier rule in the angle itself, with a separate panel across the mode, needed
# (7, 5) + 5 = 40 nodes for 1e-7 and a sine and a cosine per node; a scale-agnostic rule
# needed 168 nodes.
_RULE_SIZE = (5, 7)
_LOG_DROP = 45.0


def _unit_gauss_legendre(num_nodes: int) -> tuple[list[float], list[float]]:
    """Gauss–Legendre nodes and weights on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(num_nodes)
    return ((x + 1) / 2).tolist(), (w / 2).tolist()


def _mode_angle(kappa: torch.Tensor, dim: int):
    """θ_m at the mode of L (κ sin²θ = (d−2) cos θ) and a quarter of the curvature −L″(θ_m)/4
    there, without cancellation: with m = d − 2 and r = sqrt(m² + 4κ²) = hypot(2κ, m),
    cos θ_m = 2κ/(m + r) and sin²θ_m = 2m/(m + r), so θ_m = atan2(sqrt(2m(m + r)), 2κ), and
    −L″(θ_m) = κ cos θ_m + m/sin²θ_m = (4κ² + (m + r)²)/(2(m + r)) = r (4κ² = (r − m)(r + m));
    at d = 2 (no m term, θ_m = 0) it is κ."""
    dtype, device = kappa.dtype, kappa.device
    two_kappa = kappa + kappa
    if dim == 2:
        return torch.zeros_like(kappa), kappa * constant(0.25, dtype, device)
    r = torch.hypot(two_kappa, constant(dim - 2.0, dtype, device))
    scaled_sin = torch.add(r, constant(dim - 2.0, dtype, device)).mul_(
        constant(2.0 * (dim - 2), dtype, device)
    )
    return torch.atan2(scaled_sin.sqrt_(), two_kappa), r.mul_(constant(0.25, dtype, device))


_RULE_TENSORS: dict = {}


def _rule_tensors(dtype: torch.dtype, device: torch.device, ndim: int):
    """The constant parts of the rule as tensors, built once per dtype, device and sample rank
    (shaped to broadcast over the (nodes, panels) + samples grid): the Gauss–Legendre nodes on
    [0, 1] less 1 (a node is placed back from its panel's end) and log(8ω) of their weights ω
    (added to the exponent, where it costs no op; the 8 is the score's factor 4 times the
    result's factor 2)."""
    key = (dtype, device, ndim)
    if key not in _RULE_TENSORS:
        nodes, weights = _unit_gauss_legendre(_RULE_SIZE[1])
        shape = (len(nodes),) + (1,) * (ndim + 1)
        with torch.inference_mode(False):
            _RULE_TENSORS[key] = tuple(
                torch.tensor(x, dtype=dtype, device=device).reshape(shape)
                for x in ([x - 1 for x in nodes], [math.log(8 * w) for w in weights])
            )
    return _RULE_TENSORS[key]


def _panels(a, b, span, first_scale, panels: int):
    """Panel ends (a new first axis) in the tail coordinate u ≥ 0 of the geometric rule
    on [0, min(span, u_cut)] for an integrand ≈ exp(−2a u − 2b u²) (a, b ≥ 0: half the slope
    and a quarter of the curvature of the quadratic model; ``b`` is overwritten): u_cut solves
    2a u + 2b u² = _LOG_DROP, the first panel ends at half the decay length
    ℓ = 1/(2a + 2√b), the others grow geometrically to u_cut (the panel ends are first·q^k,
    q = (u_cut/first)^{1/(P−1)}, by one cumulative product), all times ``first_scale``."""
    dtype, device = a.dtype, a.device
    # u_cut = _LOG_DROP/(a + sqrt(a² + 2·_LOG_DROP·b)) = c/(a/√(2D) + sqrt(b + a²/(2D)))
    scale = 1 / math.sqrt(2 * _LOG_DROP)
    u_cut = torch.addcmul(b, a, a, value=scale * scale).sqrt_().add_(a, alpha=scale)
    u_cut = torch.div(constant(_LOG_DROP * scale, dtype, device), u_cut)
    u_cut = torch.minimum(u_cut, span).clamp_(min=constant(torch.finfo(dtype).tiny, dtype, device))
    first = torch.div(constant(0.25, dtype, device), b.sqrt_().add_(a))
    first = torch.minimum(first, u_cut, out=first)
    growth = torch.div(u_cut, first).pow_(constant(1 / (panels - 1), dtype, device))
    return torch.stack([first.mul_(first_scale)] + [growth] * (panels - 1)).cumprod_(0)


def _tangent_panels(quarter_ends):
    """Ends and signed widths in τ = tan(h/2) of panels of half offsets h from θ that run
    from h = 0 through the ends h_p (``quarter_ends`` = h_p/2, one sign, (panels, ...),
    overwritten), each starting where the one before ends: one tangent per panel, not a sine
    and a cosine per node. A width τ_p − τ_{p−1} carries an absolute rounding error ~ε|τ_p|,
    where the integrand has decayed from its value at θ by e^{−|τ_p|/ℓ}-ish: relative to the
    integral, ~ε."""
    ends = quarter_ends.tan_()
    zero = constant(0.0, ends.dtype, ends.device).expand((1,) + ends.shape[1:])
    return ends, torch.diff(ends, dim=0, prepend=zero)


def _weighted_integral(tangents, log_weights, columns, dim):
    """2 Σ_p W_p Σ_k ω_k (cos φ_pk − A) exp(L(φ_pk) − L(θ)) (1 + c_pk) for φ = θ + 2h,
    with each panel's rule in τ = tan(h/2) (|h| < π/2, so |τ| < 1): with
    R = 2/(1 + τ²) = 1 + c, S = sin h = τR, c = cos h = R − 1 and dh/dτ = R, all rational in
    τ (poles at τ = ±i, off the real panels), so the grid needs no sine or cosine. From S and R
    (free of cancellation for small δ = 2h), P = (cos θ − cos φ)/4 = S sin(θ + h)/2
    = S(R sin θ − sin θ + S cos θ)/2 (the halves folded into the columns), and
    sin φ / sin θ = 1 + 2Q with 2Q = (4P cos θ − 2S²)/sin²θ (= 2 sin h (cos h cot θ − sin h)),
    so that L(φ) − L(θ) = −4κP + (d − 2) log1p(2Q) for L = κ cos φ + (d − 2) log sin φ.
    ``tangents``: τ at the nodes, (nodes, panels, ...), overwritten, and the panels' signed
    widths W in τ, (panels, ...) (:func:`_tangent_panels`); ``log_weights``: log(8ω), added to
    the exponent (a node weight ω there costs no op). ``columns``: sin θ/2, −sin θ/2,
    cos θ/2, −2/sin²θ, −2 cos θ/sin²θ, −4κ and offset/4 = (cos θ − A)/4 = ((1 − A) − t)/4, of
    the samples' shape ``...``; the score is 4(offset/4 − P) (precise near 1). The samples are
    the last (contiguous) axes, so that the columns broadcast along the outer axes (measured
    ~15% faster than the samples first). Written in place on three buffers of the grid's size:
    fresh large temporaries cost a page fault per 4 KiB each call, more than the arithmetic."""
    tau, widths = tangents
    (
        half_sin,
        minus_half_sin,
        half_cos,
        minus_two_over_sin2,
        minus_two_cos_over_sin2,
        minus_kappa,
        offset,
    ) = columns
    dtype, device = tau.dtype, tau.device
    r = torch.addcmul(constant(0.5, dtype, device), tau, tau, value=0.5).reciprocal_()  # R
    s = tau.mul_(r)
    p = torch.addcmul(minus_half_sin, r, half_sin).addcmul_(s, half_cos).mul_(s)
    if dim > 2:
        # log1p: (d − 2)·log must not multiply the rounding error of a number near 1
        two_q = s.square_().mul_(minus_two_over_sin2).addcmul_(p, minus_two_cos_over_sin2, value=-2)
        log_ratio = two_q.clamp_(min=constant(-1.0, dtype, device)).log1p_()
        # (not torch.addcmul(..., out=log_ratio): an output aliasing an input measured 4× slower)
        step = log_ratio.mul_(constant(dim - 2.0, dtype, device)).add_(log_weights)
        step = step.addcmul_(p, minus_kappa)
    else:
        step = torch.addcmul(log_weights, p, minus_kappa, out=s)
    weight = step.clamp_(max=constant(60.0, dtype, device)).exp_()
    integrand = torch.sub(offset, p, out=p).mul_(weight)
    by_panel = integrand.mul_(r).sum(0)  # × dh/dτ = R, summed over the nodes
    return torch.linalg.vecdot(by_panel, widths, dim=0)


def vmf_marginal_dt_dconcentration(
    t: torch.Tensor, concentration: torch.Tensor, dim: int
) -> torch.Tensor:
    """dt/dκ at fixed CDF value, for t = 1 − w and w ~ exp(κw)(1 − w²)^{(d−3)/2}.

    Implicit differentiation of F(w; κ) = const [2, eq. 3] gives
    dw/dκ = −(∂F/∂κ)/p(w), and ∂/∂κ log p(w; κ) = w − A_d(κ) makes
    ∂F/∂κ(w) = ∫_{−1}^{w} (s − A_d(κ)) p(s) ds = −∫_w^1 (s − A_d(κ)) p(s) ds (the score has
    mean zero).

    In the angle θ = arccos w the density is ∝ exp(L(θ)), L = κ cos θ + (d−2) log sin θ, and
    dt/dκ = sin θ · σ ∫ (cos φ − A) exp(L(φ) − L(θ)) dφ over the tail on the side σ of θ
    where cos φ − A keeps one sign: towards 0 (σ = −1) when w > A, towards π otherwise. That
    tail decays monotonically from its start θ₀ (θ itself, or the mode θ_m of L when the
    tail contains it; then the first panel reaches back from θ_m to θ). A quadratic
    model L(θ₀ + σu) − L(θ₀) ≈ −au − bu²/2 (a, b from L′, L″ at θ₀) gives the decay length
    and the cut-off, and a geometric Gauss–Legendre grid between them resolves exponential and
    Gaussian decay alike (:func:`_panels`); each panel's rule is placed in
    τ = tan((φ − θ)/4) (:func:`_tangent_panels`). All steps are written as half-angle products
    (:func:`_weighted_integral`), so nothing cancels near θ; tail and peak nodes are summed
    in one pass. Measured relative error of the rule against mpmath for d ∈ [2, 4096],
    κ ∈ [1e-4, 1e5] and samples from 1e-3 to 20 times the mean of t: ≤ 4e-8 with the rule's
    35 nodes (in float64; float32 adds the rounding of t itself). The result is
    ≤ 0.

    :param torch.Tensor t: 1 − w, in [0, 2], any shape.
    :param torch.Tensor concentration: κ ≥ 0, broadcastable to ``t``.
    :param int dim: ambient dimension d ≥ 2.
    """
    t = t.detach()
    dtype, device = t.dtype, t.device
    square = (constant(2.0, dtype, device) - t).mul_(t)
    return _dt_dkappa(t, constant(1.0, dtype, device) - t, square, concentration.detach(), dim)


def _dt_dkappa(t, cos_t, square, kappa, dim):
    """:func:`vmf_marginal_dt_dconcentration` given cos θ = 1 − t and sin²θ = t(2 − t)
    (which the single-direction sampler has already computed) and a detached κ. Constants
    are cached 0-dim tensors, the per-κ work is done on κ's own shape, and the sign σ and the
    scale factors are folded into the panels' ends and the grid's columns: the fewest small
    ops (~90 in all)."""
    dtype, device = t.dtype, t.device
    tiny = constant(torch.finfo(dtype).tiny, dtype, device)
    m = dim - 2
    # per κ (detached, so the ratio's forward directly): 1 − A_d(κ), the mode, −4κ, κ/2, κ/4
    order = dim / 2 - 1
    v = kappa if order < DEBYE_MIN_ORDER else torch.full_like(kappa, order)  # (unused below 10)
    one_minus_a = constant(1.0, dtype, device) - _ratio_forward(v, kappa, order)
    theta_mode, quarter_curvature_mode = _mode_angle(kappa, dim)
    quarter_kappa = kappa * constant(0.25, dtype, device)
    # per sample
    square_clamped = square.clamp(min=tiny)
    sin_t = square_clamped.sqrt()
    theta = torch.atan2(sin_t, cos_t)
    upper = t < one_minus_a  # w > A: the tail towards the pole θ = 0
    # across the mode (θ_m < θ, upper tail): the model is placed at θ₀ = θ_m, where L′ = 0
    # and −L″/4 = r/4 (:func:`_mode_angle`); the first panel reaches back from θ_m to θ
    across = (theta > theta_mode).logical_and_(upper)
    minus_two_over_sin2 = torch.div(constant(-2.0, dtype, device), square_clamped)
    minus_two_cos_over_sin2 = cos_t * minus_two_over_sin2
    # half the slope |L′(θ)|/2 = |κ sin θ − m cot θ|/2 (its sign is the tail's, so no σ), and
    # a quarter of the curvature −L″(θ)/4 = (κ cos θ + m/sin²θ)/4, clamped at 0
    half_slope = torch.add(quarter_kappa + quarter_kappa, minus_two_cos_over_sin2, alpha=m / 4)
    half_slope = half_slope.mul_(sin_t).abs_().masked_fill_(across, 0.0)
    quarter_curvature = torch.mul(cos_t, quarter_kappa).add_(minus_two_over_sin2, alpha=-m / 8)
    # (a tensor value would make masked_fill_ read it on the host: torch.where instead)
    quarter_curvature = torch.where(
        across, quarter_curvature_mode, quarter_curvature.clamp_(min=constant(0.0, dtype, device))
    )
    # (θ − θ₀)/4 ≥ 0: a quarter of the stretch [θ₀, θ] across the mode (0 unless across)
    quarter_gap = torch.add(theta_mode * constant(-0.25, dtype, device), theta, alpha=0.25)
    quarter_gap = quarter_gap.mul_(across)
    span = torch.where(
        upper, torch.minimum(theta, theta_mode), constant(math.pi, dtype, device) - theta
    )
    quarter_sigma = torch.where(
        upper, constant(-0.25, dtype, device), constant(0.25, dtype, device)
    )
    # each panel end as half its half offset from θ, (θ₀ + σu − θ)/4 = (σ/4)u − gap/4; the
    # first panel starts at θ itself, so it also covers the stretch across the mode (the
    # integrand is smooth there: a panel of its own measured no more accurate than its nodes)
    ends = _panels(half_slope, quarter_curvature, span, quarter_sigma, _RULE_SIZE[0])
    tangent_ends, tangent_widths = _tangent_panels(ends.sub_(quarter_gap))
    nodes_less_one, log_weights = _rule_tensors(dtype, device, t.dim())
    tangents = torch.addcmul(tangent_ends, tangent_widths, nodes_less_one)
    half_sin = sin_t * constant(0.5, dtype, device)
    columns = (
        half_sin,
        -half_sin,
        cos_t * constant(0.5, dtype, device),
        minus_two_over_sin2,
        minus_two_cos_over_sin2,
        kappa * constant(-4.0, dtype, device),
        torch.sub(one_minus_a * constant(0.25, dtype, device), t, alpha=0.25),
    )
    integral = _weighted_integral((tangents, tangent_widths), log_weights, columns, dim)
    return integral.mul_(sin_t).masked_fill_(square < tiny, 0.0)


class _ImplicitVMFMarginal(torch.autograd.Function):
    """Identity on a sample t whose backward in κ is the implicit gradient dt/dκ."""

    @staticmethod
    def forward(ctx, t, concentration, dim):
        ctx.save_for_backward(t, concentration)
        ctx.dim = dim
        return t.clone()

    @staticmethod
    def backward(ctx, grad):
        t, concentration = ctx.saved_tensors
        dt = _dt_dconcentration_untracked(t, concentration, ctx.dim)
        return None, _sum_to_shape(grad * dt, concentration.shape), None


def _dt_dconcentration_untracked(t, concentration, dim, cos_t=None, square=None):
    """:func:`vmf_marginal_dt_dconcentration` under ``torch.inference_mode`` (no version
    counters or autograd bookkeeping on its ~100 small ops: measured ~60 µs of ~650 µs at
    d = 16, 1024 samples); ``cos_t`` = 1 − t and ``square`` = t(2 − t) when the caller has
    them. For backward passes only: the result is an inference tensor, which the caller
    multiplies into an ordinary tensor before returning it."""
    with torch.inference_mode():
        if cos_t is None:
            return vmf_marginal_dt_dconcentration(t, concentration, dim)
        # (no detach: nothing is recorded under inference mode)
        return _dt_dkappa(t, cos_t, square, concentration, dim)


def _inverse_cdf_t_dim3(concentration: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Exact sampler for d = 3, where F(w) = (e^{κw} − e^{−κ})/(e^{κ} − e^{−κ}):
    t = −log(1 − (1−u)(1 − e^{−2κ}))/κ, written with log1p/expm1 (accurate for all κ > 0);
    below κ = 1e-6 its expansion 2(1−u)(1 − uκ) + O(κ²) avoids the 0/0 at κ = 0.
    """
    a = 1 - u
    small = concentration < 1e-6
    kappa = torch.where(small, torch.ones_like(concentration), concentration)
    exact = -torch.log1p(a * torch.expm1(-2 * kappa)) / kappa
    series = 2 * a * (1 - u * concentration)
    return torch.where(small, series, exact)


def vmf_marginal_sample_t(concentration: torch.Tensor, dim: int, sample_shape=()) -> torch.Tensor:
    """t = 1 − μᵀz for z ~ vMF(μ, κ) on S^{dim−1}, with unbiased pathwise gradient in κ.

    d = 3: the exact inverse CDF, differentiated by autograd. Otherwise: Wood's sampler
    (:func:`wood_sample_t`) with the implicit gradient
    (:func:`vmf_marginal_dt_dconcentration`) attached, computed only on the backward pass.

    :param torch.Tensor concentration: κ ≥ 0, shape ``batch``.
    :param int dim: ambient dimension d ≥ 2.
    :returns: t with shape ``sample_shape + batch``.
    """
    shape = torch.Size(sample_shape) + concentration.shape
    if dim == 3:
        u = torch.rand(shape, dtype=concentration.dtype, device=concentration.device)
        return _inverse_cdf_t_dim3(concentration, u.clamp(min=torch.finfo(u.dtype).tiny))
    t = wood_sample_t(concentration, dim, sample_shape)
    if not concentration.requires_grad:
        return t
    return _ImplicitVMFMarginal.apply(t, concentration, dim)


class _WoodTangentCoordinates(torch.autograd.Function):
    """(first, radius) = (1 − t, sqrt(t(2 − t)/|v|²)) of a Wood sample t, differentiable in
    κ through the implicit dt/dκ: one node in place of the half dozen autograd would record
    (and replay backward) for the same expression, a visible share of a small-d step."""

    @staticmethod
    def forward(ctx, t, concentration, norm_sq, dim):
        square = t * (2 - t)
        tiny = torch.finfo(t.dtype).tiny
        radius = torch.sqrt(square.clamp(min=tiny) / norm_sq)
        ctx.save_for_backward(t, concentration, square, radius, norm_sq)
        ctx.dim = dim
        return 1 - t, radius

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_first, grad_radius):
        t, concentration, square, radius, norm_sq = ctx.saved_tensors
        # d radius/dt = (1 − t)/(radius·|v|²) where t(2 − t) is above the clamp, 0 below
        grad_t = grad_radius * (1 - t) / (radius * norm_sq)
        grad_t = grad_t.masked_fill_(square < torch.finfo(t.dtype).tiny, 0.0).sub_(grad_first)
        dt = _dt_dconcentration_untracked(t, concentration, ctx.dim)
        return None, _sum_to_shape(grad_t * dt, concentration.shape), None, None


def _vmf_tangent_coordinates(concentration: torch.Tensor, dim: int, sample_shape=()):
    """The coordinates of z ~ vMF(e₁, κ) that :func:`embed_rotate` takes: first = μᵀz = 1 − t
    (:func:`vmf_marginal_sample_t`), and radius and direction with
    radius·direction = sqrt(t(2 − t))·v/|v| for a standard normal v (uniform direction;
    1/|v| goes into the radius, so v is never normalized). Torch only: with a differentiable
    κ and d ≠ 3, one autograd node (:class:`_WoodTangentCoordinates`) covers all of it.

    :param torch.Tensor concentration: κ ≥ 0, shape ``batch``.
    :param int dim: ambient dimension d ≥ 2.
    :returns: first and radius with shape ``sample_shape + batch``, and direction (no
        gradient) with shape ``sample_shape + batch + (dim − 1,)``.
    """
    shape = torch.Size(sample_shape) + concentration.shape
    fused = dim != 3 and concentration.requires_grad
    if fused:
        t = wood_sample_t(concentration, dim, sample_shape)
    else:
        t = vmf_marginal_sample_t(concentration, dim, sample_shape)
    dtype, device = concentration.dtype, concentration.device
    direction = torch.randn(shape + (dim - 1,), dtype=dtype, device=device)
    norm_sq = _squared_norms(direction.reshape(-1, dim - 1)).reshape(shape)
    if fused:
        first, radius = _WoodTangentCoordinates.apply(t, concentration, norm_sq, dim)
    else:
        tiny = torch.finfo(t.dtype).tiny
        first, radius = 1 - t, torch.sqrt((t * (2 - t)).clamp(min=tiny) / norm_sq)
    return first, radius, direction
