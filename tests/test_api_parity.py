"""The two packages expose the same public names with the same call signatures.

DESIGN.md: "an argument that exists on one backend exists on the other with the same meaning";
constructors take ``num_particles`` positionally and everything else by keyword. This test
compares ``inspect.signature`` of every public callable of ``pyro_reparam_ext`` and
``numpyro_backend``: parameter names, order, kinds and defaults must be equal. Annotations are
not compared (documented type differences: ``torch.Tensor`` vs a JAX array, ``nn.Module`` vs an
``(init, apply)`` pair). Defaults that are backend objects are compared by kind, not identity.
"""

import inspect

import pytest

import numpyro_backend
import pyro_reparam_ext

PUBLIC = sorted(set(pyro_reparam_ext.__all__) | set(numpyro_backend.__all__))
MODULES = {"distributions", "infer", "ops"}

#: Estimator classes: everything after ``num_particles`` is keyword-only.
ESTIMATORS = sorted(name for name in PUBLIC if name.endswith("_ELBO"))


def _callable(package, name):
    obj = getattr(package, name)
    return obj.__init__ if inspect.isclass(obj) else obj


def _params(package, name):
    fn = _callable(package, name)
    skip = BACKEND_ONLY.get((package.__name__, name), set())
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in skip:
            assert p.kind is inspect.Parameter.KEYWORD_ONLY, (package.__name__, name, p.name)
            continue
        default = p.default
        if default is not inspect.Parameter.empty and not isinstance(
            default, (int, float, str, bool, type(None), tuple)
        ):
            default = type(default).__name__  # e.g. torch.Size() vs () is not a difference here
        out.append((p.name, p.kind, default))
    return out


def test_same_public_names():
    assert set(pyro_reparam_ext.__all__) == set(numpyro_backend.__all__)
    for module in MODULES:
        pyro_names = set(getattr(pyro_reparam_ext, module).__all__)
        numpyro_names = set(getattr(numpyro_backend, module).__all__)
        assert pyro_names == numpyro_names, module


#: ``SVI`` is each backend's own SVI class (DESIGN.md: Pyro's, and NumPyro's plus estimator
#: state at ``init``), whose signatures differ by design (``optim`` objects, ``loss`` keyword).
#: ``ImplicitlyReparameterized`` is a mixin placed before a concrete distribution
#: (``class CdfGamma(ImplicitlyReparameterized, dist.Gamma)``): its constructor is the
#: subclass's, so it has no signature of its own to mirror.
NOT_MIRRORED = {"SVI", "ImplicitlyReparameterized"}
MIRRORED = [n for n in PUBLIC if n not in MODULES and n not in NOT_MIRRORED]

#: Keyword-only parameters that exist on one backend only, because the concept does:
#: torch places tensors on a ``device``; JAX functions take explicit PRNG keys and params.
BACKEND_ONLY = {
    ("pyro_reparam_ext", "HypersphericalUniform"): {"device"},
    ("numpyro_backend", "gradient_variance"): {"rng_key", "params"},
}


@pytest.mark.parametrize("name", MIRRORED)
def test_same_signature(name):
    pyro_obj = getattr(pyro_reparam_ext, name)
    numpyro_obj = getattr(numpyro_backend, name)
    if not callable(pyro_obj):
        assert not callable(numpyro_obj), name
        return
    assert _params(pyro_reparam_ext, name) == _params(numpyro_backend, name), name


@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimators_keyword_only_after_num_particles(name):
    for package in (pyro_reparam_ext, numpyro_backend):
        params = list(inspect.signature(getattr(package, name).__init__).parameters.values())
        assert [p.name for p in params[:2]] == ["self", "num_particles"], (package, name)
        assert params[1].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        kinds = {p.kind for p in params[2:]}
        assert kinds <= {inspect.Parameter.KEYWORD_ONLY}, (package.__name__, name, kinds)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_misspelled_keyword_raises_type_error(name):
    for package in (pyro_reparam_ext, numpyro_backend):
        with pytest.raises(TypeError):
            getattr(package, name)(num_partcles=2)


def test_relax_accepts_every_rebar_option():
    for package in (pyro_reparam_ext, numpyro_backend):
        rebar = inspect.signature(package.REBAR_ELBO.__init__).parameters
        relax = inspect.signature(package.RELAX_ELBO.__init__).parameters
        missing = [k for k in rebar if k not in relax]
        assert not missing, (package.__name__, missing)
        for k in rebar:
            assert rebar[k].default == relax[k].default, (package.__name__, k)
