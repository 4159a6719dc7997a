"""ELBO gradient estimators for the NumPyro (JAX) backend."""

__all__: list[str] = []
