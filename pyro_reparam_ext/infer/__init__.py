"""ELBO gradient estimators for the Pyro (PyTorch) backend."""

__all__: list[str] = []
