"""Reparameterizable distributions for the NumPyro (JAX) backend."""

# Concrete family (issue: foundation)
from numpyro_backend.distributions.concrete import (
    BinaryConcrete,
    BinaryConcreteStraightThrough,
    Concrete,
    ConcreteStraightThrough,
    ExpConcrete,
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

__all__ = [
    "BinaryConcrete",
    "BinaryConcreteStraightThrough",
    "Concrete",
    "ConcreteStraightThrough",
    "ExpConcrete",
    "ImplicitBeta",
    "ImplicitDirichlet",
    "ImplicitGamma",
    "ImplicitlyReparameterized",
    "ImplicitStudentT",
    "ImplicitVonMises",
]
