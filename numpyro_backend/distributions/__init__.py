"""Reparameterizable distributions for the NumPyro (JAX) backend."""

# Concrete family (issue: foundation)
from numpyro_backend.distributions.concrete import (
    BinaryConcrete,
    BinaryConcreteStraightThrough,
    Concrete,
    ConcreteStraightThrough,
    ExpConcrete,
    GumbelRaoStraightThrough,
    ReinMaxStraightThrough,
)

# Implicitly reparameterized distributions
from numpyro_backend.distributions.implicit import (
    ImplicitBeta,
    ImplicitDirichlet,
    ImplicitGamma,
    ImplicitlyReparameterized,
    ImplicitStudentT,
    ImplicitVonMises,
)

# Sphere: von Mises-Fisher, uniform, Power Spherical, KLs
from numpyro_backend.distributions.kl import SPHERE_KL_PAIRS  # registers the sphere KLs
from numpyro_backend.distributions.power_spherical import PowerSpherical
from numpyro_backend.distributions.von_mises_fisher import HypersphericalUniform, VonMisesFisher

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
