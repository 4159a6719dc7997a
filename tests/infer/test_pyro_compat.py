"""Pyro estimators accept what Pyro's own ELBOs accept: constructor contract and standard patterns.

The constructor contract is /work/notes/signatures.md (``num_particles`` positional, everything
else keyword-only, unknown keywords rejected). The reproducers of issue 12 (Pyro items) and a
catalogue of standard model/guide patterns follow.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, TraceEnum_ELBO, TraceGraph_ELBO, config_enumerate
from pyro.optim import Adam

from pyro_reparam_ext.infer import REBAR_ELBO, RELAX_ELBO, ScoreFunction_ELBO

ESTIMATOR_CLASSES = (ScoreFunction_ELBO, REBAR_ELBO, RELAX_ELBO)
INF = float("inf")

#: The constructor contract (name, default) after ``num_particles=1``, all keyword-only.
CONTRACT = {
    ScoreFunction_ELBO: [
        ("max_plate_nesting", INF),
        ("vectorize_particles", True),
        ("baseline", "optimal"),
        ("baseline_decay", 0.9),
    ],
    REBAR_ELBO: [
        ("max_plate_nesting", INF),
        ("vectorize_particles", True),
        ("temperature", 0.5),
        ("eta", 1.0),
        ("learn_temperature", True),
        ("learn_eta", True),
        ("coordinatewise", True),
    ],
}
CONTRACT[RELAX_ELBO] = CONTRACT[REBAR_ELBO] + [("control_variate", None), ("hidden_dim", 32)]
PYRO_KEYWORDS = [
    ("retain_graph", None),
    ("strict_enumeration_warning", True),
    ("ignore_jit_warnings", False),
]


@pytest.mark.parametrize("cls", ESTIMATOR_CLASSES, ids=lambda c: c.__name__)
def test_constructor_signature(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    first, rest = params[0], params[1:]
    assert (first.name, first.default, first.kind) == (
        "num_particles",
        1,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )
    expected = CONTRACT[cls] + PYRO_KEYWORDS
    assert [(p.name, p.default) for p in rest] == expected
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in rest)


@pytest.mark.parametrize("cls", ESTIMATOR_CLASSES, ids=lambda c: c.__name__)
def test_constructor_rejects_unknown_and_positional(cls):
    with pytest.raises(TypeError):
        cls(num_particle=2)  # misspelled
    with pytest.raises(TypeError):
        cls(2, 1)  # max_plate_nesting is keyword-only


@pytest.mark.parametrize("cls", ESTIMATOR_CLASSES, ids=lambda c: c.__name__)
def test_pyro_elbo_keywords_forwarded(cls):
    elbo = cls(
        2,
        max_plate_nesting=1,
        retain_graph=True,
        strict_enumeration_warning=False,
        ignore_jit_warnings=True,
    )
    assert elbo.num_particles == 2
    assert elbo.retain_graph is True
    assert elbo.strict_enumeration_warning is False
    assert elbo.ignore_jit_warnings is True


# ---- issue 12 reproducers (Pyro items) --------------------------------------------------------

ESTIMATORS = {
    "sf": lambda: ScoreFunction_ELBO(max_plate_nesting=1),
    "rebar": lambda: REBAR_ELBO(max_plate_nesting=1),
    "relax": lambda: RELAX_ELBO(max_plate_nesting=1),
}


def _steps(elbo, model, guide, *args, num_steps=3):
    svi = SVI(model, guide, Adam({"lr": 0.01}), loss=elbo)
    losses = [svi.step(*args) for _ in range(num_steps)]
    assert all(math.isfinite(loss) for loss in losses), losses
    return losses


@pytest.mark.parametrize("name", ESTIMATORS)
def test_local_param_in_subsampled_plate(name):
    """pyro.param(..., event_dim=0) under a subsampling plate (the relaxed replay detaches it)."""

    def model():
        with pyro.plate("data", 6, subsample_size=3):
            pyro.sample("b", dist.Bernoulli(0.3))

    def guide():
        with pyro.plate("data", 6, subsample_size=3):
            logits = pyro.param("logits", torch.zeros(6), event_dim=0)
            pyro.sample("b", dist.Bernoulli(logits=logits))

    _steps(ESTIMATORS[name](), model, guide)
    assert pyro.get_param_store().get_param("logits").grad is not None


def _empty():
    pass


def _factor_only():
    pyro.factor("f", torch.tensor(-1.5))


def _factor_only_guide():
    pyro.factor("f", torch.tensor(-1.5), has_rsample=True)


def _blocked_guide():
    with poutine.block():
        probs = pyro.param("probs", torch.tensor(0.4), constraint=constraints.unit_interval)
    pyro.sample("b", dist.Bernoulli(probs))


def _bernoulli_model():
    pyro.sample("b", dist.Bernoulli(0.3))


NO_PARAMETER_PROGRAMS = {
    "empty-guide": (_factor_only, _empty),
    "factor-only": (_factor_only, _factor_only_guide),
    "blocked-params": (_bernoulli_model, _blocked_guide),
    "both-empty": (_empty, _empty),
}


@pytest.mark.parametrize("program", NO_PARAMETER_PROGRAMS)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_programs_without_trainable_parameters(name, program):
    model, guide = NO_PARAMETER_PROGRAMS[program]
    elbo = ESTIMATORS[name]()
    _steps(elbo, model, guide)
    loss = elbo.differentiable_loss(model, guide)
    assert isinstance(loss, torch.Tensor) and torch.isfinite(loss)
    if program in ("empty-guide", "factor-only"):
        assert loss.item() == pytest.approx(1.5 if program == "empty-guide" else 0.0)


def test_running_baselines_are_not_trainable_parameters(tmp_path):
    """Running baselines live in the param store as buffers (requires_grad=False), saved with it."""
    logits = torch.tensor(0.2)

    def model():
        pyro.sample("b", dist.Bernoulli(0.3))

    def guide():
        pyro.sample("b", dist.Bernoulli(logits=pyro.param("q", logits)))

    for baseline in ("decaying_avg", "optimal"):
        _steps(ScoreFunction_ELBO(baseline=baseline), model, guide)
    store = pyro.get_param_store()
    buffers = {n: p for n, p in store.named_parameters() if n.startswith("reparam_ext.")}
    assert set(buffers) == {
        "reparam_ext.b.baseline_avg",
        "reparam_ext.b.baseline_fs2",
        "reparam_ext.b.baseline_s2",
    }
    assert not any(p.requires_grad for p in buffers.values())
    trainable = {n for n, p in store.named_parameters() if p.requires_grad}
    assert trainable == {"q"}
    assert store.get_param("q").unconstrained().grad is not None
    # saved and loaded with the store, still non-trainable, and used again on resume
    saved = {n: p.detach().clone() for n, p in buffers.items()}
    store.save(tmp_path / "store.pt")
    pyro.clear_param_store()
    store.load(tmp_path / "store.pt")
    for name, value in saved.items():
        loaded = store.get_param(name).unconstrained()
        assert torch.equal(loaded, value) and not loaded.requires_grad
    state = store.get_state()
    pyro.clear_param_store()
    store.set_state(state)
    _steps(ScoreFunction_ELBO(baseline="decaying_avg"), model, guide, num_steps=1)
    avg = store.get_param("reparam_ext.b.baseline_avg").unconstrained()
    assert not avg.requires_grad and not torch.equal(avg, saved["reparam_ext.b.baseline_avg"])


# ---- compatibility catalogue -------------------------------------------------------------------
#
# Standard model/guide patterns (those Pyro's own tests exercise) under every estimator: each
# trains for a few steps with a finite loss and has a mean gradient equal to the reference
# (TraceGraph_ELBO with many particles, or TraceEnum_ELBO's exact one), or raises the
# ValueError documented in the estimator's docstring.
#
# Tolerance: the estimator's mean over NUM_CALLS calls and the reference's mean over
# NUM_CALLS calls (exact references: SE 0) differ by z = Δ / sqrt(se² + se_ref²) with
# se² = sample variance / NUM_CALLS; for an unbiased estimator z is close to t-distributed
# with ≥ 19 degrees of freedom, P(|t₁₉| > 5) ≈ 8e-5 per coordinate, so over the ~150
# coordinates of the catalogue the family-wise false-alarm rate is ≈ 1e-2, while a bias of
# more than 5 SE fails. Seeds are fixed, so the outcome is deterministic.

NUM_CALLS = 20
Z_MAX = 5.0
ESTIMATOR_NAMES = ("ScoreFunction_ELBO", "REBAR_ELBO", "RELAX_ELBO")
ESTIMATOR_BY_NAME = dict(zip(ESTIMATOR_NAMES, ESTIMATOR_CLASSES, strict=True))


@dataclass(frozen=True)
class Pattern:
    name: str
    model: Callable
    guide: Callable
    make_args: Callable[[], tuple] = tuple
    max_plate_nesting: int = 1
    num_particles: int = 100
    reference: str = "tracegraph"  # or "exact" (TraceEnum_ELBO, every guide site enumerated)
    options: dict = field(default_factory=dict)  # extra constructor keywords
    refused_by: dict = field(default_factory=dict)  # estimator name -> ValueError match


def _bern(name, logits):
    return pyro.sample(name, dist.Bernoulli(logits=logits))


def _p(name, init):
    return pyro.param(name, lambda: torch.as_tensor(init, dtype=torch.float64))


# factors: a model factor coupling b to a model parameter, a guide factor with a pathwise
# gradient (has_rsample=True) and an observed guide factor (has_rsample=False)
def _factor_model():
    b = pyro.sample("b", dist.Bernoulli(0.4))
    pyro.factor("fm", -((b - _p("w", 0.3)) ** 2))


def _factor_guide():
    b = _bern("b", _p("q", -0.2))
    s = _p("s", 0.5)
    pyro.factor("fg", -0.5 * s**2 * (1.0 + b), has_rsample=True)
    pyro.factor("fo", 0.3 * b, has_rsample=False)


# poutine.block: a model parameter hidden from the optimizer, and a blocked guide sample site
def _block_model():
    with poutine.block():
        w = _p("w_blocked", 0.7)
    b = pyro.sample("b", dist.Bernoulli(0.3))
    pyro.sample("x", dist.Normal(w * b, 1.0), obs=torch.tensor(0.9))


def _block_guide():
    _bern("b", _p("q", 0.1))
    with poutine.block():
        pyro.sample("aux", dist.Bernoulli(0.5))


# nested plates, the outer one subsampled, with local parameters (event_dim=0) in both
def _nested_model(size):
    with pyro.plate("outer", 6, subsample_size=size, dim=-2):
        with pyro.plate("inner", 2, dim=-1):
            b = pyro.sample("b", dist.Bernoulli(0.3))
            pyro.sample("x", dist.Normal(b, 1.0), obs=torch.full((size, 2), 0.8))


def _nested_guide(size):
    with pyro.plate("outer", 6, subsample_size=size, dim=-2):
        row = pyro.param("row", torch.linspace(-0.5, 0.5, 6).unsqueeze(-1), event_dim=0)
        with pyro.plate("inner", 2, dim=-1):
            cell = pyro.param("cell", torch.zeros(6, 2) + 0.2, event_dim=0)
            _bern("b", row + cell)


# broadcasting: a scalar-logit site inside two plates, broadcast to their shape
def _broadcast_model():
    with pyro.plate("a", 3, dim=-2), pyro.plate("c", 2, dim=-1):
        b = pyro.sample("b", dist.Bernoulli(0.4))
        pyro.sample("x", dist.Normal(2.0 * b, 1.0), obs=torch.tensor(1.0))


def _broadcast_guide():
    with pyro.plate("a", 3, dim=-2), pyro.plate("c", 2, dim=-1):
        _bern("b", _p("q", 0.3))


def _simple_model():
    b = pyro.sample("b", dist.Bernoulli(0.3))
    pyro.sample("x", dist.Normal(b, 0.7), obs=torch.tensor(0.6))


def _simple_guide():
    _bern("b", _p("q", 0.4))


# a non-reparameterized continuous site beside a discrete one
def _nonreparam_model():
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.Bernoulli(logits=z))
    pyro.sample("x", dist.Normal(z + b, 1.0), obs=torch.tensor(1.2))


def _nonreparam_guide():
    z = pyro.sample("z", dist.Normal(_p("loc", 0.2), 1.0).has_rsample_(False))
    _bern("b", _p("q", 0.1) + 0.5 * z)


# masks: a distribution mask in the guide, poutine.mask in the model
MASK = torch.tensor([True, False, True, True])


def _mask_model():
    with pyro.plate("data", 4), poutine.mask(mask=MASK):
        b = pyro.sample("b", dist.Bernoulli(0.3))
        pyro.sample("x", dist.Normal(b, 1.0), obs=torch.tensor([0.2, 1.0, 0.9, -0.3]))


def _mask_guide():
    with pyro.plate("data", 4):
        logits = _p("q", [0.3, -0.2, 0.1, 0.5])
        pyro.sample("b", dist.Bernoulli(logits=logits).mask(MASK))


# scale: poutine.scale on the latent site of model and guide
def _scale_model():
    with poutine.scale(scale=2.5):
        b = pyro.sample("b", dist.Bernoulli(0.3))
    pyro.sample("x", dist.Normal(b, 0.7), obs=torch.tensor(0.6))


def _scale_guide():
    with poutine.scale(scale=2.5):
        _bern("b", _p("q", 0.4))


# dependent discrete sites: an integer Categorical, a one-hot, then Bernoullis conditioned on them
def _dependent_model():
    c = pyro.sample("c", dist.Categorical(logits=torch.zeros(3)))
    h = pyro.sample("h", dist.OneHotCategorical(logits=torch.zeros(2)))
    b = pyro.sample("b", dist.Bernoulli(0.4))
    mean = torch.tensor([-1.0, 0.0, 1.0])[c] + h[..., 0] + b
    pyro.sample("x", dist.Normal(mean, 1.0), obs=torch.tensor(0.5))


def _dependent_guide():
    c = pyro.sample("c", dist.Categorical(logits=_p("qc", [0.2, -0.1, 0.3])))
    h = pyro.sample("h", dist.OneHotCategorical(logits=_p("qh", [0.1, -0.4])))
    w = _p("w", [[0.5, -0.5, 0.2], [0.3, 0.1, -0.2]])
    _bern("b", (h @ w).gather(-1, c.unsqueeze(-1)).squeeze(-1))


# parameters passed as arguments (not through the param store)
def _arg_model(p):
    with pyro.plate("d", 2):
        b = pyro.sample("b", dist.Bernoulli(torch.tensor([0.3, 0.6])))
        pyro.sample("x", dist.Normal(b, 1.0), obs=torch.tensor([0.4, 1.1]))


def _arg_guide(p):
    with pyro.plate("d", 2):
        pyro.sample("b", dist.Bernoulli(logits=p))


def _arg_args():
    return (torch.tensor([0.6, -0.3], requires_grad=True),)


RELAX_REFUSAL = "cannot relax guide site 'z'"
PATTERNS = [
    Pattern("empty", _empty, _empty),
    Pattern("factor-only", _factor_only, _factor_only_guide),
    Pattern("empty-guide", _factor_only, _empty),
    # TraceGraph_ELBO itself fails on guide-only sites (KeyError): exact reference
    Pattern("factors-model-and-guide", _factor_model, _factor_guide, reference="exact"),
    Pattern("block", _block_model, _block_guide),
    Pattern(
        "nested-subsampled-local-params",
        _nested_model,
        _nested_guide,
        make_args=lambda: (3,),
        max_plate_nesting=2,
    ),
    Pattern("broadcasting-plates", _broadcast_model, _broadcast_guide, max_plate_nesting=2),
    Pattern(
        "looped-particles",
        _simple_model,
        _simple_guide,
        num_particles=2,
        options={"vectorize_particles": False},
        refused_by={"ScoreFunction_ELBO": "needs vectorize_particles=True"},
    ),
    Pattern(
        "non-reparameterized-continuous",
        _nonreparam_model,
        _nonreparam_guide,
        refused_by={"REBAR_ELBO": RELAX_REFUSAL, "RELAX_ELBO": RELAX_REFUSAL},
    ),
    Pattern("mask", _mask_model, _mask_guide),
    Pattern("scale", _scale_model, _scale_guide),
    Pattern("dependent-discrete", _dependent_model, _dependent_guide),
    Pattern("params-as-arguments", _arg_model, _arg_guide, make_args=_arg_args, reference="exact"),
]


def _leaves(args) -> dict[str, torch.Tensor]:
    """The tensors a gradient is taken for: user param-store leaves and tensor arguments."""
    leaves = {
        name: param
        for name, param in pyro.get_param_store().named_parameters()
        if not name.startswith("reparam_ext.")
    }
    for i, arg in enumerate(args):
        if isinstance(arg, torch.Tensor) and arg.requires_grad:
            leaves[f"arg{i}"] = arg
    return leaves


def _gradient_calls(gradient, num_calls) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (mean, standard error) of ``num_calls`` calls of ``gradient()`` (a dict)."""
    draws = [gradient() for _ in range(num_calls)]
    out = {}
    for name in draws[0]:
        stack = torch.stack([d[name] for d in draws])
        out[name] = (stack.mean(0), stack.std(0) / num_calls**0.5)
    return out


