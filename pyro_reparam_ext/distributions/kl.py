"""KL divergences of the sphere families, registered with ``torch.distributions.kl``.

Imported once by ``pyro_reparam_ext.distributions`` for the side effect; then
``torch.distributions.kl_divergence`` (and Pyro's ``kl_divergence``) dispatch to these.

KL(p ‖ Uniform(S^{d−1})) = log|S^{d−1}| − H(p) for either family [1, §2.2], [2, eq. 9].

References:
    [1] T. R. Davidson et al. (2018). Hyperspherical Variational Auto-Encoders. UAI.
    [2] N. De Cao, W. Aziz (2020). The Power Spherical distribution. arXiv:2006.04437.
"""

import torch
from torch.distributions.kl import register_kl

from pyro_reparam_ext.distributions.power_spherical import PowerSpherical
from pyro_reparam_ext.distributions.von_mises_fisher import (
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
    return kl.expand(torch.broadcast_shapes(kl.shape, q.batch_shape))


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(p, q):
    return _kl_to_uniform(p, q)


@register_kl(PowerSpherical, HypersphericalUniform)
def _kl_powerspherical_uniform(p, q):
    return _kl_to_uniform(p, q)
