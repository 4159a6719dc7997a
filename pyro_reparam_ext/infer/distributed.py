"""Data-parallel SVI on ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Every worker (rank) takes its own shard of the minibatch; gradients are averaged across ranks
before each optimizer step, so with identical starting values every rank takes identical
steps and the parameters stay bitwise-equal. Three things plain gradient averaging misses are
handled here:

- **running statistics** (the optimal baseline's moments, decaying averages) are written
  outside autograd. The estimators call :func:`average_running_state` after every update, so
  when ``torch.distributed`` is initialized every rank keeps the cross-rank mean — the same
  baseline everywhere (Pyro's own decaying-average baseline drifts apart under Horovod/DDP).
  The mean rides in a collective the step makes anyway: the optimizer's gradient all-reduce
  (classic path), or one all-reduce per forward of :class:`EstimatorELBOModule`;
- **noise**: every rank must draw its own noise while the parameters stay shared.
  :func:`seed_per_rank` seeds torch, numpy and ``random`` from (seed, rank);
- **REBAR/RELAX** train their control variate with a second, ``create_graph`` gradient,
  which ``DistributedDataParallel`` does not support in its backward pass (pytorch #47562,
  #63812). Ours take that gradient inside the loss (``torch.autograd.grad``, which fires none
  of DDP's hooks) and return a first-order loss, so one ordinary DDP backward suffices (the
  tests check DDP against the explicit all-reduce). :func:`all_reduce_gradients` after
  ``backward()`` is the documented replacement for DDP that relies on no such detail, for
  every estimator.

Classic path (the param store, as Pyro's ``examples/svi_horovod.py``)::

    distributed.initialize("127.0.0.1:29500", num_processes=2, process_id=rank)
    distributed.seed_per_rank(0)
    optim = distributed.DistributedOptimizer(pyro.optim.Adam({"lr": 1e-3}))
    svi = SVI(model, guide, optim, loss=RELAX_ELBO())
    for batch in shards:  # this rank's part of each minibatch, plate scale N / shard size
        svi.step(batch)

Module path (``pyro.settings.set(module_local_params=True)``): ``elbo(model, guide)`` returns
an :class:`EstimatorELBOModule`, whose parameters include the estimator's learned state and
whose buffers hold its running statistics::

    loss_fn = RELAX_ELBO()(model, guide)
    loss_fn(first_batch)  # creates the lazily initialized state, as every ELBOModule
    distributed.broadcast_module(loss_fn)  # rank 0's values everywhere
    optim = torch.optim.Adam(loss_fn.parameters(), lr=1e-3)
    for batch in shards:
        optim.zero_grad()
        loss_fn(batch).backward()
        distributed.all_reduce_gradients(loss_fn.parameters())
        optim.step()

``DistributedDataParallel(loss_fn)`` works as well (it broadcasts rank 0's state when built).

What the average means. Each rank's loss is an unbiased estimate of the full-data −ELBO
(the plate scales its terms by N / shard size), so the mean of the ranks' gradients is the
gradient of the whole minibatch — exactly, for the same noise. For REBAR/RELAX the
control-variate gradient each rank computes is ∇_φ of *its own* single-sample variance Σ ĝ²;
their mean is ∇_φ of the mean per-rank variance, which the independent ranks' noise makes
proportional to the variance of the averaged gradient (Var(mean of R) = mean Var / R).
"""

from __future__ import annotations

import os
import re
import weakref
import zlib
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import timedelta

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
import torch.distributed as dist
from pyro.infer.elbo import ELBOModule
from pyro.optim import PyroOptim

