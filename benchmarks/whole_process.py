"""Eight schools, both stages, each side as the whole process a user runs: popinfer against a
joint hierarchical NUTS fit, start-up and imports included.

Every fit is its own Python process (wall time around it, CPU time from the child's rusage,
all threads), run one after another for each seed so that every side sees the same load:

- ``popinfer CLI``: the quick start's two commands (``popinfer fit-individuals`` to a samples
  file, ``popinfer fit-population`` to a population file; defaults otherwise: K = 4000, emcee,
  32 walkers, S = 4000, R = 1000), as ``python -m popinfer`` processes one after the other;
  ``popinfer CLI pipe``: the quick start's pipeline (``fit-individuals ... -o - | fit-population -``),
  both processes at once;
- ``popinfer API``: the same two calls (``fit_individuals``, ``fit_population``) in one process
  (not run unless asked for: ``popinfer API nuts`` with ``sampler="nuts"``, ``popinfer API de`` with
  ``moves="de"``); ``popinfer CLI single`` and ``popinfer API de single``: those with the weights'
  exponentials in float32 (``--exp-precision single``);
- ``nutpie``: a script that imports nutpie, builds the joint non-centred model
  (``joint_models.joint_nutpie``: the joint ln p and its gradient in numpy), samples 4 chains ×
  (1000 tuning + 1000 kept) draws with nutpie's default cores (as many chains at once as there are
  cores), prints the means; ``nutpie 1 core``: the same, one chain after another;
- ``NumPyro``: the same with NumPyro's NUTS (JAX, float64, compilation included, chains one
  after another).

Same hyperpriors everywhere (mu ~ N(0, 5), tau ~ HalfCauchy(5)); popinfer's stage-one seed is
SEED and its stage-two seed SEED + 1, the joint fits' seed SEED. Errors of E[mu], E[tau] are
against the exact posterior (``samplers.exact_moments``), in posterior sd; the summary gives
each fit's mean and spread (sample sd) over the seeds and the root mean square error.

    python benchmarks/whole_process.py                          # seeds 1-5, NumPyro for seed 1 only
    python benchmarks/whole_process.py --seeds 1 2 --numpyro-seeds
"""

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))
from joint_models import eight_schools  # noqa: E402
from samplers import HYPERPRIORS, exact_moments  # noqa: E402

DATA = ROOT / "sample_data" / "eight_schools.csv"
API = f"""
import sys, warnings
import popinfer
warnings.simplefilter("ignore")
samples = popinfer.fit_individuals({str(DATA)!r}, "normal", seed=int(sys.argv[1]), progress=False)
options = {{"moves": sys.argv[3]}} if len(sys.argv) > 3 and sys.argv[3] != "-" else {{}}
if len(sys.argv) > 4:
    options["exp_precision"] = sys.argv[4]
result = popinfer.fit_population(samples, "normal", hyperpriors={HYPERPRIORS!r}, seed=int(sys.argv[1]) + 1,
                                 sampler=sys.argv[2], progress=False, **options)
print(result.hyper("mu").mean(), result.hyper("sigma").mean())
"""
JOINT = f"""
import sys
sys.path.insert(0, {str(BENCHMARKS)!r})
from joint_models import eight_schools, joint_{{name}}
mu, tau = joint_{{name}}(*eight_schools(), int(sys.argv[1]){{options}})
print(mu.mean(), tau.mean())
"""
# The joint fits: (function in joint_models, its extra arguments).
JOINT_FITS = {"nutpie": ("nutpie", ", cores=None"), "nutpie 1 core": ("nutpie", ", cores=1"),
              "NumPyro": ("numpyro", "")}
FITS = ["popinfer CLI", "popinfer CLI pipe", "popinfer CLI single", "popinfer API", "popinfer API nuts",
        "popinfer API de", "popinfer API de single", *JOINT_FITS]
DEFAULT_FITS = [fit for fit in FITS if fit not in ("popinfer CLI single", "popinfer API nuts", "popinfer API de",
                                                   "popinfer API de single")]


