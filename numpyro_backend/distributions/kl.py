"""KL divergences of the sphere families, registered with NumPyro's KL registry.

NumPyro's registry is the ``multipledispatch`` dispatcher
``numpyro.distributions.kl.kl_divergence`` (NumPyro has no ``register_kl`` function);
registering on it makes ``numpyro.distributions.kl.kl_divergence(p, q)`` and every ELBO that
uses analytic KLs (e.g. ``TraceMeanField_ELBO``) find these. Imported once by
``numpyro_backend.distributions`` for the side effect.

KL(p ‖ Uniform(S^{d−1})) = log|S^{d−1}| − H(p) for either family [1, §2.2], [2, eq. 9].

References:
    [1] T. R. Davidson et al. (2018). Hyperspherical Variational Auto-Encoders. UAI.
    [2] N. De Cao, W. Aziz (2020). The Power Spherical distribution. arXiv:2006.04437.
"""

import jax.numpy as jnp
from jax import lax
from numpyro.distributions.kl import kl_divergence

from numpyro_backend.distributions.power_spherical import PowerSpherical
from numpyro_backend.distributions.von_mises_fisher import (
    HypersphericalUniform,
    VonMisesFisher,
    log_sphere_area,
)

#: the (p, q) type pairs registered here
SPHERE_KL_PAIRS = (
    (VonMisesFisher, HypersphericalUniform),
    (PowerSpherical, HypersphericalUniform),
)


def _kl_to_uniform(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"KL needs both distributions on the same sphere: p has event_shape "
            f"{tuple(p.event_shape)}, q has dim {q.dim}"
        )
    kl = log_sphere_area(p.dim) - p.entropy()
    return jnp.broadcast_to(kl, lax.broadcast_shapes(jnp.shape(kl), q.batch_shape))


@kl_divergence.register(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(p, q):
    return _kl_to_uniform(p, q)


@kl_divergence.register(PowerSpherical, HypersphericalUniform)
def _kl_powerspherical_uniform(p, q):
    return _kl_to_uniform(p, q)
