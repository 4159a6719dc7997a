"""von Mises–Fisher and uniform distributions on the sphere S^{d−1} ⊂ R^d (PyTorch)."""

from __future__ import annotations

import math

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch.autograd.function import once_differentiable

from pyro_reparam_ext.ops.bessel import bessel_iv_ratio, constant, log_bessel_iv
from pyro_reparam_ext.ops.sphere import (
    _MATRIX_MAX_DIM,
    _dt_dconcentration_untracked,
    _rotation_matrix,
    _single_direction_backward,
    _squared_norms,
    _vmf_tangent_coordinates,
    _wood_samples,
    embed_rotate,
    uniform_tangent,
)

__all__ = ["HypersphericalUniform", "VonMisesFisher", "log_sphere_area"]


def log_sphere_area(dim: int) -> float:
    """log |S^{dim−1}| = log(2π^{d/2}/Γ(d/2)), the log surface area of the unit sphere in R^dim."""
    return math.log(2) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


def _batch_shape(loc_shape: tuple, concentration_shape: tuple) -> torch.Size:
    """Broadcast of loc.shape[:-1] and concentration.shape, or a ValueError naming both."""
    if loc_shape[:-1] == concentration_shape or not concentration_shape:
        return torch.Size(loc_shape[:-1])  # (torch.broadcast_shapes is slow Python)
    try:
        return torch.broadcast_shapes(loc_shape[:-1], concentration_shape)
    except RuntimeError:
        raise ValueError(
            f"loc (shape {loc_shape}, batch shape {loc_shape[:-1]}) and concentration (shape "
            f"{concentration_shape}) do not broadcast: concentration must be broadcastable "
            "to loc.shape[:-1]"
        ) from None


def _arguments_ok(loc: torch.Tensor, concentration: torch.Tensor) -> torch.Tensor:
    """``constraints.sphere.check(loc) & constraints.nonnegative.check(concentration)``, the
    same predicate (|‖loc‖ − 1| < reltol·eps·sqrt(d), κ ≥ 0) with its constants as cached
    tensors: each Python number operand costs a conversion and a copy (three of the checks'
    eight ops)."""
    dtype, device = loc.dtype, loc.device
    tolerance = constraints.sphere.reltol * torch.finfo(dtype).eps * loc.shape[-1] ** 0.5
    error = torch.linalg.vector_norm(loc, dim=-1).sub_(constant(1.0, dtype, device)).abs_()
    nonnegative = concentration >= constant(0.0, dtype, device)
    return (error < constant(tolerance, dtype, device)).logical_and_(nonnegative)


class SphereLocConcentration(TorchDistribution):
    """Shared base of the (loc, concentration) families on S^{d−1}: VonMisesFisher and
    PowerSpherical. Holds argument handling, shapes and ``expand``; subclasses add sampling
    and densities.

    :param torch.Tensor loc: unit mean directions, shape ``batch + (d,)`` with d ≥ 2.
    :param concentration: κ ≥ 0, broadcastable to ``batch``.
    """

    arg_constraints = {"loc": constraints.sphere, "concentration": constraints.nonnegative}
    support = constraints.sphere
    has_rsample = True

    def __init__(self, loc, concentration, *, validate_args=None):
        if loc.dim() < 1 or loc.shape[-1] < 2:
            raise ValueError(
                f"loc must have shape batch + (d,) with d >= 2, got shape {tuple(loc.shape)}"
            )
        if not (
            isinstance(concentration, torch.Tensor)
            and concentration.dtype == loc.dtype
            and concentration.device == loc.device
        ):  # (as_tensor costs a dispatch even when it returns its argument)
            concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        batch_shape = _batch_shape(tuple(loc.shape), tuple(concentration.shape))
        # (no expand where the shape is already right: each expand is an autograd node)
        loc_shape = batch_shape + loc.shape[-1:]
        self.loc = loc if loc.shape == loc_shape else loc.expand(loc_shape)
        self.concentration = (
            concentration
            if concentration.shape == batch_shape
            else concentration.expand(batch_shape)
        )
        # torch's generic validation reads each argument's check back to the host separately;
        # _check_arguments reads both at once (one host synchronization instead of two)
        super().__init__(batch_shape, loc.shape[-1:], validate_args=False)
        if validate_args is None:
            del self._validate_args  # back to the class-wide default
        else:
            self._validate_args = validate_args
        if self._validate_args:
            self._check_arguments()

    def _check_arguments(self):
        """ValueError naming the argument if ``loc`` is not on the sphere or κ < 0. Both checks
        have the batch shape, so one ``all`` and one host read cover the pair."""
        ok = _arguments_ok(self.loc.detach(), self.concentration)
        if ok if ok.dim() == 0 else ok.all():  # the one host read
            return
        for name, constraint in self.arg_constraints.items():
            value = getattr(self, name)
            if not constraint.check(value.detach()).all():
                raise ValueError(
                    f"Expected parameter {name} ({type(value).__name__} of shape "
                    f"{tuple(value.shape)}) of distribution {type(self).__name__} to satisfy "
                    f"the constraint {constraint!r}, but found invalid values:\n{value}"
                )

    @staticmethod
    def infer_shapes(loc, concentration):
        batch_shape = torch.broadcast_shapes(loc[:-1], concentration)
        return batch_shape, loc[-1:]

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        new = self._get_checked_instance(type(self), _instance)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.concentration = self.concentration.expand(batch_shape)
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    @property
    def dim(self) -> int:
        """Ambient dimension d (the sphere is S^{d−1})."""
        return self.event_shape[0]


