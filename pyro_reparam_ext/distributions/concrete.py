"""The Concrete family (Gumbel-Softmax) and its relaxation maths, PyTorch backend.

Distributions: :class:`ExpConcrete` (log-space Concrete, exact log-density at any temperature),
:class:`Concrete` (relaxed one-hot categorical on the simplex), :class:`BinaryConcrete` (relaxed
Bernoulli on (0, 1)) and the straight-through variants :class:`ConcreteStraightThrough`,
:class:`BinaryConcreteStraightThrough`, :class:`ReinMaxStraightThrough`,
:class:`GumbelRaoStraightThrough`.

The relaxation maths used by these classes and by the REBAR/RELAX estimators is exported as
functions. Every function takes its uniform noise as an argument, so the same draw can be reused
(REBAR evaluates the relaxation at z and at z̃ built from the same u and v). Bernoulli
functions work on logits of shape ``batch``; categorical ones on logits of shape
``batch + (K,)``.

References:
    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution.
    [2] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein (2017). REBAR:
        Low-variance, unbiased gradient estimates for discrete latent variable models,
        appendix "Conditional samples".
"""

import math

import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions.utils import broadcast_all, lazy_property

__all__ = [
    "BinaryConcrete",
    "BinaryConcreteStraightThrough",
    "Concrete",
    "ConcreteStraightThrough",
    "ExpConcrete",
    "GumbelRaoStraightThrough",
    "ReinMaxStraightThrough",
    "bernoulli_conditional_relaxed_logits",
    "bernoulli_hard",
    "bernoulli_relaxed_logits",
    "bernoulli_soft",
    "categorical_conditional_relaxed_logits",
    "categorical_hard",
    "categorical_relaxed_logits",
    "categorical_soft",
    "uniform_noise",
]


def uniform_noise(shape, *, like: torch.Tensor) -> torch.Tensor:
    """Uniform(0, 1) noise strictly inside the open interval, with ``like``'s dtype/device."""
    tiny = torch.finfo(like.dtype).tiny
    u = torch.rand(shape, dtype=like.dtype, device=like.device)
    return u.clamp(min=tiny, max=1.0 - torch.finfo(like.dtype).eps)


