"""Where stage one's batches run: in this process, in a pool of local processes, or on a
Dask cluster. Every executor yields the results in batch order to the single writer,
and a batch's result depends only on its :class:`BatchTask` (data and seed stream),
never on where it ran."""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import multiprocessing
import sys
from dataclasses import dataclass

import numpy as np

from ..errors import OutputError, UsageError
from .sampler import sample_batch


@dataclass
class BatchTask:
    """One batch of objects to sample (picklable, for worker processes): the arguments of
    :func:`~popinfer.individuals.sampler.sample_batch`, with ``seed`` the batch's own
    :class:`numpy.random.SeedSequence` in place of its generator."""

    model: object
    columns: dict
    starts: np.ndarray
    ids: list
    priors: list
    names: list
    fixed: dict
    n_draws: int
    n_walkers: int
    max_steps: int
    seed: object

    def run(self, on_finished=None):
        """:func:`~popinfer.individuals.sampler.sample_batch` on this batch."""
        return sample_batch(self.model, self.columns, self.starts, self.ids, self.priors, self.names, self.fixed,
                            self.n_draws, self.n_walkers, self.max_steps, np.random.default_rng(self.seed),
                            on_finished=on_finished)


def run_batch(task):
    """Sample one batch (top level, so worker processes can run it).

    A worker's stdout never carries data: a user model's ``print`` goes to stderr (the
    parent's stdout may be the HDF5 stream of ``-o -``).
    """
    with contextlib.redirect_stdout(sys.stderr):
        return task.run()


def _dask_client(scheduler):
    """A dask.distributed client for ``tcp://HOST:PORT`` or ``local:N`` (and the cluster it started)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise OutputError("--scheduler needs dask.distributed, which is not installed. Install the dask extra: "
                          "pip install 'popinfer[dask]'.") from None
    if scheduler.startswith("local:"):
        try:
            n_workers = int(scheduler.split(":", 1)[1])
        except ValueError:
            n_workers = 0
        if n_workers < 1:
            raise UsageError(f"--scheduler {scheduler}: expected local:N with N >= 1 worker processes.", "--scheduler")
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    from distributed.comm import get_address_host_port
    from distributed.comm.registry import backends

    scheme = scheduler.split("://", 1)[0] if "://" in scheduler else "tcp"
    try:
        if scheme not in backends:
            raise ValueError(f"unknown address scheme {scheme!r}")
        if scheme in ("tcp", "tls", "ws", "wss"):  # others (ucx, inproc) have no host:port form to check
            get_address_host_port(scheduler)  # the address's form, read as Dask reads it
    except ValueError as exc:
        raise UsageError(f"--scheduler {scheduler}: not a Dask scheduler address ({exc}); expected "
                         f"tcp://HOST:PORT, or local:N with N >= 1 worker processes.", "--scheduler") from None
    try:
        return Client(scheduler, timeout=10), None
    except (OSError, TimeoutError) as exc:
        raise OutputError(f"Cannot reach the Dask scheduler at {scheduler}: {exc}. Is it running?") from None


def _dask_results_in_order(task, indices, scheduler, bar):
    """Batches on a Dask cluster; results come back to this (single) writer in batch order.

    A lost worker's batches are recomputed by Dask; a batch's result depends only on
    its data and seed stream, so the file does not depend on where it ran.
    """
    client, cluster = _dask_client(scheduler)
    try:
        in_flight = max(2, 2 * sum(client.nthreads().values()))
        queue, pending = iter(indices), []
        for i in queue:
            pending.append((i, client.submit(run_batch, task(i), pure=False)))
            if len(pending) >= in_flight:
                break
        while pending:
            i, future = pending.pop(0)
            result = future.result()
            bar.update(len(result["n_steps"]))
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt, client.submit(run_batch, task(nxt), pure=False)))
            yield i, result
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def results_in_order(task, indices, workers, bar, scheduler=None):
    """Yield ``(i, result)`` in batch order, computing up to ``workers`` batches at once
    (or on a Dask cluster when ``scheduler`` is given)."""
    indices = list(indices)
    if scheduler:
        yield from _dask_results_in_order(task, indices, scheduler, bar)
        return
    if workers <= 1 or len(indices) <= 1:
        for i in indices:
            yield i, task(i).run(on_finished=bar.update)
        return
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = {}
        queue = iter(indices)
        done = {}
        next_to_yield = indices[0]
        try:
            for i in queue:
                pending[pool.submit(run_batch, task(i))] = i
                if len(pending) >= 2 * workers:
                    break
            while pending or done:
                if next_to_yield in done:
                    yield next_to_yield, done.pop(next_to_yield)
                    next_to_yield += 1
                    continue
                finished, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    done[i] = future.result()
                    bar.update(len(done[i]["n_steps"]))
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(run_batch, task(nxt))] = nxt
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