def timed(commands):
    """Run ``commands`` one after another, each as its own process (a string: a shell pipeline);
    (wall s, CPU s of the processes and their threads, the last one's stdout)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    wall, before = 0.0, os.times()
    for command in commands:
        began = time.perf_counter()
        process = subprocess.run(command, capture_output=True, env=env, cwd=ROOT, shell=isinstance(command, str))
        wall += time.perf_counter() - began
        if process.returncode != 0:
            sys.exit(f"{command} failed:\n{process.stderr.decode()}")
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, process.stdout.decode()


def run_fit(fit, seed, work):
    """(wall, CPU, E[mu], E[tau]) of one fit."""
    python = sys.executable
    if fit.startswith("popinfer CLI"):
        samples, population = work / f"eight-{seed}.h5", work / f"eight-{seed}-pop.h5"
        hyper = [arg for prior in HYPERPRIORS for arg in ("--hyperprior", prior)]
        stage_one = [python, "-m", "popinfer", "fit-individuals", str(DATA), "--model", "normal", "--seed", str(seed),
                     "--quiet", "--overwrite", "-o"]
        stage_two = [python, "-m", "popinfer", "fit-population", "-o", str(population), "--population", "normal",
                     *hyper, "--seed", str(seed + 1), "--overwrite", "--quiet"]
        if fit.endswith("single"):
            stage_two += ["--exp-precision", "single"]
        if fit.endswith("pipe"):  # the quick start's pipeline: both processes at once, the draws through a pipe
            wall, cpu, _ = timed([f"{shlex.join(stage_one + ['-'])} | {shlex.join(stage_two + ['-'])}"])
        else:
            wall, cpu, _ = timed([stage_one + [str(samples)], stage_two + [str(samples)]])
        import popinfer

        result = popinfer.read_population(population)
        return wall, cpu, float(result.hyper("mu").mean()), float(result.hyper("sigma").mean())
    if fit.startswith("popinfer API"):
        extra = ["de"] if " de" in fit else []  # emcee with --moves de
        if fit.endswith("single"):
            extra = (extra or ["-"]) + ["single"]  # fit_population(exp_precision="single")
        wall, cpu, out = timed([[python, "-c", API, str(seed), "nuts" if fit.endswith("nuts") else "emcee", *extra]])
    else:
        name, options = JOINT_FITS[fit]
        wall, cpu, out = timed([[python, "-c", JOINT.format(name=name, options=options), str(seed)]])
    mu, tau = (float(value) for value in out.split()[-2:])
    return wall, cpu, mu, tau


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--fits", nargs="+", choices=FITS, default=DEFAULT_FITS)
    parser.add_argument("--numpyro-seeds", type=int, nargs="*", default=[1],
                        help="seeds NumPyro runs for (its process takes ~10x the others')")
    args = parser.parse_args()
    exact = exact_moments(*eight_schools())
    print(f"exact E[mu] = {exact['mu'][0]:.4f} (sd {exact['mu'][1]:.4f}), "
          f"E[tau] = {exact['sigma'][0]:.4f} (sd {exact['sigma'][1]:.4f}); {os.cpu_count()} cores")
    print(f"{'fit':22s} {'seed':>4s} {'wall_s':>7s} {'cpu_s':>7s} {'E[mu]':>7s} {'E[tau]':>7s} {'err_mu/sd':>9s} "
          f"{'err_tau/sd':>10s}  load (1, 5, 15 min)")
    rows = {fit: [] for fit in args.fits}
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            for fit in args.fits:
                if fit == "NumPyro" and seed not in args.numpyro_seeds:
                    continue
                wall, cpu, mu, tau = run_fit(fit, seed, Path(work))
                errors = ((mu - exact["mu"][0]) / exact["mu"][1], (tau - exact["sigma"][0]) / exact["sigma"][1])
                rows[fit].append((wall, cpu) + errors)
                load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
                print(f"{fit:22s} {seed:4d} {wall:7.2f} {cpu:7.2f} {mu:7.3f} {tau:7.3f} {errors[0]:+9.3f} "
                      f"{errors[1]:+10.3f}  {load}", flush=True)
    print("\nover seeds: mean ± sd (wall, CPU); errors in posterior sd: mean ± sd, RMS")
    for fit, values in rows.items():
        if not values:
            continue
        values = np.array(values)
        spread = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(4)
        rms = np.sqrt(np.mean(values[:, 2:] ** 2, axis=0))
        print(f"{fit:22s} n={len(values)}  wall {values[:, 0].mean():5.2f} ± {spread[0]:.2f} s  "
              f"CPU {values[:, 1].mean():5.2f} ± {spread[1]:.2f} s  "
              f"err mu {values[:, 2].mean():+.3f} ± {spread[2]:.3f} (RMS {rms[0]:.3f})  "
              f"err tau {values[:, 3].mean():+.3f} ± {spread[3]:.3f} (RMS {rms[1]:.3f})")


if __name__ == "__main__":
    main()