_REFERENCES: dict[str, dict] = {}  # pattern name -> reference (the same initial parameters)


def _reference_gradient(pattern: Pattern, args) -> dict:
    if pattern.name not in _REFERENCES:
        _REFERENCES[pattern.name] = _compute_reference(pattern, args)
    return _REFERENCES[pattern.name]


def _compute_reference(pattern: Pattern, args) -> dict:
    if pattern.reference == "exact":
        elbo = TraceEnum_ELBO(max_plate_nesting=pattern.max_plate_nesting)
        guide = config_enumerate(pattern.guide, default="parallel")
        loss = elbo.differentiable_loss(pattern.model, guide, *args)
        leaves = _leaves(args)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        return {n: (g, torch.zeros_like(g)) for n, g in zip(leaves, grads, strict=True)}
    elbo = TraceGraph_ELBO(
        num_particles=2000, max_plate_nesting=pattern.max_plate_nesting, vectorize_particles=True
    )

    def gradient():
        elbo.loss_and_grads(pattern.model, pattern.guide, *args)
        leaves = _leaves(args)
        grads = {n: leaf.grad.detach().clone() for n, leaf in leaves.items()}
        for leaf in leaves.values():
            leaf.grad = None
        return grads

    return _gradient_calls(gradient, NUM_CALLS)


