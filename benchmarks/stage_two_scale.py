"""Stage two at scale: time and peak memory of ``popinfer fit-population`` for
N = 10³, 10⁴, 10⁵ objects at K = 1000 draws.

The samples files hold exact posterior draws of normal objects (θ_n from a
N(0, 1) population, y_n ~ N(θ_n, σ_n), interim prior uniform(-20, 20)), written
in object chunks. Each fit is its own process (the installed ``popinfer``
command), and its peak resident set size is that process's own ``ru_maxrss``
(``os.wait4``). The same settings run at every N, with a fixed, short chain
(``--max-steps``), so the times compare the work per object; a full run costs
about (steps to convergence / --max-steps) times more in the sampling part.

"The draws it needs" are θ (N, K, P) and ln p0 (N, K) in float64: 16 kB per
object at K = 1000, P = 1. The fixed cost (interpreter, numpy, scipy, h5py,
emcee) is measured by the same command on N = 100 objects.

    python benchmarks/stage_two_scale.py                       # 10³, 10⁴, 10⁵
    python benchmarks/stage_two_scale.py --objects 1000 10000  # a subset
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from scipy import stats

from popinfer.io.hdf5 import write_root_attributes
from popinfer.io.samples import create_layout, write_rows

CHUNK = 2000
INTERIM = (-20.0, 20.0)


def make_samples(path, n_objects, n_draws, seed):
    """A samples file of ``n_objects`` normal objects with exact posterior draws."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as handle:
        write_root_attributes(handle, "samples", "benchmarks/stage_two_scale.py", seed, {
            "model": "normal", "parameters": ["theta"],
            "interim_prior": {"theta": f"uniform({INTERIM[0]:g}, {INTERIM[1]:g})"},
            "settings": {"draws": n_draws, "benchmark": "exact posterior draws"}})
        create_layout(handle, n_objects, n_draws, ["theta"], [f"obj{n:06d}" for n in range(n_objects)])
        for lo in range(0, n_objects, CHUNK):
            n = min(CHUNK, n_objects - lo)
            truth = rng.normal(size=n)
            sigma = rng.uniform(0.5, 1.5, n)
            y = truth + sigma * rng.normal(size=n)
            theta = y[:, None] + sigma[:, None] * rng.normal(size=(n, n_draws))
            write_rows(handle, lo, {
                "samples": theta[..., None],
                "log_interim_prior": np.full((n, n_draws, 1), -np.log(INTERIM[1] - INTERIM[0])),
                "log_likelihood": stats.norm.logpdf(y[:, None], theta, sigma[:, None]),
                "acceptance_fraction": np.full(n, 0.5), "autocorr_time": np.ones((n, 1)),
                "n_steps": np.full(n, n_draws), "converged": np.ones(n, bool),
                "effective_draws": np.full(n, float(n_draws))})


def run(samples, output, args):
    """(wall seconds, peak RSS in bytes) of one fit-population process."""
    popinfer = shutil.which("popinfer") or sys.exit("the popinfer command is not installed (pip install -e .)")
    command = [popinfer, "fit-population", str(samples), "-o", str(output), "--population", "normal",
               "--hyperprior", "mu=normal(0, 5)", "--hyperprior", "sigma=halfnormal(5)",
               "--max-steps", str(args.steps), "--walkers", str(args.walkers), "--samples", str(args.samples),
               "--reweighted", str(args.reweighted), "--seed", "1", "--quiet", "--overwrite"]
    began = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - began
    stderr = process.stderr.read().decode()
    process.stderr.close()
    # 0 success; the short chain warns "did not converge", which is expected here.
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"fit-population failed:\n{stderr}")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kB on Linux
    return seconds, usage.ru_maxrss * scale


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=50, help="--max-steps of every run")
    parser.add_argument("--walkers", type=int, default=32)
    parser.add_argument("--samples", type=int, default=320, help="--samples of every run")
    parser.add_argument("--reweighted", type=int, default=100, help="--reweighted of every run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="where the samples files go (default: a temporary directory)")
    args = parser.parse_args()
    mib = 2.0**20
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        print(f"fit-population, normal population, K = {args.draws}, W = {args.walkers}, {args.steps} steps, "
              f"S = {args.samples}, R = {args.reweighted}; {os.cpu_count()} cores")
        base_file = work / "base.h5"
        make_samples(base_file, 100, args.draws, args.seed)
        _, baseline = run(base_file, work / "base-pop.h5", args)
        print(f"fixed cost (N = 100): peak RSS {baseline / mib:.0f} MiB")
        print(f"{'N':>8} {'draws MiB':>10} {'seconds':>8} {'µs/object':>10} {'peak MiB':>9} "
              f"{'(peak-fixed)/draws':>19} {'peak/draws':>10}")
        for n_objects in args.objects:
            samples = work / f"samples-{n_objects}.h5"
            make_samples(samples, n_objects, args.draws, args.seed)
            seconds, peak = run(samples, work / f"pop-{n_objects}.h5", args)
            needed = n_objects * args.draws * 2 * 8
            print(f"{n_objects:>8} {needed / mib:>10.0f} {seconds:>8.1f} {1e6 * seconds / n_objects:>10.0f} "
                  f"{peak / mib:>9.0f} {(peak - baseline) / needed:>19.2f} {peak / needed:>10.2f}", flush=True)
            samples.unlink()


if __name__ == "__main__":
    main()