class _VonMisesFisherByMatrix(torch.autograd.Function):
    """z for one mean direction (``loc`` has d ≤ 16 elements, d ≠ 3) from a Wood sample t and
    a Gaussian v, in one step with a hand-written backward (the vMF analogue of
    PowerSpherical's ``_PowerSphericalByMatrix``). Forward: y = (first, radius·v) with
    first = 1 − t and radius = sqrt(t(2 − t)/|v|²) as on the autograd path, and z = yR with
    the matrix R of :func:`~pyro_reparam_ext.ops.sphere._rotation_matrix` (the same R as the
    autograd path's, so the samples are the same bitwise). When κ needs a gradient also the
    tangent dz/dκ = b·(l − first·z), l = loc/|loc|, two ops from z (forward mode, with the
    implicit dt/dκ of :func:`~pyro_reparam_ext.ops.sphere.vmf_marginal_dt_dconcentration`
    computed here rather than on the backward pass). Why one number b per sample: v is fixed
    and |y| = 1, so y′ = dy/dκ lies in the plane of y and e₁ and is orthogonal to y,
    y′ = a·y + b·e₁ with a + b·first = 0; the tangent coordinates give
    a = radius′/radius = (1 − t)t′/(t(2 − t)), the first one −t′ = a(1 − t) + b, so
    b = −t′/(t(2 − t)) (t′ = dt/dκ; t(2 − t) clamped at the smallest normal number, where
    t′ = 0 anyway), and y′R = a·z + b·l. Its rounding error is eps·|b| per coordinate, the
    same relative precision as z's own tangent part (|dz/dκ| = |b|·sqrt(t(2 − t))).
    Backward: dκ = ⟨g, dz/dκ⟩, one inner product, and d loc from dR = yᵀg. Not twice
    differentiable (``once_differentiable``; the batched path is)."""

    @staticmethod
    def forward(ctx, loc, concentration, t, v, grad_enabled, out_shape=None):
        # rsample passes t as a column (samples, 1) (it scales v and joins y without
        # unsqueezes), v as (samples, d − 1) and out_shape (samples' shape + batch + (d,));
        # without out_shape, t and v of any shapes sample_shape (+ (d − 1,))
        dim = loc.shape[-1]
        if out_shape is None:
            out_shape = v.shape[:-1] + (dim,)
            t, v = t.reshape(-1, 1), v.reshape(-1, dim - 1)
        ctx.shapes = loc.shape, concentration.shape
        tangent = grad_enabled and ctx.needs_input_grad[1]  # (not under no_grad: sample())
        norm_sq = _squared_norms(v)  # (as the batched path: the same samples bitwise)
        # (constants as cached tensors: a Python number operand costs more than the op)
        dtype, device = t.dtype, t.device
        square = (constant(2.0, dtype, device) - t).mul_(t)
        square_clamped = square.clamp(min=constant(torch.finfo(dtype).tiny, dtype, device))
        radius = torch.div(square_clamped, norm_sq).sqrt_()
        first = constant(1.0, dtype, device) - t
        rotation, norm, unit, u = _rotation_matrix(loc)
        y = torch.cat([first, radius * v], dim=1)
        z = torch.mm(y, rotation)  # (not matmul: one dispatch less)
        d_z = None
        if tangent:
            dt = _dt_dconcentration_untracked(t, concentration, dim, first, square)
            # b·(l − first·z) = (first·z − l)·t′/(t(2 − t))
            d_z = torch.mul(z, first).sub_(unit).mul_(torch.div(dt, square_clamped))
        ctx.save_for_backward(norm, unit, u, y, d_z)
        return z if z.shape == out_shape else z.reshape(out_shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return *_single_direction_backward(ctx, grad), None, None, None, None


class VonMisesFisher(SphereLocConcentration):
    r"""von Mises–Fisher distribution on the unit sphere S^{d−1}, any d ≥ 2.

    .. math:: p(z) = C_d(κ) \exp(κ μ^⊤ z), \quad
        C_d(κ) = \frac{κ^{d/2-1}}{(2π)^{d/2} I_{d/2-1}(κ)}   \quad [1, eq. 9.3.4]

    with respect to the surface measure. ``rsample`` is pathwise differentiable in ``loc``
    and ``concentration``, and the gradient obtained by back-propagating through it is
    **unbiased for every d and κ**.

    How: z = Q(μ)·(w, sqrt(1 − w²)·v) with v uniform on S^{d−2} and Q(μ) a Householder
    reflection sending e₁ to μ [2]; the loc gradient flows through Q. The concentration enters
    only through the scalar w = μᵀz, whose density is ∝ exp(κw)(1 − w²)^{(d−3)/2} [3]. It is
    drawn by Wood's rejection sampler [3] and differentiated *implicitly* [4]:
    dw/dκ = −(∂F/∂κ)/p(w), with ∂F/∂κ = ∫_{−1}^w (s − A_d(κ)) p(s) ds computed by a
    Gauss–Legendre rule (35 nodes) placed per sample on panels of the angle arccos w (see
    :func:`~pyro_reparam_ext.ops.sphere.vmf_marginal_dt_dconcentration`). This is the exact
    derivative of the sampler's transport map, so no correction term is needed, the gradient
    is an ordinary backward pass, and it works with every ELBO. Differentiating through the
    accepted proposal instead (as s-vae-pytorch does, without the correction term of [2]) is
    biased for d ≠ 3 (d = 5, κ = 2: 0.1276 instead of dA_5/dκ = 0.1474). For d = 3 the exact
    inverse CDF is used and differentiated directly. One mean direction with d ≤ 16 (d ≠ 3) is
    sampled by a single autograd Function with a hand-written backward
    (:class:`_VonMisesFisherByMatrix`: the same samples, dt/dκ computed on the forward pass
    when κ requires a gradient); its backward cannot be differentiated again (no second
    derivatives on that path, as on PowerSpherical's).

    Example::

        >>> loc = torch.nn.functional.normalize(torch.randn(10), dim=-1)
        >>> kappa = torch.tensor(50.0, requires_grad=True)
        >>> z = VonMisesFisher(loc, kappa).rsample((100,))     # (100, 10)
        >>> (z @ loc).mean().backward()                         # ≈ dA_10/dκ

    :param torch.Tensor loc: mean direction, unit norm, shape ``batch + (d,)`` with d ≥ 2.
    :param torch.Tensor concentration: κ ≥ 0, shape broadcastable with ``loc.shape[:-1]``.

    References:
        [1] K. V. Mardia, P. E. Jupp (2000). Directional Statistics. Wiley.
        [2] T. R. Davidson, L. Falorsi, N. De Cao, T. Kipf, J. M. Tomczak (2018). Hyperspherical
            Variational Auto-Encoders. UAI.
        [3] A. T. A. Wood (1994). Simulation of the von Mises Fisher distribution.
            Communications in Statistics — Simulation and Computation 23(1), 157–164.
        [4] M. Figurnov, S. Mohamed, A. Mnih (2018). Implicit Reparameterization Gradients.
            NeurIPS.
    """

    def rsample(self, sample_shape=torch.Size()):
        # z = (1 − t, sqrt(t(2 − t))·v/|v|) relative to e₁, rotated to loc
        dim = self.dim
        if dim != 3 and dim <= _MATRIX_MAX_DIM and self.loc.numel() == dim:
            # one mean direction: one autograd Function (t first, then v, as below); t as the
            # column the Function takes, v as (samples, d − 1): the same draws as the shapes
            # sample_shape + batch (+ (d − 1,)), without reshapes
            sample_shape = torch.Size(sample_shape)
            num_samples = sample_shape.numel()
            concentration = self.concentration
            t = _wood_samples(concentration.detach(), dim, num_samples, (1,))
            v = torch.randn((num_samples, dim - 1), dtype=t.dtype, device=t.device)
            out_shape = sample_shape + self._batch_shape + self._event_shape
            return _VonMisesFisherByMatrix.apply(
                self.loc, concentration, t, v, torch.is_grad_enabled(), out_shape
            )
        first, radius, direction = _vmf_tangent_coordinates(
            self.concentration, self.dim, sample_shape
        )
        return embed_rotate(self.loc, first, radius, direction)

    def log_normalizer(self) -> torch.Tensor:
        """log C_d(κ) = (d/2−1) log κ − (d/2) log 2π − log I_{d/2−1}(κ); −log|S^{d−1}| at κ = 0."""
        v = self.dim / 2 - 1
        kappa = self.concentration
        positive = kappa > 0
        safe = torch.where(positive, kappa, torch.ones_like(kappa))
        value = v * torch.log(safe) - (v + 1) * math.log(2 * math.pi) - log_bessel_iv(v, safe)
        return torch.where(positive, value, torch.full_like(value, -log_sphere_area(self.dim)))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self.concentration * (self.loc * value).sum(-1) + self.log_normalizer()

    @property
    def mean_resultant_length(self) -> torch.Tensor:
        """A_d(κ) = I_{d/2}(κ)/I_{d/2−1}(κ) = E[μᵀz]."""
        return bessel_iv_ratio(self.dim / 2 - 1, self.concentration)

    @property
    def mean(self):
        return self.mean_resultant_length.unsqueeze(-1) * self.loc

    @property
    def mode(self):
        return self.loc

    def entropy(self):
        """H = −log C_d(κ) − κ A_d(κ)."""
        return -self.log_normalizer() - self.concentration * self.mean_resultant_length


class HypersphericalUniform(TorchDistribution):
    """Uniform distribution on the unit sphere S^{dim−1} ⊂ R^dim.

    Density 1/|S^{dim−1}| = Γ(dim/2)/(2π^{dim/2}) with respect to the surface measure; samples
    are normalized standard normal vectors. ``dim`` is the ambient dimension (a Python int),
    so ``infer_shapes(dim)`` takes it as is.

    Example::

        >>> z = HypersphericalUniform(3).sample((5,))         # (5, 3), unit rows

    :param int dim: ambient dimension, ≥ 2.
    :param dtype: dtype of samples (default: ``torch.get_default_dtype()``).
    :param device: device of samples.
    """

    arg_constraints = {}
    support = constraints.sphere
    has_rsample = True  # nothing to differentiate: the distribution has no parameters

    def __init__(self, dim: int, *, dtype=None, device=None, validate_args=None):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2 (ambient dimension), got {dim!r}")
        self._dim = dim
        self._dtype = dtype if dtype is not None else torch.get_default_dtype()
        self._device = device
        super().__init__(torch.Size(), torch.Size((dim,)), validate_args=validate_args)

    @staticmethod
    def infer_shapes(dim):
        return torch.Size(), torch.Size((dim,))

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        new = self._get_checked_instance(HypersphericalUniform, _instance)
        new._dim, new._dtype, new._device = self._dim, self._dtype, self._device
        super(HypersphericalUniform, new).__init__(
            batch_shape, self.event_shape, validate_args=False
        )
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    @property
    def dim(self) -> int:
        return self._dim

    def rsample(self, sample_shape=torch.Size()):
        like = torch.empty((), dtype=self._dtype, device=self._device)
        return uniform_tangent(self._extended_shape(sample_shape)[:-1], self._dim, like=like)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        log_density = -log_sphere_area(self._dim)
        return torch.full(shape, log_density, dtype=value.dtype, device=value.device)

    def entropy(self):
        return torch.full(
            self.batch_shape, log_sphere_area(self._dim), dtype=self._dtype, device=self._device
        )

    @property
    def mean(self):
        return torch.zeros(
            self.batch_shape + self.event_shape, dtype=self._dtype, device=self._device
        )
