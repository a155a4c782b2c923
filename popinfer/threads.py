"""BLAS threads during stage two's kernel.

The kernel runs its chunks on its own thread pool; OpenBLAS's threads inside each
chunk's matrix product only compete with it (and with other processes): on a busy
2-core machine a (32 × 3) @ (3 × 16000) product took 30 ms with BLAS threads and
0.3 ms without. ``single_threaded_blas`` holds BLAS to one thread while stage two
evaluates ln L̂ (threadpoolctl, when installed; otherwise nothing changes).
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def single_threaded_blas():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional helper: without it BLAS keeps its own threads
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