__all__ = [
    "DistributedOptimizer",
    "EstimatorELBOModule",
    "all_reduce_gradients",
    "average_running_state",
    "broadcast_module",
    "initialize",
    "is_distributed",
    "pin_to_cpu",
    "seed_per_rank",
]


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is initialized with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def initialize(
    coordinator_address: str,
    *,
    num_processes: int,
    process_id: int,
    timeout: float = 60.0,
    backend: str | None = None,
    pin_cpu: bool = False,
) -> None:
    """Join the process group: ``torch.distributed.init_process_group`` over TCP.

    :param str coordinator_address: ``host:port`` of rank 0's rendezvous store.
    :param int num_processes: world size.
    :param int process_id: this process's rank, in ``[0, num_processes)``.
    :param float timeout: seconds to wait for the other ranks (rendezvous and every later
        collective) before raising, instead of hanging.
    :param str backend: ``"gloo"`` or ``"nccl"``; default NCCL when CUDA is available
        (then call ``torch.cuda.set_device(local_rank)`` first), else gloo.
    :param bool pin_cpu: give this process one CPU core of its own (for CPU workers with one
        thread each, one worker per core): pin all its threads, gloo's included, to core
        ``process_id mod (number of cores it may use)`` (``os.sched_setaffinity``, Linux), and
        wait for the CPU all-reduces of this module by polling on that core
        (``os.sched_yield`` between polls) instead of sleeping, so a waiting rank neither
        hands its core to another rank's threads nor pays a wake-up when the collective
        completes. Default False (threads float, waits sleep).
    """
    global _poll_waits
    host, sep, port = coordinator_address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"coordinator_address must be 'host:port', got {coordinator_address!r}")
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be an integer >= 1, got {num_processes!r}")
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if pin_cpu:  # before the process group: the threads it starts inherit the core
        pin_to_cpu(process_id)
    try:
        dist.init_process_group(
            backend,
            init_method=f"tcp://{coordinator_address}",
            world_size=num_processes,
            rank=process_id,
            timeout=timedelta(seconds=timeout),
        )
    except dist.DistError as error:  # e.g. a rank never arrives: one line instead of a hang
        message = " ".join(str(error).split())
        raise RuntimeError(
            f"rank {process_id} of {num_processes} could not join the process group at "
            f"{coordinator_address} (timeout {timeout} s): {message}"
        ) from None
    _poll_waits = bool(pin_cpu)


def pin_to_cpu(index: int) -> int:
    """Pin every thread of this process to one CPU core; return the core.

    The core is the ``index mod n``-th (in increasing order) of the n cores this process may
    use, so ``index = local rank`` gives each worker on a machine its own core. Threads started
    later inherit the core. Used by :func:`initialize` (``pin_cpu=True``).
    """
    if not hasattr(os, "sched_setaffinity"):
        raise RuntimeError("pin_to_cpu needs os.sched_setaffinity (Linux)")
    if not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be an integer >= 0, got {index!r}")
    cores = sorted(os.sched_getaffinity(0))
    core = cores[index % len(cores)]
    for thread in os.listdir("/proc/self/task"):  # sched_setaffinity(0) would pin one thread
        try:
            os.sched_setaffinity(int(thread), {core})
        except ProcessLookupError:  # the thread has ended meanwhile
            pass
    return core


def seed_per_rank(seed: int) -> int:
    """Seed torch, numpy and ``random`` (``pyro.set_rng_seed``) from ``(seed, rank)``.

    Every rank gets its own stream, so the noise of global latents differs across ranks and
    averages out; without ``torch.distributed`` the rank is 0. Returns the seed used.
    """
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    rank_seed = int(np.random.SeedSequence([int(seed), rank]).generate_state(1)[0])
    pyro.set_rng_seed(rank_seed)
    return rank_seed


# Running statistics waiting for the next gradient all-reduce of a DistributedOptimizer.
_pending: list[torch.Tensor] = []
# Live DistributedOptimizers: while one exists, the classic SVI path defers the averages to it.
_optimizers: weakref.WeakSet = weakref.WeakSet()
# Inside EstimatorELBOModule.forward: the states updated by this call, averaged at its end.
_collected: ContextVar[list | None] = ContextVar("running_states_collected", default=None)
# Set by initialize(pin_cpu=True): CPU all-reduces are waited for by polling.
_poll_waits = False


def _all_reduce(flat: torch.Tensor) -> None:
    """``dist.all_reduce(flat)`` (a sum), waited for by polling when :func:`initialize` pinned
    this rank to its own core (a gloo timeout or error still raises, from ``wait``)."""
    if not (_poll_waits and flat.device.type == "cpu"):
        dist.all_reduce(flat)
        return
    work = dist.all_reduce(flat, async_op=True)
    while not work.is_completed():
        os.sched_yield()
    work.wait()


def average_running_state(state: torch.Tensor) -> torch.Tensor:
    """Make ``state`` the mean over ranks of its values (no-op without ``torch.distributed``).

    Called by the estimators after every in-place update of a running statistic, in the same
    order on every rank; the estimators read a statistic before updating it, so the mean is
    only needed by the next step. It is therefore taken where a collective happens anyway:

    - while a :class:`DistributedOptimizer` exists (the classic ``SVI`` path), in that
      optimizer's next step, inside the same all-reduce as the gradients — one collective per
      step however many statistics there are;
    - inside :class:`EstimatorELBOModule` (the module / DDP path), in one all-reduce at the end
      of the forward call, for all statistics that call updated;
    - otherwise at once (with any statistics still pending).

    The mean is a sum all-reduce followed by a division by the world size, so every rank holds
    bitwise the same result whichever of the three routes is taken.
    """
    if not is_distributed():
        return state
    collected = _collected.get()
    if collected is not None:
        collected.append(state)
    elif len(_optimizers):
        _pending.append(state)
    else:
        _all_reduce_mean([], _take_pending() + [state])
    return state


