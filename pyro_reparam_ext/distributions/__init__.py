"""Reparameterizable distributions for the Pyro (PyTorch) backend."""

# Concrete family (issue: foundation)
from pyro_reparam_ext.distributions.concrete import (
    BinaryConcrete,
    BinaryConcreteStraightThrough,
    Concrete,
    ConcreteStraightThrough,
    ExpConcrete,
    GumbelRaoStraightThrough,
    ReinMaxStraightThrough,
)

# Implicitly reparameterized distributions
from pyro_reparam_ext.distributions.implicit import (
    ImplicitBeta,
    ImplicitDirichlet,
    ImplicitGamma,
    ImplicitlyReparameterized,
    ImplicitStudentT,
    ImplicitVonMises,
)

# Sphere: von Mises-Fisher, uniform, Power Spherical, KLs
from pyro_reparam_ext.distributions.kl import SPHERE_KL_PAIRS  # registers the sphere KLs
from pyro_reparam_ext.distributions.power_spherical import PowerSpherical
from pyro_reparam_ext.distributions.von_mises_fisher import HypersphericalUniform, VonMisesFisher

__all__ = [
    "BinaryConcrete",
    "BinaryConcreteStraightThrough",
    "Concrete",
    "ConcreteStraightThrough",
    "ExpConcrete",
    "GumbelRaoStraightThrough",
    "ReinMaxStraightThrough",
    "ImplicitBeta",
    "ImplicitDirichlet",
    "ImplicitGamma",
    "ImplicitlyReparameterized",
    "ImplicitStudentT",
    "ImplicitVonMises",
    "HypersphericalUniform",
    "PowerSpherical",
    "VonMisesFisher",
]
