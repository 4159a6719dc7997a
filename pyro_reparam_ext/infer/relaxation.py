"""One object per discrete family: its noise, threshold, relaxation and conditional sampler.

The estimators (REBAR / RELAX in :mod:`.relax`, DisARM in :mod:`.disarm`, the optimal
baseline in :mod:`.score_function`) ask a site's family — found by
:func:`~pyro_reparam_ext.infer.sites.family_of` — for everything that depends on the
distribution, instead of branching on its type. The same classes, attributes and methods
exist on the NumPyro backend (``numpyro_backend/infer/relaxation.py``).

Shapes: ``logits`` are a site's full logits, one entry per scalar decision (Bernoulli:
``batch + event``), plus the categories (Categorical: ``batch + event + (K,)``;
OneHotCategorical: ``batch + event`` with the event ending in K). A *relaxed value* has the
logits' shape; its last :attr:`category_dims` dims index categories.

Noise, threshold, relaxation ([1]; [2] section 3.2 and appendix B): with u, v uniform,

    Bernoulli:    z = ℓ + log u − log(1 − u),  H(z) = 1[z > 0],      σ_λ(z) = sigmoid(z / λ)
    Categorical:  z = log π + Gumbel(u),       H(z) = argmax z,      σ_λ(z) = softmax(z / λ)

and z̃ ~ p(z | H(z) = b) is drawn from v ([2] appendix B;
:mod:`pyro_reparam_ext.distributions.concrete`).
The continuous extension of a discrete log-density evaluates it at a relaxed value:
b·log p + (1 − b)·log(1 − p), or one-hot · log π.

DisARM's stick-breaking pieces ([3], section 4): a categorical is a sequence of binary
decisions taken in ``category_order``; a Bernoulli is its own single binary.

References:
    [1] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein (2017). REBAR:
        Low-variance, unbiased gradient estimates for discrete latent variable models.
    [2] W. Grathwohl, D. Choi, Y. Wu, G. Roeder, D. Duvenaud (2018). Backpropagation through
        the void: Optimizing control variates for black-box gradient estimation.
    [3] Z. Dong, A. Mnih, G. Tucker (2021). Coupled Gradient Estimators for Discrete Latent
        Variables.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pyro_reparam_ext.distributions.concrete import (
    bernoulli_conditional_relaxed_logits,
    bernoulli_hard,
    bernoulli_relaxed_logits,
    bernoulli_soft,
    categorical_conditional_relaxed_logits,
    categorical_hard,
    categorical_relaxed_logits,
    categorical_soft,
    uniform_noise,
)


class BernoulliRelaxation:
    """Bernoulli: z = ℓ + Logistic noise, b = 1[z > 0], relaxed value σ(z/λ)."""

    name = "bernoulli"
    category_dims = 0  #: trailing dims of a relaxed value that index categories
    replayable = True  #: a relaxed value can stand in for the sample in user code

    @staticmethod
    def logits(fn, base) -> torch.Tensor:
        """The site's logits broadcast to one entry per decision: ``batch + event``."""
        return base.logits.expand(fn.batch_shape + fn.event_shape)

    @staticmethod
    def decision_shape(fn) -> tuple:
        """Shape of the decisions of one site element (its event dims without categories)."""
        return tuple(fn.event_shape)

    @staticmethod
    def score(logits, value) -> torch.Tensor:
        """∇_logits log q(value | logits), per logit (same shape as ``logits``)."""
        return value - torch.sigmoid(logits)

    @staticmethod
    def noise(logits) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, v): the uniform noise of z and of z̃, shaped like ``logits``."""
        return uniform_noise(logits.shape, like=logits), uniform_noise(logits.shape, like=logits)

    @staticmethod
    def relaxed_logits(logits, u) -> torch.Tensor:
        """z = ℓ + log u − log(1 − u)."""
        return bernoulli_relaxed_logits(logits, u)

    @staticmethod
    def conditional_relaxed_logits(logits, hard, v) -> torch.Tensor:
        """z̃ ~ p(z | H(z) = b) from v ([2] appendix B)."""
        return bernoulli_conditional_relaxed_logits(logits, hard, v)

    @staticmethod
    def _point_noise(u, v, hard) -> tuple:
        """The parts of z and z̃ that do not depend on the logits, once per draw (for
        :meth:`_points`): logistic(u), s = 2b − 1 and (a, c) = (log v, log(1 − v)) where
        b = 1, (log(1 − v), log v) where b = 0."""
        log_v, log_1mv = torch.log(v), torch.log1p(-v)
        one = hard > 0.5
        return (
            torch.log(u) - torch.log1p(-u),
            2.0 * hard - 1.0,
            torch.where(one, log_v, log_1mv),
            torch.where(one, log_1mv, log_v),
        )

    @staticmethod
    def _points(logits, noise) -> torch.Tensor:
        """(z, z̃) stacked from :meth:`_point_noise`'s parts: z = ℓ + logistic(u) and
        z̃ = s·(softplus(s·ℓ + a) − c), the conditional draw of :meth:`conditional_relaxed_logits`
        rearranged. With p = σ(ℓ) and z̃ = ℓ + logit(u'): b = 1, u' = 1 − p + v·p gives
        z̃ = log(1 + v·e^ℓ) − log(1 − v) > 0; b = 0, u' = v·(1 − p) gives
        z̃ = log v − log(1 + (1 − v)·e^−ℓ) < 0 — the sign of b kept at saturated logits, five
        elementwise ops on the logits instead of about fifteen. softplus takes its linear
        branch only above 40 (error below e^−40).
        """
        logistic, sign, a, c = noise
        z_tilde = sign * (F.softplus(sign * logits + a, threshold=40.0) - c)
        return torch.stack([logits + logistic, z_tilde])

    @staticmethod
    def hard(z) -> torch.Tensor:
        """The site's value b = H(z)."""
        return bernoulli_hard(z)

    @staticmethod
    def soft(z, temperature) -> torch.Tensor:
        """σ_λ(z), the relaxed value."""
        return bernoulli_soft(z, temperature)

    @staticmethod
    def as_relaxed(value, logits) -> torch.Tensor:
        """The sampled value as a float tensor shaped like a relaxed value."""
        return value.to(logits.dtype)

    @staticmethod
    def log_prob(logits, value) -> torch.Tensor:
        """Continuous extension b·log p + (1 − b)·log(1 − p), per decision (no category dim).

        Evaluated as −BCE-with-logits, (1 − b)·ℓ − log σ(ℓ) negated (the same function, as
        log(1 − p) = log σ(ℓ) − ℓ): one fused op and backward instead of seven.
        """
        if logits.shape != value.shape:
            logits, value = torch.broadcast_tensors(logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none")

    #: log q of each decision at a hard value (the continuous extension is exact there)
    decision_log_prob = log_prob

    @staticmethod
    def _log_prob_change(logits, hard, value) -> torch.Tensor:
        """log_prob(logits, value) − log_prob(logits, hard) per decision: the continuous
        extension b·ℓ + log σ(−ℓ) is affine in the value, so ℓ·(value − hard)."""
        return logits * (value - hard)

    # ---- DisARM's binary decisions ----------------------------------------------------------

    @staticmethod
    def category_order(logits) -> torch.Tensor | None:
        """The stick-breaking order of the categories (None: a Bernoulli is one binary)."""
        return None

    @staticmethod
    def binary_logits(logits, order) -> torch.Tensor:
        """α of the site's binary decisions: the logits themselves."""
        return logits

    @staticmethod
    def value_from_binaries(binaries, order) -> torch.Tensor:
        """The site's value from its binary decisions: the binaries themselves."""
        return binaries

    @staticmethod
    def reached(binaries) -> torch.Tensor:
        """Whether each binary decision is reached: always."""
        return torch.ones_like(binaries, dtype=torch.bool)


class OneHotCategoricalRelaxation:
    """OneHotCategorical: z = log π + Gumbel noise, b = one-hot of argmax z, softmax(z/λ)."""

    name = "one_hot_categorical"
    category_dims = 1
    replayable = True

    @staticmethod
    def logits(fn, base) -> torch.Tensor:
        """``batch + event`` (the event ending in the K categories)."""
        return base.logits.expand(fn.batch_shape + fn.event_shape)

    @staticmethod
    def decision_shape(fn) -> tuple:
        return tuple(fn.event_shape[:-1])

    @staticmethod
    def score(logits, value) -> torch.Tensor:
        return value - torch.softmax(logits, dim=-1)

    noise = staticmethod(BernoulliRelaxation.noise)

    @staticmethod
    def relaxed_logits(logits, u) -> torch.Tensor:
        """z = log π + Gumbel noise −log(−log u)."""
        return categorical_relaxed_logits(logits, u)

    @staticmethod
    def conditional_relaxed_logits(logits, hard, v) -> torch.Tensor:
        """z̃ ~ p(z | argmax z = b) from v, b one-hot ([2] appendix B)."""
        return categorical_conditional_relaxed_logits(logits, hard, v)

    @staticmethod
    def hard(z) -> torch.Tensor:
        return categorical_hard(z)

    @staticmethod
    def soft(z, temperature) -> torch.Tensor:
        return categorical_soft(z, temperature)

    @staticmethod
    def as_relaxed(value, logits) -> torch.Tensor:
        return value.to(logits.dtype)

    @staticmethod
    def log_prob(logits, value) -> torch.Tensor:
        """Continuous extension one-hot · log π, per decision (the category dim summed)."""
        return (value * torch.log_softmax(logits, dim=-1)).sum(-1)

    decision_log_prob = log_prob

    @staticmethod
    def _log_prob_change(logits, hard, value) -> torch.Tensor:
        """log_prob(logits, value) − log_prob(logits, hard) per decision: one-hot · log π is
        linear in the value, so (value − hard) · log π."""
        return ((value - hard) * torch.log_softmax(logits, dim=-1)).sum(-1)

    # ---- DisARM's binary decisions ----------------------------------------------------------

    @staticmethod
    def category_order(logits) -> torch.Tensor:
        """The stick-breaking order: categories by increasing probability."""
        return torch.argsort(logits.detach(), -1)

    @staticmethod
    def binary_logits(logits, order) -> torch.Tensor:
        """With ℓ the logits in ``order``, α_k = ℓ_k − logsumexp(ℓ_{k+1:}) = logit of
        π_k / Σ_{j≥k} π_j, k < K − 1 (last dim K − 1)."""
        ordered = torch.gather(logits, -1, order)
        tail = torch.logcumsumexp(ordered.flip(-1), -1).flip(-1)  # logsumexp(ℓ_{k:})
        return ordered[..., :-1] - tail[..., 1:]

    @classmethod
    def value_from_binaries(cls, binaries, order) -> torch.Tensor:
        """The one-hot of category ``order[k]``, k the first binary with b_k = 1 (else the
        last category)."""
        index = cls._index_from_binaries(binaries, order)
        return F.one_hot(index, binaries.shape[-1] + 1).to(binaries.dtype)

    @staticmethod
    def _index_from_binaries(binaries, order) -> torch.Tensor:
        first = torch.cat([binaries, torch.ones_like(binaries[..., :1])], -1).argmax(-1)
        return torch.gather(order, -1, first.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def reached(binaries) -> torch.Tensor:
        """Whether each binary decision is reached (no earlier b_j = 1)."""
        return (binaries.cumsum(-1) - binaries) == 0


class CategoricalRelaxation(OneHotCategoricalRelaxation):
    """Integer Categorical: as one-hot, but the value is an index user code may index with,
    so a relaxed (one-hot) value cannot be replayed through the program."""

    name = "categorical"
    replayable = False

    @staticmethod
    def logits(fn, base) -> torch.Tensor:
        """``batch + event + (K,)``."""
        return base.logits.expand(fn.batch_shape + fn.event_shape + base.logits.shape[-1:])

    @staticmethod
    def decision_shape(fn) -> tuple:
        return tuple(fn.event_shape)

    @staticmethod
    def score(logits, value) -> torch.Tensor:
        one_hot = F.one_hot(value, logits.shape[-1]).to(logits.dtype)
        return one_hot - torch.softmax(logits, dim=-1)

    @staticmethod
    def hard(z) -> torch.Tensor:
        return z.argmax(-1)

    @staticmethod
    def as_relaxed(value, logits) -> torch.Tensor:
        return F.one_hot(value, logits.shape[-1]).to(logits.dtype)

    @classmethod
    def value_from_binaries(cls, binaries, order) -> torch.Tensor:
        """The category ``order[k]``, k the first binary with b_k = 1 (else the last)."""
        return cls._index_from_binaries(binaries, order)


#: The three families, in the order :func:`~pyro_reparam_ext.infer.sites.family_of` tries them.
FAMILIES = (BernoulliRelaxation(), OneHotCategoricalRelaxation(), CategoricalRelaxation())

__all__ = [
    "FAMILIES",
    "BernoulliRelaxation",
    "CategoricalRelaxation",
    "OneHotCategoricalRelaxation",
]