def _estimator_gradient(elbo, pattern: Pattern, args) -> dict:
    def gradient():
        loss = elbo.differentiable_loss(pattern.model, pattern.guide, *args)
        leaves = _leaves(args)
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        return {
            n: torch.zeros_like(leaf) if g is None else g
            for (n, leaf), g in zip(leaves.items(), grads, strict=True)
        }

    return _gradient_calls(gradient, NUM_CALLS)


CATALOGUE = [(p, e) for p in PATTERNS for e in ESTIMATOR_NAMES]


@pytest.mark.parametrize(
    "pattern, estimator", CATALOGUE, ids=[f"{p.name}-{e}" for p, e in CATALOGUE]
)
def test_compatibility_catalogue(pattern, estimator):
    cls = ESTIMATOR_BY_NAME[estimator]
    num_particles = pattern.num_particles
    options = {"max_plate_nesting": pattern.max_plate_nesting, **pattern.options}
    args = pattern.make_args()
    if estimator in pattern.refused_by:
        with pytest.raises(ValueError, match=pattern.refused_by[estimator]):
            elbo = cls(num_particles, **options)
            elbo.differentiable_loss(pattern.model, pattern.guide, *args)
        return
    elbo = cls(num_particles, **options)
    # at the initial parameters: the estimator's mean gradient against the reference
    TraceGraph_ELBO(max_plate_nesting=pattern.max_plate_nesting).loss(
        pattern.model, pattern.guide, *args
    )  # registers the parameters at their initial values
    if _leaves(args):
        reference = _reference_gradient(pattern, args)
        estimate = _estimator_gradient(elbo, pattern, args)
        assert set(estimate) == set(reference)
        for name, (mean, se) in estimate.items():
            ref_mean, ref_se = reference[name]
            z = (mean - ref_mean).abs() / (se**2 + ref_se**2).sqrt().clamp_min(1e-12)
            assert z.max() < Z_MAX, f"{pattern.name}/{estimator} {name}: z = {z.max():.2f}"
    # then a few SVI steps with a finite loss
    svi = SVI(pattern.model, pattern.guide, Adam({"lr": 0.01}), loss=elbo)
    losses = [svi.step(*args) for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses), losses
