"""Relaxation maths shared by the Concrete family and the REBAR/RELAX estimators (PyTorch).

Every function takes its uniform noise as an argument, so the same draw can be reused
(REBAR evaluates the relaxation at z and at z̃ built from the same u and v). Bernoulli
functions work on logits of shape ``batch``; categorical ones on logits of shape
``batch + (K,)``.

References:
    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution.
    [2] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein (2017). REBAR:
        Low-variance, unbiased gradient estimates for discrete latent variable models,
        appendix "Conditional samples".
"""

import torch
import torch.nn.functional as F

__all__ = [
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
    """One-hot of argmax(z) along the last dimension, in z's dtype."""
    return F.one_hot(z.argmax(-1), z.shape[-1]).to(z.dtype)


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