def bernoulli_relaxed_logits(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """z = logits + log(u) - log(1 - u): a Logistic(logits, 1) draw; H(z) ~ Bernoulli."""
    return logits + torch.log(u) - torch.log1p(-u)


def bernoulli_hard(z: torch.Tensor) -> torch.Tensor:
    """H(z) = 1[z > 0] in z's dtype."""
    return (z > 0).to(z.dtype)


def bernoulli_soft(z: torch.Tensor, temperature) -> torch.Tensor:
    """σ(z / λ): the relaxed (BinaryConcrete) value of a relaxed logit z."""
    return torch.sigmoid(z / temperature)


def bernoulli_conditional_relaxed_logits(
    logits: torch.Tensor, b: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """A draw of z̃ ~ p(z | H(z) = b) for z = logits + Logistic noise ([2], appendix).

    With p = σ(logits), the conditional uniform is u' = v(1 - p) when b = 0 and
    u' = (1 - p) + v p when b = 1; z̃ = logits + logit(u'). Computed in log space so that the
    result keeps the sign of b at saturated logits.
    """
    log_p = F.logsigmoid(logits)
    log_1mp = F.logsigmoid(-logits)
    log_v = torch.log(v)
    log_1mv = torch.log1p(-v)
    # b = 1:  z̃ = logits + log(1 - p + p v) - log p - log(1 - v)
    z_one = torch.logaddexp(log_1mp, log_p + log_v) - log_1mv + (logits - log_p)
    # b = 0:  z̃ = logits + log v + log(1 - p) - log(p + (1 - p)(1 - v))
    z_zero = logits + log_v + log_1mp - torch.logaddexp(log_p, log_1mp + log_1mv)
    return torch.where(b > 0.5, z_one, z_zero)


def categorical_relaxed_logits(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """z_k = log π_k + Gumbel noise, with π = softmax(logits); argmax z ~ Categorical(π)."""
    return torch.log_softmax(logits, dim=-1) - torch.log(-torch.log(u))


def categorical_hard(z: torch.Tensor) -> torch.Tensor:
    """One-hot of argmax(z) along the last dimension, in z's dtype.

    Scattered into zeros rather than ``F.one_hot``, which reads the indices' range back to
    the host (a device synchronization on every draw).
    """
    return torch.zeros_like(z).scatter_(-1, z.argmax(-1, keepdim=True), 1.0)


def categorical_soft(z: torch.Tensor, temperature) -> torch.Tensor:
    """softmax(z / λ): the relaxed (Concrete) value of relaxed logits z."""
    return torch.softmax(z / temperature, dim=-1)


def categorical_conditional_relaxed_logits(
    logits: torch.Tensor, b: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """A draw of z̃ ~ p(z | argmax z = b) for z = log π + Gumbel noise ([2], appendix).

    ``b`` is one-hot. With normalized log-probabilities ℓ = log π:
    z̃_b = -log(-log v_b) and z̃_k = -log(-log(v_k) / π_k - log v_b) for k ≠ b.
    """
    log_pi = torch.log_softmax(logits, dim=-1)
    log_neg_log_v = torch.log(-torch.log(v))
    log_neg_log_vb = (log_neg_log_v * b).sum(-1, keepdim=True)
    z_other = -torch.logaddexp(log_neg_log_v - log_pi, log_neg_log_vb)
    z_top = -log_neg_log_vb.expand_as(z_other)
    return torch.where(b > 0.5, z_top, z_other)


# ---------------------------------------------------------------------------------------------
# Distributions
# ---------------------------------------------------------------------------------------------


def _logits_from(name: str, probs, logits, *, event_dim: int):
    """Exactly one of ``probs``/``logits``; returns (probs or None, logits or None) as tensors."""
    if (probs is None) == (logits is None):
        raise ValueError(
            f"{name}: pass exactly one of `probs` or `logits`, got "
            + ("both" if probs is not None else "neither")
        )
    if probs is not None:
        return torch.as_tensor(probs), None
    logits = torch.as_tensor(logits)
    if event_dim and logits.dim() < 1:
        raise ValueError(f"{name}: `logits` must have at least one dimension (the classes)")
    return None, logits


def _straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Forward value ``hard`` exactly; backward gradient of ``soft`` (identity Jacobian)."""
    return hard + (soft - soft.detach())


def _clamp_value_keep_grad(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Clamp the value into [low, high] so log-densities stay finite; keep x's gradient."""
    return x + (x.clamp(low, high) - x).detach()


class ExpConcrete(TorchDistribution):
    r"""The logarithm of a Concrete (Gumbel-Softmax) sample, with its density in log space.

    A draw is :math:`y = \operatorname{log\_softmax}((\log\pi + g)/\lambda)` with
    :math:`g_k` i.i.d. Gumbel(0, 1), so :math:`\exp(y) \sim` :class:`Concrete`. Working in log
    space keeps the log-density finite and accurate at low temperature and many classes
    (τ = 0.01 with K = 1000), where a probability-space density underflows.

    Example::

        q = ExpConcrete(torch.tensor(0.1), logits=torch.zeros(1000))
        y = q.rsample()                # log of a point on the simplex, differentiable
        q.log_prob(y)                  # finite

    .. note:: The density ([1], eq. in appendix C.3) is taken with respect to the symmetric
        measure :math:`\prod_{k<K} dx_k / \prod_k x_k` on the simplex (the convention of [1],
        TensorFlow Probability and :mod:`torch.distributions`): KL terms between two
        ExpConcretes, and between ExpConcrete and any density on the same measure, are exact.
        Relative to Lebesgue measure on :math:`y_{1:K-1}` it differs by :math:`-y_K`.

    References:

    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution: A Continuous
        Relaxation of Discrete Random Variables. ICLR.

    :param temperature: relaxation temperature λ > 0 (may require grad).
    :type temperature: torch.Tensor or float
    :param torch.Tensor probs: class probabilities (normalized over the last dimension).
    :param torch.Tensor logits: unnormalized log-probabilities.
    """

    arg_constraints = {
        "temperature": constraints.positive,
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, temperature, probs=None, logits=None, *, validate_args=None):
        probs, logits = _logits_from(type(self).__name__, probs, logits, event_dim=1)
        if probs is not None:
            self.probs = probs / probs.sum(-1, keepdim=True)
            param = self.probs
        else:
            self.logits = logits - logits.logsumexp(-1, keepdim=True)
            param = self.logits
        if param.dim() < 1:
            raise ValueError(f"{type(self).__name__}: `probs`/`logits` need a class dimension")
        self.temperature = torch.as_tensor(temperature, dtype=param.dtype, device=param.device)
        batch_shape = torch.broadcast_shapes(self.temperature.shape, param.shape[:-1])
        event_shape = param.shape[-1:]
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @staticmethod
    def infer_shapes(temperature=(), probs=None, logits=None):
        param = probs if probs is not None else logits
        batch_shape = torch.broadcast_shapes(tuple(temperature), tuple(param[:-1]))
        return batch_shape, tuple(param[-1:])

    @lazy_property
    def logits(self):
        return torch.log(self.probs.clamp(min=torch.finfo(self.probs.dtype).tiny))

    @lazy_property
    def probs(self):
        return torch.softmax(self.logits, dim=-1)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.temperature = self.temperature.expand(batch_shape)
        if "probs" in self.__dict__:
            new.probs = self.probs.expand(batch_shape + self.event_shape)
        if "logits" in self.__dict__:
            new.logits = self.logits.expand(batch_shape + self.event_shape)
        super(ExpConcrete, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _relaxed_logits(self, sample_shape) -> torch.Tensor:
        """Gumbel-perturbed log-probabilities z = log π + g, shape sample + batch + event."""
        shape = self._extended_shape(sample_shape)
        logits = self.logits.expand(shape)
        return categorical_relaxed_logits(logits, uniform_noise(shape, like=logits))

    def rsample(self, sample_shape=torch.Size()):
        z = self._relaxed_logits(sample_shape)
        return torch.log_softmax(z / self.temperature.unsqueeze(-1), dim=-1)

    def _exp_concrete_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        num_classes = self.event_shape[-1]
        temperature = self.temperature.unsqueeze(-1)
        # [1] eq. 14 in log space: log((K-1)!) + (K-1) log λ + Σ_k (ℓ_k - λ y_k) - K lse(ℓ - λ y)
        score = self.logits - temperature * value
        log_normalizer = math.lgamma(num_classes) + (num_classes - 1) * torch.log(self.temperature)
        return log_normalizer + (score - score.logsumexp(-1, keepdim=True)).sum(-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self._exp_concrete_log_prob(value)


class Concrete(ExpConcrete):
    r"""Relaxed one-hot categorical (Concrete / Gumbel-Softmax) on the probability simplex.

    A draw is :math:`x = \operatorname{softmax}((\log\pi + g)/\lambda)` with Gumbel noise
    :math:`g`; as λ → 0 it approaches a one-hot Categorical(π) sample ([1], [2]). The density is
    taken with respect to Lebesgue measure on the first K − 1 coordinates ([1], eq. 14).

    Example::

        q = Concrete(torch.tensor(0.5), probs=torch.tensor([0.2, 0.3, 0.5]))
        x = q.rsample()                # a point on the simplex, differentiable
        q.log_prob(x)

    .. note:: At low temperature softmax outputs underflow to 0 in floating point; samples are
        clamped to at least the dtype's smallest normal number so log_prob stays finite (the
        gradient passes through the clamp unchanged). For exact log-densities at low temperature
        use :class:`ExpConcrete`, which works in log space.

    References:

    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution. ICLR.
    [2] E. Jang, S. Gu, B. Poole (2017). Categorical Reparameterization with Gumbel-Softmax.

    :param temperature: relaxation temperature λ > 0 (may require grad).
    :param torch.Tensor probs: class probabilities.
    :param torch.Tensor logits: unnormalized log-probabilities.
    """

    support = constraints.simplex

    def rsample(self, sample_shape=torch.Size()):
        x = torch.exp(super().rsample(sample_shape))
        return _clamp_value_keep_grad(x, torch.finfo(x.dtype).tiny, 1.0)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_value = torch.log(value)
        # change of variables y = log x: the symmetric measure of ExpConcrete is dx / Π_k x_k
        return self._exp_concrete_log_prob(log_value) - log_value.sum(-1)


class ConcreteStraightThrough(Concrete):
    r"""Straight-through Gumbel-Softmax: a one-hot Categorical sample forward, the
    :class:`Concrete` sample's gradient backward ([2], section 2.2).

    ``rsample`` returns exact one-hot vectors whose law is Categorical(π); back-propagation
    flows through the underlying relaxed sample as if the forward value were the relaxed one
    (a biased but low-variance gradient). ``log_prob``, ``mean``, ``mode`` and ``entropy`` are
    those of the one-hot Categorical(π) that the samples follow; ``log_prob`` is linear in the
    value, so it also accepts relaxed values.

    Example::

        q = ConcreteStraightThrough(torch.tensor(0.5), logits=logits)
        b = q.rsample()                # one-hot, gradient through the relaxation

    :param temperature: relaxation temperature λ > 0 of the backward relaxation.
    :param torch.Tensor probs: class probabilities (normalized over the last axis).
    :param torch.Tensor logits: unnormalized log-probabilities.
    """

    support = constraints.one_hot

    def rsample(self, sample_shape=torch.Size()):
        soft = super().rsample(sample_shape)
        return _straight_through(categorical_hard(soft), soft)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return (value * torch.log_softmax(self.logits, -1)).sum(-1)

    @property
    def mean(self):
        return self.probs

    @property
    def mode(self):
        return categorical_hard(self.logits)

    def entropy(self):
        log_probs = torch.log_softmax(self.logits, -1)
        return -(torch.exp(log_probs) * log_probs).sum(-1)


class BinaryConcrete(TorchDistribution):
    r"""Relaxed Bernoulli (binary Concrete) on the unit interval.

    A draw is :math:`x = \sigma((\ell + \log u - \log(1-u))/\lambda)`, u ~ Uniform(0, 1), with
    logits ℓ; as λ → 0 it approaches a Bernoulli(σ(ℓ)) sample. Density ([1], eq. 16):
    :math:`p(x) = \lambda \alpha x^{-\lambda-1}(1-x)^{-\lambda-1} /
    (\alpha x^{-\lambda} + (1-x)^{-\lambda})^2` with α = exp(ℓ).

    Example::

        q = BinaryConcrete(torch.tensor(0.5), probs=torch.tensor([0.1, 0.9]))
        x = q.rsample()
        q.log_prob(x)

    .. note:: Samples are clamped into [tiny, 1 − eps] of the dtype so that log_prob stays
        finite at low temperature; the gradient passes through the clamp unchanged.

    References:

    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution. ICLR.

    :param temperature: relaxation temperature λ > 0 (may require grad).
    :param torch.Tensor probs: probability of 1.
    :param torch.Tensor logits: log-odds of 1.
    """

    arg_constraints = {
        "temperature": constraints.positive,
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, temperature, probs=None, logits=None, *, validate_args=None):
        probs, logits = _logits_from(type(self).__name__, probs, logits, event_dim=0)
        if probs is not None:
            self.temperature, self.probs = broadcast_all(temperature, probs)
        else:
            self.temperature, self.logits = broadcast_all(temperature, logits)
        super().__init__(self.temperature.shape, torch.Size(), validate_args=validate_args)

    @staticmethod
    def infer_shapes(temperature=(), probs=None, logits=None):
        param = probs if probs is not None else logits
        return torch.broadcast_shapes(tuple(temperature), tuple(param)), ()

    @lazy_property
    def logits(self):
        tiny = torch.finfo(self.probs.dtype).tiny
        return torch.log(self.probs.clamp(min=tiny)) - torch.log1p(-self.probs).clamp(
            min=math.log(tiny)
        )

    @lazy_property
    def probs(self):
        return torch.sigmoid(self.logits)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.temperature = self.temperature.expand(batch_shape)
        if "probs" in self.__dict__:
            new.probs = self.probs.expand(batch_shape)
        if "logits" in self.__dict__:
            new.logits = self.logits.expand(batch_shape)
        super(BinaryConcrete, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _relaxed_logits(self, sample_shape) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        logits = self.logits.expand(shape)
        return bernoulli_relaxed_logits(logits, uniform_noise(shape, like=logits))

    def rsample(self, sample_shape=torch.Size()):
        x = bernoulli_soft(self._relaxed_logits(sample_shape), self.temperature)
        finfo = torch.finfo(x.dtype)
        return _clamp_value_keep_grad(x, finfo.tiny, 1.0 - finfo.eps)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        temperature = self.temperature
        log_x = torch.log(value)
        log_1mx = torch.log1p(-value)
        # [1] eq. 16 in log space; the denominator's log via logaddexp for stability
        return (
            torch.log(temperature)
            + self.logits
            - (temperature + 1) * (log_x + log_1mx)
            - 2 * torch.logaddexp(self.logits - temperature * log_x, -temperature * log_1mx)
        )


class BinaryConcreteStraightThrough(BinaryConcrete):
    r"""Straight-through relaxed Bernoulli: a {0, 1} sample forward, the
    :class:`BinaryConcrete` sample's gradient backward.

    ``rsample`` returns exact 0/1 values distributed as Bernoulli(σ(logits)); gradients flow
    through the relaxed sample. ``log_prob``, ``mean``, ``mode`` and ``entropy`` are those of
    that Bernoulli; ``log_prob`` is linear in the value, so it also accepts relaxed values.

    Example::

        q = BinaryConcreteStraightThrough(torch.tensor(0.5), logits=logits)
        b = q.rsample()                # 0./1. values, gradient through the relaxation

    :param temperature: relaxation temperature λ > 0 of the backward relaxation.
    :param torch.Tensor probs: probability of 1.
    :param torch.Tensor logits: log-odds of 1.

    References:

    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution. ICLR.
    [2] E. Jang, S. Gu, B. Poole (2017). Categorical Reparameterization with Gumbel-Softmax.
    """

    support = constraints.boolean

    def rsample(self, sample_shape=torch.Size()):
        soft = super().rsample(sample_shape)
        return _straight_through((soft > 0.5).to(soft.dtype), soft)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return value * F.logsigmoid(self.logits) + (1 - value) * F.logsigmoid(-self.logits)

    @property
    def mean(self):
        return self.probs

    @property
    def mode(self):
        return (self.logits > 0).to(self.logits.dtype)

    def entropy(self):
        return F.binary_cross_entropy_with_logits(self.logits, self.probs, reduction="none")


def softmax_linearization(probs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """π ⊙ (θ − ⟨π, θ⟩) with π held constant: its Jacobian in θ is the softmax Jacobian
    diag(π) − ππᵀ evaluated at π (a surrogate whose gradient, not value, matters)."""
    probs = probs.detach()
    return probs * (logits - (probs * logits).sum(-1, keepdim=True))


def reinmax_surrogate(logits: torch.Tensor, hard: torch.Tensor, temperature) -> torch.Tensor:
    r"""A function of ``logits`` whose Jacobian is ReinMax's ([3], Algorithm 2):
    :math:`2 J(\pi_1) - \tfrac12 J(\pi_0)` with :math:`J(\pi) = \operatorname{diag}(\pi) -
    \pi\pi^\top`, :math:`\pi_0 = \operatorname{softmax}(\theta)` and
    :math:`\pi_1 = (D + \operatorname{softmax}(\theta/\tau)) / 2` for the one-hot sample D."""
    probs = torch.softmax(logits, -1)
    shifted = 0.5 * (hard + torch.softmax(logits / temperature, -1))
    return 2.0 * softmax_linearization(shifted, logits) - 0.5 * softmax_linearization(probs, logits)


class ReinMaxStraightThrough(ConcreteStraightThrough):
    r"""One-hot Categorical(π) samples forward, ReinMax's second-order gradient backward ([3]).

    ``rsample`` returns an exact one-hot sample D ~ Categorical(softmax(logits)). Its gradient
    with respect to the logits θ is that of :math:`2\pi_1 - \tfrac12\pi_0` ([3], Algorithm
    2; Heun's method applied to the straight-through estimator): with
    :math:`\pi_0 = \operatorname{softmax}(\theta)` and
    :math:`\pi_1 = (D + \operatorname{softmax}(\theta/\tau))/2`, the vector-Jacobian product
    is :math:`g \mapsto 2\,\pi_1 \odot (g - \langle g, \pi_1\rangle) - \tfrac12\,\pi_0
    \odot (g - \langle g, \pi_0 \rangle)`. ``log_prob``, ``mean``, ``mode``, ``entropy`` are
    those of the one-hot Categorical(π).

    Example::

        q = ReinMaxStraightThrough(torch.tensor(1.0), logits=logits)
        b = q.rsample()                # one-hot; backward: ReinMax

    .. note:: Biased: the gradient is a second-order approximation of the gradient of
        E[f(D)], exact for f quadratic in D only in expectation under [3]'s assumptions. The
        temperature gets no gradient (π₁ is held constant, as in [3]); [3] recommends τ ≥ 1
        (its reference code refuses τ < 1; here any τ > 0 is valid).

    References:

    [3] L. Liu, C. Dong, X. Liu, B. Yu, J. Gao (2023). Bridging Discrete and Backpropagation:
        Straight-Through and Beyond. NeurIPS.

    :param temperature: τ > 0 of the softmax(θ/τ) in π₁.
    :param torch.Tensor probs: class probabilities.
    :param torch.Tensor logits: unnormalized log-probabilities.
    """

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        logits = self.logits.expand(shape)
        z = categorical_relaxed_logits(logits.detach(), uniform_noise(shape, like=logits))
        hard = categorical_hard(z)
        temperature = self.temperature.unsqueeze(-1)
        return _straight_through(hard, reinmax_surrogate(logits, hard, temperature))


def _check_num_samples(name: str, num_samples) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{name}: `num_samples` must be an integer >= 1, got {num_samples!r}")
    return num_samples


class GumbelRaoStraightThrough(ConcreteStraightThrough):
    r"""One-hot Categorical(π) samples forward, the Rao-Blackwellized straight-through
    Gumbel-softmax gradient backward ([4], "GR-MCK").

    ``rsample`` draws D = one_hot(argmax(log π + G)) with Gumbel noise G, then ``num_samples``
    Gumbel vectors :math:`G^{(s)} \sim G \mid \arg\max(\log\pi + G) = D` (the conditional
    sampler of REBAR, ``categorical_conditional_relaxed_logits``), and back-propagates through
    :math:`\frac1S \sum_s \operatorname{softmax}((\log\pi + G^{(s)})/\tau)`: a Monte Carlo
    estimate of :math:`\mathbb{E}[\nabla \operatorname{softmax}((\log\pi + G)/\tau) \mid D]`,
    the conditional expectation of the straight-through Gumbel-softmax gradient ([4], eq. 7).
    The noise :math:`G^{(s)}` is held constant (stop-gradient): differentiating through the
    conditional sampler's dependence on π would add terms that are not part of [4]'s
    estimator (the Rao-Blackwellization is of the gradient at fixed noise).

    Example::

        q = GumbelRaoStraightThrough(torch.tensor(0.5), logits=logits, num_samples=10)
        b = q.rsample()

    .. note:: Biased (as straight-through Gumbel-softmax, whose bias it keeps) with a variance
        that falls as ``num_samples`` grows. Gradients flow to the logits and the temperature.

    References:

    [4] M. B. Paulus, C. J. Maddison, A. Krause (2021). Rao-Blackwellizing the
        Straight-Through Gumbel-Softmax Gradient Estimator. ICLR.

    :param temperature: relaxation temperature τ > 0.
    :param torch.Tensor probs: class probabilities.
    :param torch.Tensor logits: unnormalized log-probabilities.
    :param int num_samples: conditional Gumbel draws averaged in the backward pass (≥ 1).
    """

    def __init__(
        self, temperature, probs=None, logits=None, num_samples: int = 10, *, validate_args=None
    ):
        self.num_samples = _check_num_samples(type(self).__name__, num_samples)
        super().__init__(temperature, probs=probs, logits=logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GumbelRaoStraightThrough, _instance)
        new = super().expand(batch_shape, _instance=new)
        new.num_samples = self.num_samples
        return new

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        logits = self.logits.expand(shape)
        fixed = logits.detach()
        hard = categorical_hard(categorical_relaxed_logits(fixed, uniform_noise(shape, like=fixed)))
        v = uniform_noise((self.num_samples,) + shape, like=fixed)
        noise = categorical_conditional_relaxed_logits(fixed, hard, v) - fixed
        temperature = self.temperature.unsqueeze(-1)
        soft = torch.softmax((logits + noise) / temperature, -1).mean(0)
        return _straight_through(hard, soft)
