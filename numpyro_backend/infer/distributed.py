"""Data-parallel SVI on JAX: one jitted ``SVI.update`` over a device mesh (``jax.sharding``).

The minibatch is split along its plate dimension across the devices of a 1-D
:class:`~jax.sharding.Mesh`; the SVI state (parameters, optimizer state, the estimators'
running baselines, the PRNG key) is replicated. ``jax.jit`` then compiles *one* SPMD program
whose result is, by construction, the single-device program's: sums over the plate (the ELBO,
the gradients) become cross-device all-reduces, per-element terms stay on their device, the
noise of the whole batch comes from the one replicated key (a partitionable threefry), and
every running baseline is updated from the global batch. So the partition changes nothing but
speed, there is nothing to average by hand, and no ``pmap``. Across processes
(:func:`initialize`, ``jax.distributed``) the mesh spans every process's devices and the same
program runs everywhere; CPU collectives use gloo.

In a few lines (one process; ``--xla_force_host_platform_device_count=4`` for 4 CPU devices)::

    mesh = distributed.data_mesh()
    svi = SVI(model, guide, numpyro.optim.Adam(1e-3), loss=RELAX_ELBO())
    state = distributed.replicate(svi.init(key, distributed.shard_batch(first, mesh)), mesh)
    update = distributed.data_parallel_update(svi, mesh)
    for batch in batches:  # the whole minibatch; the model's plate has subsample_size=len(batch)
        state, loss = update(state, distributed.shard_batch(batch, mesh))
        float(loss)  # wait for the step (see data_parallel_update)

Across processes, call ``distributed.initialize(...)`` first, give ``shard_batch`` this
process's part of the minibatch (processes in rank order), and use the same key for
``svi.init`` everywhere.

The estimators are sharding-friendly: no host callbacks and no op that gathers the batch (their
only cross-element reductions are sums and the particle-axis means).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "data_mesh",
    "data_parallel_update",
    "initialize",
    "pin_to_cpu",
    "replicate",
    "shard_batch",
]


def initialize(
    coordinator_address: str,
    *,
    num_processes: int,
    process_id: int,
    timeout: float = 60.0,
    pin_cpu: bool = False,
) -> None:
    """Join the other processes: ``jax.distributed.initialize`` (call before any JAX work).

    :param str coordinator_address: ``host:port`` of process 0's coordination service; the
        next port (``port + 1``) serves a first meeting that checks every process arrives
        with the same ``num_processes`` and its own ``process_id``.
    :param int num_processes: number of processes.
    :param int process_id: this process's index, in ``[0, num_processes)``.
    :param float timeout: seconds to wait for every process to connect before raising,
        instead of hanging.
    :param bool pin_cpu: give this process one CPU core of its own (one worker per core): pin
        all its threads, and those XLA starts later, to core ``process_id mod (number of cores
        it may use)`` (``os.sched_setaffinity``, Linux). Default False. (The Pyro backend's
        ``initialize`` also polls its own all-reduces then; XLA's collectives are its own.)
    """
    host, sep, port = coordinator_address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"coordinator_address must be 'host:port', got {coordinator_address!r}")
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be an integer >= 1, got {num_processes!r}")
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if pin_cpu:  # before JAX starts its threads: they inherit the core
        pin_to_cpu(process_id)
    where = f"process {process_id} of {num_processes} at {coordinator_address}"
    try:
        if num_processes > 1:
            _rendezvous(host, int(port) + 1, num_processes, process_id, timeout)
        jax.distributed.initialize(
            coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=max(1, math.ceil(timeout)),
        )
    except Exception as error:  # one line instead of a hang or a stack trace
        message = " ".join(str(error).split())[:300]
        raise RuntimeError(f"{where} could not join (timeout {timeout} s): {message}") from None


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


def _rendezvous(host: str, port: int, num_processes: int, process_id: int, timeout: float):
    """Meet every process on a plain TCP socket (``port``: the coordinator's port + 1) first.

    JAX's coordination service ends a process with a fatal error and a C++ stack trace when
    another never arrives; meeting here first turns that into an exception within ``timeout``
    and also catches processes started with different ``num_processes`` or the same id.
    """
    deadline = time.monotonic() + timeout
    if process_id == 0:
        return _host_rendezvous(host, port, num_processes, deadline)
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=1.0)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError("process 0 was not reachable") from None
            time.sleep(0.05)
    with conn:
        conn.settimeout(max(deadline - time.monotonic(), 0.0) + 5.0)  # process 0 answers first
        conn.sendall(f"{num_processes} {process_id}\n".encode())
        with conn.makefile() as stream:
            reply = stream.readline().strip()
    if reply != "ok":
        raise ValueError(reply or "process 0 closed the connection")


def _host_rendezvous(host: str, port: int, num_processes: int, deadline: float) -> None:
    """Process 0: wait for the others, check what they were started with, answer each."""
    with socket.create_server((host, port)) as server:
        peers, seen, problem = [], {0}, None
        try:
            while len(peers) < num_processes - 1:
                server.settimeout(max(deadline - time.monotonic(), 1e-3))
                conn, _ = server.accept()
                peers.append(conn)
                conn.settimeout(max(deadline - time.monotonic(), 1e-3))
                with conn.makefile() as stream:
                    count, peer_id = map(int, stream.readline().split())
                if count != num_processes or peer_id in seen:
                    problem = (
                        f"a process started with num_processes={count}, process_id={peer_id} "
                        f"(process 0: num_processes={num_processes}; ids must be distinct)"
                    )
                    break
                seen.add(peer_id)
        except TimeoutError:
            problem = f"{len(seen)} of {num_processes} processes arrived"
        for conn in peers:  # every connected peer learns the outcome
            with conn:
                try:
                    conn.sendall(f"{problem or 'ok'}\n".encode())
                except OSError:
                    pass
    if problem:
        raise ValueError(problem)


def data_mesh(devices: Sequence | None = None, *, axis_name: str = "data") -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must hold at least one device")
    return Mesh(np.array(devices), (axis_name,))


def _put(value, sharding: NamedSharding):
    """``value`` as a global array; across processes ``value`` is this process's part."""
    if jax.process_count() == 1:
        return jax.device_put(value, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(value))


def shard_batch(batch, mesh: Mesh, *, axis: int = 0):
    """Every array of the pytree ``batch`` split along ``axis`` (its plate dim) over ``mesh``.

    In one process pass the whole minibatch; across processes each passes its own part, and
    the global batch is the parts in process order. The split length must be divisible by the
    number of devices (of this process, across processes).
    """
    axis_name = mesh.axis_names[0]
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)

    def put(leaf):
        ndim = np.ndim(leaf)
        dim = axis if axis >= 0 else ndim + axis
        if not 0 <= dim < ndim:
            raise ValueError(f"axis must be in [-{ndim}, {ndim}) for a batch array of rank {ndim}")
        size = np.shape(leaf)[dim]
        if size % local_devices:
            raise ValueError(
                f"batch: the length {size} of axis {axis} must be a multiple of the "
                f"{local_devices} devices it is split over"
            )
        spec = PartitionSpec(*([None] * dim), axis_name)
        return _put(leaf, NamedSharding(mesh, spec))

    return jax.tree.map(put, batch)


def replicate(tree, mesh: Mesh):
    """Every array of ``tree`` (e.g. an ``SVIState``) replicated on every device of ``mesh``.

    Across processes every process must pass the same values (``svi.init`` with the same key).
    """
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda leaf: _put(leaf, sharding), tree)


def data_parallel_update(svi, mesh: Mesh) -> Callable:
    """``svi.update`` compiled once for a replicated state and batches from :func:`shard_batch`.

    Returns ``update(svi_state, *args, **kwargs) -> (svi_state, loss)``; the new state and the
    loss come back replicated, so the next call has the same input shardings and reuses the
    compiled program.

    Wait for a step's result every few steps (``float(loss)`` or ``loss.block_until_ready()``)
    on forced host CPU devices: dispatching many steps without waiting can deadlock XLA:CPU's
    in-process collectives. Measured with 2 host devices on 2 cores (jax 0.10.2, a busy
    machine): 120 steps queued at once stopped in an all-gather whose second participant
    never arrived, in 3 of 3 runs (XLA aborts the process after its 40 s rendezvous timeout;
    with ``--xla_cpu_collective_call_terminate_timeout_seconds=600`` it stayed stuck for
    minutes), while waiting after every 1, 4, 30 or 40 steps never stalled (14 blocks of 120
    steps). ``jax_cpu_enable_async_dispatch=False`` does not prevent it. The cause inside XLA
    is not pinned down (a participant's execution is never scheduled).
    """
    return jax.jit(svi.update, out_shardings=NamedSharding(mesh, PartitionSpec()))