def _take_pending() -> list[torch.Tensor]:
    """The pending running statistics (each tensor once, in order), and clear the list."""
    states = list({id(s): s for s in _pending}.values())
    _pending.clear()
    return states


def _groups(tensors: list[torch.Tensor]) -> dict:
    """Tensors grouped by (device, dtype), order kept: one collective per group."""
    groups: dict = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault((tensor.device, tensor.dtype), []).append(index)
    return groups


def _packed_groups(params: list[torch.Tensor], states: list[torch.Tensor]) -> list[tuple]:
    """``(parameters, states)`` per (device, dtype), order kept: one flat tensor each."""
    tensors = params + states
    return [
        (
            [params[i] for i in indices if i < len(params)],
            [tensors[i] for i in indices if i >= len(params)],
        )
        for indices in _groups(tensors).values()
    ]


def _pack(
    group: list[torch.Tensor], group_states: list[torch.Tensor], header: list[float]
) -> torch.Tensor:
    """One flat tensor: ``header``, one has-gradient flag per parameter, the gradients (zeros
    where missing), the states."""
    like = (group or group_states)[0]
    flags = torch.tensor(
        header + [p.grad is not None for p in group], dtype=like.dtype, device=like.device
    )
    grads = [
        p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1) for p in group
    ]
    return torch.cat([flags] + grads + [s.detach().reshape(-1) for s in group_states])


def _unpack(
    flat: torch.Tensor, group: list[torch.Tensor], group_states: list[torch.Tensor], header: int
) -> None:
    """Write a summed :func:`_pack` tensor back, divided by the world size.

    The gradients become views of ``flat`` (a fresh tensor every step: nothing else writes it).
    """
    flat.div_(dist.get_world_size())
    sizes = [header + len(group)] + [p.numel() for p in group] + [s.numel() for s in group_states]
    flags, *chunks = torch.split(flat, sizes)
    for p, chunk, flag in zip(group, chunks, flags[header:].tolist(), strict=False):
        p.grad = chunk.view_as(p) if flag > 0 else None
    with torch.no_grad():
        for s, chunk in zip(group_states, chunks[len(group) :], strict=True):
            s.copy_(chunk.view_as(s))


def _all_reduce_mean(params: list[torch.Tensor], states: list[torch.Tensor]) -> None:
    """Average ``params``' gradients and the ``states`` in place: one all-reduce per group.

    Per (device, dtype) one flat tensor holds the gradients (zeros where missing), one
    has-gradient flag per parameter, and the states. A parameter without a gradient on some
    ranks counts as zero there; without one on every rank it keeps ``grad = None``.
    """
    for group, group_states in _packed_groups(params, states):
        flat = _pack(group, group_states, [])
        _all_reduce(flat)
        _unpack(flat, group, group_states, 0)


def all_reduce_gradients(parameters: Iterable[torch.Tensor]) -> None:
    """Average ``.grad`` across ranks, in one all-reduce per (device, dtype).

    Pass the parameters in the same order on every rank (``module.parameters()`` is). A
    parameter without a gradient on some ranks counts as zero there; one without a gradient
    on every rank keeps ``grad = None``. Running statistics still waiting for an average
    (see :func:`average_running_state`) go into the same all-reduce. No-op without
    ``torch.distributed``.
    """
    params = list(parameters)
    if is_distributed() and (params or _pending):
        _all_reduce_mean(params, _take_pending())


