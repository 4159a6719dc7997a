"""NumPyro estimator constructors: the signature contract, Pyro's keywords, typos, RELAX's
joint form.

The contract (one for both backends): ``num_particles`` positional, everything else
keyword-only, unknown keywords a ``TypeError``; ``retain_graph``,
``strict_enumeration_warning`` and ``ignore_jit_warnings`` accepted (no effect on NumPyro).
The pyroapi alias's stock ELBOs take Pyro's ELBO arguments and reject the rest too.
"""

import inspect

import jax.numpy as jnp
import numpy as np
import pyroapi
import pytest

from numpyro_backend.infer import REBAR_ELBO, RELAX_ELBO, ScoreFunction_ELBO
from numpyro_backend.infer.svi import is_static_argument, split_arguments
from tests.infer.models import EVENT_SITES
from tests.infer.numpyro_helpers import (
    NUM_SAMPLES,
    estimates_from_stats,
    estimator_state,
    fast_compile,  # noqa: F401  (fixture)
    gradient_stats,
    perturbed,
)
from tests.stats import max_abs_z

INF = float("inf")
SHARED_HEAD = [("max_plate_nesting", INF), ("vectorize_particles", True)]
PYRO_TAIL = [("retain_graph", None), ("strict_enumeration_warning", True)] + [
    ("ignore_jit_warnings", False)
]
REBAR_OPTIONS = [
    ("temperature", 0.5),
    ("eta", 1.0),
    ("learn_temperature", True),
    ("learn_eta", True),
    ("coordinatewise", True),
]
#: signatures.md, verbatim: (name, default) after ``num_particles``, all keyword-only
CONTRACT = {
    ScoreFunction_ELBO: SHARED_HEAD + [("baseline", "optimal"), ("baseline_decay", 0.9)],
    REBAR_ELBO: SHARED_HEAD + REBAR_OPTIONS,
    RELAX_ELBO: SHARED_HEAD + REBAR_OPTIONS + [("control_variate", None), ("hidden_dim", 32)],
}


@pytest.mark.parametrize("cls", list(CONTRACT), ids=lambda c: c.__name__)
def test_signature_is_the_contract(cls):
    params = list(inspect.signature(cls).parameters.values())
    first, rest = params[0], params[1:]
    assert (first.name, first.kind, first.default) == (
        "num_particles",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        1,
    )
    assert [(p.name, p.default) for p in rest] == CONTRACT[cls] + PYRO_TAIL
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in rest)


@pytest.mark.parametrize("cls", list(CONTRACT), ids=lambda c: c.__name__)
def test_positional_options_and_typos_raise_type_error(cls):
    with pytest.raises(TypeError):
        cls(2, 1)  # max_plate_nesting is keyword-only
    with pytest.raises(TypeError, match="num_particle"):
        cls(num_particle=2)


@pytest.mark.parametrize("cls", list(CONTRACT), ids=lambda c: c.__name__)
def test_pyro_keywords_are_accepted(cls):
    elbo = cls(2, retain_graph=True, strict_enumeration_warning=False, ignore_jit_warnings=True)
    assert elbo.num_particles == 2


ALIAS_ELBOS = [
    "Trace_ELBO",
    "TraceGraph_ELBO",
    "TraceMeanField_ELBO",
    "TraceEnum_ELBO",
    "JitTrace_ELBO",
    "JitTraceGraph_ELBO",
    "JitTraceMeanField_ELBO",
    "JitTraceEnum_ELBO",
    "ScoreFunction_ELBO",
    "REBAR_ELBO",
    "RELAX_ELBO",
]


@pytest.mark.parametrize("name", ALIAS_ELBOS)
def test_alias_elbos_reject_unknown_keywords(name):
    with pyroapi.pyro_backend("numpyro_backend"):
        cls = getattr(pyroapi.infer, name)
        cls(num_particles=2, max_plate_nesting=1, strict_enumeration_warning=False)
        with pytest.raises(TypeError, match="max_plate_nestin"):
            cls(num_particles=2, max_plate_nestin=1)


def test_alias_stock_elbos_take_pyros_arguments_in_pyros_order():
    with pyroapi.pyro_backend("numpyro_backend"):
        elbo = pyroapi.infer.TraceGraph_ELBO(3, 1, None, True, False, True, None, None, -1.0)
    assert (elbo.num_particles, elbo.max_plate_nesting) == (3, 1)
    assert elbo.baseline == "none"


def test_relax_accepts_coordinatewise_false_and_builds_the_joint_network():
    # EVENT_SITES: z = 2 one-hot decisions over 3 categories, c = 2 Bernoulli decisions.
    # Joint form: the network sees [z, logits] of the whole element: 2·6 and 2·2 inputs;
    # coordinate-wise it would see [z_j, logits, others, one-hot of j]: 3+12+2 and 1+4+2.
    for coordinatewise, sizes in ((False, (12, 4)), (True, (17, 7))):
        elbo = RELAX_ELBO(num_particles=1, coordinatewise=coordinatewise)
        state = estimator_state(elbo, EVENT_SITES)
        widths = tuple(state[f"reparam_ext.relax.{s}"]["w1"].shape[0] for s in ("z", "c"))
        assert widths == sizes, coordinatewise


@pytest.mark.usefixtures("fast_compile")
def test_relax_joint_form_is_unbiased():
    # NUM_SAMPLES estimates at perturbed control-variate parameters (unbiased for every φ);
    # |z| < 5 over the entry's 16 coordinates: a two-sided normal (t with 1999 df: about
    # the same) tail of 5.7e-7 per coordinate, so a correct estimator fails with
    # probability < 1e-5 (union bound); a bias of 5 SE fails about half the time
    elbo = RELAX_ELBO(num_particles=1, coordinatewise=False)
    state = perturbed(estimator_state(elbo, EVENT_SITES), seed=5)
    stats = gradient_stats(elbo, EVENT_SITES, NUM_SAMPLES, seed=6, extra_params=state)
    assert set(stats["params"]) == set(EVENT_SITES.exact_grads)
    z, where = max_abs_z(estimates_from_stats(stats), EVENT_SITES.exact_grads)
    assert z < 5.0, f"|z| = {z:.2f} at {where}"
    assert all(np.all(np.isfinite(s["mean"])) for s in stats["params"].values())


def test_one_static_argument_rule_for_svi_steps_and_gradient_variance():
    constants = [3, True, np.int64(2), "name", None, len]
    data = [0.5, np.float32(1.0), jnp.ones(2), np.ones(3)]
    assert all(is_static_argument(x) for x in constants)
    assert not any(is_static_argument(x) for x in data)
    args, kwargs = (3, 0.5, jnp.ones(2)), {"size": 4, "names": ["a"], "x": np.ones(3)}
    key, traced, rebuild = split_arguments(args, kwargs)
    assert len(traced) == 3
    rebuilt_args, rebuilt_kwargs = rebuild(traced)
    assert rebuilt_args[0] == 3 and rebuilt_kwargs["size"] == 4 and rebuilt_kwargs["names"] == ["a"]
    # new data values: same key (no recompile); a new constant: another key
    assert split_arguments((3, 0.7, jnp.zeros(2)), kwargs)[0] == key
    assert split_arguments((5, 0.5, jnp.ones(2)), kwargs)[0] != key