def _broadcast(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values (coalesced per dtype)."""
    for _, indices in _groups(tensors).items():
        group = [tensors[i] for i in indices]
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dist.broadcast(flat, src)
        with torch.no_grad():
            for t, chunk in zip(group, torch.split(flat, [t.numel() for t in group]), strict=True):
                t.copy_(chunk.view_as(t))


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s parameters and buffers (no-op without distributed)."""
    if is_distributed():
        _broadcast(list(module.parameters()) + list(module.buffers()), src)


def _layout(names: list[str], params: list[torch.Tensor], states: list[torch.Tensor]) -> tuple:
    """What fixes the sizes and meaning of a step's all-reduce: names, shapes, dtypes."""
    return (
        tuple((n, p.shape, p.dtype, p.device.type) for n, p in zip(names, params, strict=True)),
        tuple((s.shape, s.dtype, s.device.type) for s in states),
    )


def _check_same_layout(layout: tuple, params: list, states: list, new: list) -> None:
    """ValueError on every rank if the ranks are about to step different parameters.

    A mismatch would make the next all-reduce abort (gloo) or mix unrelated tensors; one small
    all-gather of (count, elements, CRC-32 of the layout in two 16-bit halves, count and
    elements of the pending running statistics, elements of the parameters seen for the first
    time) rules it out.
    """
    digest = zlib.crc32(repr(layout).encode())
    device = (params or states)[0].device
    local = torch.tensor(
        [
            len(params),
            sum(p.numel() for p in params),
            digest >> 16,
            digest & 0xFFFF,  # each half exact in float32
            len(states),
            sum(s.numel() for s in states),
            sum(p.numel() for p in new),
        ],
        dtype=torch.float64 if device.type == "cpu" else torch.float32,
        device=device,
    )
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise ValueError(
            "DistributedOptimizer: the ranks step different parameters (count, elements, layout "
            "digest (2), running statistics, their elements, new elements per rank: "
            f"{[g.tolist() for g in gathered]}); every rank must run the same model and guide"
        )


def _flat_sizes(params: list[torch.Tensor], states: list[torch.Tensor]) -> list[tuple]:
    """(elements, dtype, device) of each flat tensor :func:`_all_reduce_mean` all-reduces."""
    return [
        (sum(t.numel() for t in group + group_states) + len(group), like.dtype, like.device)
        for group, group_states in _packed_groups(params, states)
        for like in [(group or group_states)[0]]
    ]


def _all_reduce_mean_as_checked(
    sizes: list[tuple], params: list[torch.Tensor], states: list[torch.Tensor], ready: bool
) -> bool:
    """Average as :func:`_all_reduce_mean`, in all-reduces of the checked step's ``sizes``.

    ``sizes`` (:func:`_flat_sizes` of the last checked step) agree across ranks, so these
    all-reduces match whatever this step holds. The first one leads with a flag, 1 on a rank
    that is not ``ready`` (its step differs from the checked one): if any rank raised it,
    nothing is written back and every rank returns False (and checks afresh).
    """
    groups = _packed_groups(params, states) if ready else None
    for index, (size, dtype, device) in enumerate(sizes):
        header = [0.0 if ready else 1.0] if index == 0 else []
        if ready:
            flat = _pack(*groups[index], header)
        else:
            flat = torch.zeros(size + len(header), dtype=dtype, device=device)
            flat[0] = 1.0
        _all_reduce(flat)
        if index == 0 and flat[0] > 0:
            return False
        _unpack(flat, *groups[index], len(header))
    return True


class DistributedOptimizer(PyroOptim):
    """A :class:`~pyro.optim.PyroOptim` that keeps every rank's parameters identical.

    The ``torch.distributed`` counterpart of :class:`pyro.optim.HorovodOptimizer`: at each
    step all gradients are averaged across ranks in one all-reduce per dtype that also carries
    the running statistics the loss updated (:func:`average_running_state`), then the wrapped
    optimizer steps on each rank. Parameters are processed in name order, the same on every
    rank. Without ``torch.distributed`` it is the wrapped optimizer.

    The first step, and any step whose parameters, running statistics or first-seen
    parameters differ from the previous step's on some rank, is checked first: one small
    all-gather compares every rank's names, shapes and dtypes (a ``ValueError`` on every rank
    if they differ, instead of an aborted or mismatched all-reduce), then the parameters seen
    for the first time are broadcast from rank 0 (so lazily and randomly initialized
    parameters agree). The other steps need no check: their all-reduce has the checked step's
    sizes on every rank by construction and leads with a flag by which a rank whose step
    changed sends every rank back to the checked path. So a training step costs one
    collective.

    The first step's gradient is computed on each rank's own initial values; seed every rank
    identically while building the model (``pyro.set_rng_seed``) and call
    :func:`seed_per_rank` just before training to make that step exact too.

    :param pyro_optim: the optimizer to wrap, e.g. ``pyro.optim.Adam({"lr": 1e-3})``.
    """

    def __init__(self, pyro_optim: PyroOptim):
        if not isinstance(pyro_optim, PyroOptim):
            raise ValueError(
                "pyro_optim must be a pyro.optim.PyroOptim (e.g. pyro.optim.Adam({'lr': 1e-3})), "
                f"got {type(pyro_optim).__name__}"
            )
        super().__init__(
            pyro_optim.pt_optim_constructor, pyro_optim.pt_optim_args, pyro_optim.pt_clip_args
        )
        _optimizers.add(self)  # from now on running statistics wait for a step (one all-reduce)
        # the last checked step: its layout and the flat sizes of its all-reduces
        self._checked: tuple | None = None

    def __call__(self, params, *args, **kwargs) -> None:
        store = pyro.get_param_store()
        names_and_params = sorted((store.param_name(p), p) for p in params)
        params = [p for _, p in names_and_params]
        states = _take_pending()  # the loss's running statistics: in the gradients' all-reduce
        if is_distributed() and (params or states):
            self._average([n for n, _ in names_and_params], params, states)
        super().__call__(params, *args, **kwargs)

    def _average(self, names: list[str], params: list, states: list) -> None:
        """All-reduce the gradients and running statistics; check and broadcast when needed."""
        layout = _layout(names, params, states)
        new = [p for p in params if p not in self.optim_objs]
        if self._checked is not None:
            checked_layout, sizes = self._checked
            ready = layout == checked_layout and not new
            if _all_reduce_mean_as_checked(sizes, params, states, ready):
                return
        _check_same_layout(layout, params, states, new)
        if new:
            _broadcast(new, src=0)
        _all_reduce_mean(params, states)
        self._checked = layout, _flat_sizes(params, states)


def _attribute_name(store_name: str) -> str:
    """A ``torch.nn.Module`` attribute name for a param-store name (no dots)."""
    return re.sub(r"\W", "_", store_name)


class EstimatorELBOModule(ELBOModule):
    """An ``ELBOModule`` that owns the estimator's state: what ``elbo(model, guide)`` returns.

    Pyro's ``ELBOModule`` sees only the parameters of ``model`` and ``guide``; our
    estimators keep their state in the param store. Here every call runs the estimator inside
    a param store of its own (``ParamStoreDict.scope``), and after the call every new entry
    is adopted: learned state (REBAR/RELAX η, log-temperature, the RELAX network, and any
    plain ``pyro.param`` of a function model/guide) as parameters, running statistics
    (param-store entries hidden from optimizers) as buffers, under the submodule
    ``estimator_state`` with dots replaced by ``_`` (``reparam_ext.z.eta`` →
    ``estimator_state.reparam_ext_z_eta``). So ``parameters()``, ``state_dict()``,
    ``load_state_dict()``, ``torch.optim`` and ``DistributedDataParallel`` see all of it, and
    the global param store is left untouched.

    State is created lazily: call the module once (as for any ``ELBOModule`` with lazily
    initialized guides) before building the optimizer or loading a ``state_dict``; that first
    call's loss is not meant for ``backward()``.
    """

    def __init__(self, model, guide, elbo):
        super().__init__(model, guide, elbo)
        self.estimator_state = torch.nn.Module()
        self._store_state: dict = {"params": {}, "constraints": {}}
        self._store_names: dict[str, str] = {}

    def forward(self, *args, **kwargs):
        store = pyro.get_param_store()
        states = []
        token = _collected.set(states)  # this call's running statistics: one all-reduce below
        try:
            with poutine.trace(param_only=True) as capture:
                with store.scope(state=self._store_state):
                    loss = self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)
        finally:
            _collected.reset(token)
        if is_distributed() and states:
            _all_reduce_mean([], list({id(s): s for s in states}.values()))
        self._adopt(set(capture.trace.nodes))
        return loss

    def _adopt(self, learned_names: set[str]) -> None:
        own = {
            id(p)
            for m in (self.model, self.guide)
            if isinstance(m, torch.nn.Module)
            for p in m.parameters()
        }
        params = self._store_state["params"]
        state = self.estimator_state
        for name, tensor in params.items():
            attribute = _attribute_name(name)
            if self._store_names.setdefault(attribute, name) != name:
                raise ValueError(
                    f"param-store names {self._store_names[attribute]!r} and {name!r} map to the "
                    f"same module attribute {attribute!r}; rename one of them"
                )
            if id(tensor) in own or getattr(state, attribute, None) is tensor:
                continue
            if name in learned_names:
                if not isinstance(tensor, torch.nn.Parameter):
                    tensor = params[name] = torch.nn.Parameter(tensor.detach())
                state.register_parameter(attribute, tensor)
            else:
                tensor.requires_grad_(False)
                state.register_buffer(attribute, tensor)
