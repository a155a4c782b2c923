"""Stage one: fit every object under the interim prior, in batches, into a samples file."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import warnings

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..distributions import parse_distribution, parse_options, parse_priors, parse_value
from ..errors import UsageError
from ..io.files import check_output, release, reserves_stdout, work_directory
from ..io.samples import DIAGNOSTICS, Checkpoint, Samples
from ..blocks import object_blocks
from ..mcmc import MIN_AUTOCORR_TIMES, ConvergenceWarning, InterimEdgeWarning, minimum_steps
from ..models import get_model
from ..seeds import resolve_seed
from ..table import read_table, table_from_frame
from ..user_functions import code_record
from .executors import BatchTask, results_in_order
from .sampler import buffer_capacity, required_autocorr_times

DEFAULT_WALKERS = 32
MAX_BATCH_SIZE = 1000
# A user model is called once per object, so batching gains it no speed; smaller
# batches checkpoint its (typically expensive) work more often.
MAX_USER_BATCH_SIZE = 100
BATCH_MEMORY_BYTES = 256 * 2**20


def resolve_priors(model, priors, fixed):
    """Interim priors of the sampled parameters: the model's defaults, overridden."""
    given = parse_priors(priors, model.parameters, fixed, "--prior", f"model {model.name!r}", "parameter")
    sampled = [p for p in model.parameters if p not in fixed]
    if not sampled:
        raise UsageError("Every parameter is fixed (--fix); nothing is left to sample.", "--fix")
    return {name: given.get(name) or parse_distribution(model.default_priors[name], f"default prior of {name}")
            for name in sampled}


def _batch_size(model, n_draws, n_walkers, n_dim):
    per_object = buffer_capacity(n_draws, n_walkers) * n_walkers * n_dim * 8
    cap = MAX_USER_BATCH_SIZE if model.calls_per_object else MAX_BATCH_SIZE
    return int(max(1, min(cap, BATCH_MEMORY_BYTES // per_object)))


def _digest(table, columns):
    hasher = hashlib.sha256()
    hasher.update(json.dumps(table.ids).encode())
    hasher.update(np.asarray(table.starts, dtype=np.int64).tobytes())
    for role in sorted(columns):
        hasher.update(role.encode())
        hasher.update(np.ascontiguousarray(columns[role]).tobytes())
    return hasher.hexdigest()


# The stack level of the user's call in stage one's warnings: warnings.warn ← _warn_* ←
# fit_individuals ← reserves_stdout's wrapper (io/files.py) ← the caller of fit_individuals.
CALLER = 4


def _warn_unconverged(ids, diagnostics, n_draws, n_walkers):
    required = required_autocorr_times(n_draws, n_walkers) * diagnostics["autocorr_time"].max(axis=1)
    short = diagnostics["n_steps"] < required
    few = np.flatnonzero(diagnostics["converged"] & short)
    if few.size:
        listed = ", ".join(f"{ids[i]!r} ({diagnostics['effective_draws'][i]:.0f})" for i in few[:10])
        more = f" and {few.size - 10} more" if few.size > 10 else ""
        warnings.warn(ConvergenceWarning(
            f"{few.size} object(s) reached --max-steps before the kept half of their chain held K = {n_draws} "
            f"effectively independent positions (effective draws among the K kept: {listed}{more}). Their "
            f"draws are valid but correlated, so stage two's ESS and Var[ln L̂] will be optimistic for them; "
            f"raise --max-steps or --walkers."), stacklevel=CALLER)
    bad = np.flatnonzero(~diagnostics["converged"])
    if not bad.size:
        return
    tau = diagnostics["autocorr_time"].max(axis=1)
    listed = ", ".join(
        f"{ids[i]!r} ({diagnostics['n_steps'][i]} steps, τ ≈ {tau[i]:.3g})" for i in bad[:10]
    )
    more = f" and {bad.size - 10} more" if bad.size > 10 else ""
    warnings.warn(
        ConvergenceWarning(
            f"{bad.size} of {len(ids)} object(s) did not reach {MIN_AUTOCORR_TIMES} autocorrelation times "
            f"within --max-steps: {listed}{more}. Their draws are kept but may be unreliable; raise "
            f"--max-steps, or check these objects' data and priors (multimodal or unconstrained posterior)."
        ),
        stacklevel=CALLER,
    )


EDGE_WIDTH = 0.1   # draws within this many of the object's posterior sds of the bound ...
EDGE_SHARE = 0.01  # ... making up this share of its draws: its posterior is cut off there


def _edge_shares(draws, bounds, ragged):
    """Per bound of ``bounds``, per object (rows of ``draws``; NaN padding left out where
    ``ragged``): the share of its draws within EDGE_WIDTH of its draws' sd of the bound. The
    draws never cross the bound: a normal posterior whose mean lies 2 (3) sds inside it puts about
    0.5 % (0.04 %) of its draws there, one cut off at its mean (a half-normal) about 4.8 %; the
    EDGE_SHARE threshold is crossed at about 1.7 sds."""
    shares = np.empty((len(bounds), len(draws)))
    for lo, hi in object_blocks(len(draws), draws.shape[1]):
        chunk = np.asarray(draws[lo:hi], dtype=float)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an object with one draw: sd 0
            sd = np.nanstd(chunk, axis=1) if ragged else chunk.std(axis=1)
            counts = np.isfinite(chunk).sum(axis=1) if ragged else np.full(len(chunk), chunk.shape[1])
            for i, bound in enumerate(bounds):
                near = (np.abs(chunk - bound) <= EDGE_WIDTH * sd[:, None]).sum(axis=1)
                shares[i, lo:hi] = near / np.maximum(counts, 1)
    return shares


def _warn_interim_edges(samples, prior_by_name, supports):
    """Warn of objects whose draws pile against a finite bound of their interim prior lying
    strictly inside the values the model's likelihood admits (``Model.supports``)."""
    found = {}  # object -> (share, parameter, bound) of its largest share
    for d, name in enumerate(samples.parameters):
        prior, natural = prior_by_name.get(name), supports.get(name)
        if prior is None or natural is None:
            continue
        low, high = prior.support
        bounds = [bound for bound, artificial in ((low, low > natural[0]), (high, high < natural[1]))
                  if artificial and np.isfinite(bound)]
        if not bounds:
            continue
        shares = _edge_shares(samples.samples[:, :, d], bounds, samples.draw_counts is not None)
        for i, bound in enumerate(bounds):
            for n in np.flatnonzero(shares[i] >= EDGE_SHARE):
                found[n] = max(found.get(n, (0.0,)), (shares[i, n], name, bound))
    if not found:
        return
    ranked = sorted(found.items(), key=lambda item: -item[1][0])
    listed = ", ".join(f"{samples.ids[n]!r} ({name} at {bound:g}: {share:.0%} of its draws)"
                       for n, (share, name, bound) in ranked[:10])
    more = f" and {len(ranked) - 10} more" if len(ranked) > 10 else ""
    names = sorted({name for _, name, _ in found.values()})
    warnings.warn(InterimEdgeWarning(
        f"{len(ranked)} object(s) have draws piled against a bound of the interim prior, which the "
        f"likelihood does not have, so the prior cuts off their posterior (the share of draws within "
        f"{EDGE_WIDTH:g} posterior sd of the bound): {listed}{more}. These draws, and everything fitted "
        f"from them, are truncated there: widen the interim prior of {', '.join(names)} (--prior NAME=DIST) "
        f"to cover the values the data allow. If the bound is physical (the parameter cannot lie beyond it), "
        f"the draws are right as they are; fit them with a population bounded there too (e.g. truncnormal)."),
        stacklevel=CALLER)


@reserves_stdout
def fit_individuals(data, model, output=None, *, priors=None, fixed=None, columns=None, id_column=None,
                    n_draws=4000, n_walkers=None, max_steps=20000, workers=1, seed=None, batch_size=None,
                    resume=False, overwrite=False, progress=True, command="", shard=None, scheduler=None,
                    interim_mixture=None, batches=None):
    """Fit every object on its own under the interim prior p0 (stage one).

    Parameters
    ----------
    data : str, Path or pandas.DataFrame
        CSV/TSV table (``-`` reads CSV from stdin), one row per measurement.
    model : str or popinfer.models.Model
        Built-in name (``normal``, ``binomial``, ``poisson``, ``linear``) or
        ``path/to/file.py:function`` / ``package.module:function``.
    output : str, optional
        Samples file to write (``-``: stdout). The run checkpoints into
        ``OUTPUT.partial`` batch by batch so that ``resume=True`` can continue it.
    priors : dict or list of "NAME=DIST", optional
        Interim prior p0 per parameter; the model's defaults otherwise.
    fixed : dict or list of "NAME=VALUE", optional
        Model parameters held fixed.
    columns : dict or list of "ROLE=NAME", optional
        Column names for the model's roles.
    id_column : str, optional
        Object id column (default: the first).
    n_draws : int
        K, posterior draws kept per object.
    n_walkers : int, optional
        W, emcee walkers per object (default max(32, 2D+2, K/25), rounded up to even).
    max_steps : int
        Cap on steps per object.
    workers : int
        Local processes running batches in parallel; results do not depend on it.
    seed : int, optional
        Seed of all randomness; drawn (and recorded) when omitted, and then taken
        from the checkpoint by ``resume``.
    batch_size : int, optional
        Objects sampled together (default from a 256 MiB memory budget, at most
        1000; 100 for user models).
    resume, overwrite, progress : bool
    command : str
        Provenance recorded in the file's ``command`` attribute.
    scheduler : str, optional
        Run the batches on a dask.distributed cluster: ``tcp://HOST:PORT`` or
        ``local:N`` (a LocalCluster of N worker processes). Results do not depend on it.
    shard : tuple of int, optional
        ``(i, n)``: fit only the i-th (1-based) of n deterministic slices of the
        batches, into a shard file that ``merge_shards`` joins with the others
        into the file an unsharded run would write.
    batches : tuple of int, optional
        ``(lo, hi)``: fit only batches lo to hi − 1 (0-based) of the run, as the run
        with all of them would (how ``refine --shard`` divides its refits; see
        :func:`batch_count`). The result holds those batches' objects.
    interim_mixture : popinfer.interim.MixtureSpec, optional
        Fit under the defensive mixture p0' = λ p0 + (1 − λ) q instead of p0 (what
        ``refine`` does). The result's ``log_interim_prior`` holds ln p0' (joint over
        the population's parameters, marked in ``joint_interim`` and, in a written
        file, ``/objects/joint_interim_prior``).

    Returns
    -------
    Samples
    """
    column_map = parse_options(columns, _parse_column, "--column")
    fixed = {k: float(v) for k, v in parse_options(fixed, parse_value, "--fix").items()}
    _check_counts(n_draws=n_draws, max_steps=max_steps, workers=workers, batch_size=batch_size)
    if output is not None:
        check_output(output, overwrite, inputs=[data])
        if resume and str(output) == "-":
            raise UsageError("--resume needs a file output: a run writing to stdout cannot be resumed.", "--resume")

    if isinstance(data, pd.DataFrame):
        table = table_from_frame(data, id_column)
    else:
        table = read_table(data, id_column)
    model = get_model(model, column_map, table.columns)
    prior_by_name = resolve_priors(model, priors, fixed)
    names = list(prior_by_name)
    model_columns = model.load_columns(table)
    model.check_fixed(fixed, model_columns)

    n_walkers = _walkers(n_walkers, len(names), n_draws, max_steps)
    if batch_size is None:
        batch_size = _batch_size(model, n_draws, n_walkers, len(names))
    if seed is None and resume and output is not None and str(output) != "-":
        seed = Checkpoint.recorded_seed(f"{output}.partial")  # the seed a run without --seed drew
    plan = RunPlan(table, model, model_columns, prior_by_name, fixed, n_draws, n_walkers, max_steps, batch_size,
                   resolve_seed(seed), shard, command, interim_mixture, batches)
    checkpoint, scratch, first_batch = _start_checkpoint(plan, output, resume, overwrite)
    samples = _run(plan, checkpoint, scratch, first_batch, output, overwrite, workers, progress, scheduler)
    _warn_unconverged(samples.ids, samples.diagnostics, n_draws, n_walkers)
    if interim_mixture is None:  # refine's refits: the mixture's density, checked by refine's own fit
        _warn_interim_edges(samples, prior_by_name, model.supports)
    return samples


def _walkers(n_walkers, n_dim, n_draws, max_steps):
    """W: the default, or the given number, checked (with --max-steps)."""
    if n_walkers is None:
        # With W = K/25 the two stopping requirements (50 τ, and K effectively
        # independent draws in the kept half) coincide.
        n_walkers = max(DEFAULT_WALKERS, 2 * n_dim + 2, 2 * math.ceil(n_draws / 50))
    if n_walkers < 2 * n_dim + 2 or n_walkers % 2:
        raise UsageError(
            f"--walkers {n_walkers}: need an even number of at least 2·D+2 = {2 * n_dim + 2} walkers for "
            f"D = {n_dim} sampled parameter(s).",
            "--walkers",
        )
    if max_steps < minimum_steps(n_draws, n_walkers):
        raise UsageError(
            f"--max-steps {max_steps} is too small: keeping {n_draws} draws with {n_walkers} walkers from "
            f"the second half of the chain needs at least {minimum_steps(n_draws, n_walkers)} steps.",
            "--max-steps",
        )
    return n_walkers


class RunPlan:
    """What stage one decided before sampling: the batches (object ranges and seed streams),
    the shard's share of them, the settings and provenance recorded in the file, and the
    run's fingerprint (what a resumed run or a shard must match)."""

    def __init__(self, table, model, model_columns, prior_by_name, fixed, n_draws, n_walkers, max_steps, batch_size,
                 seed, shard, command, interim_mixture=None, batches=None):
        self.table, self.model, self.model_columns, self.fixed = table, model, model_columns, fixed
        self.names = list(prior_by_name)
        self.priors = [prior_by_name[n] for n in self.names]
        self.n_draws, self.n_walkers, self.max_steps = n_draws, n_walkers, max_steps
        self.seed, self.shard, self.command, self.batches = seed, shard, command, batches
        self.settings = {
            "samples": n_draws,
            "walkers": n_walkers,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "min_autocorr_times": MIN_AUTOCORR_TIMES,
            "burn_in": "first half of each chain",
            "id_column": table.id_column,
            "columns": model.describe()["columns"],
            "fixed": fixed,
            "data": {"source": table.source, "sha256": table.sha256},
        }
        code = code_record(model.spec) if hasattr(model, "spec") else None
        if code is not None:  # a user model's file, found again by refine run from any directory
            self.settings["model_code"] = code
        self.interim_prior = {name: prior.spec for name, prior in prior_by_name.items()}
        mixture = None
        if interim_mixture is not None:  # p0' = λ p0 + (1 − λ) q in place of p0
            self.priors = interim_mixture.build(self.names, self.priors)
            self.settings["interim_mixture"] = interim_mixture.describe()
            mixture = interim_mixture.fingerprint()
        self.fingerprint = hashlib.sha256(json.dumps(
            {"data": _digest(table, model_columns), "model": model.describe(), "priors": self.interim_prior,
             **({"interim_mixture": mixture} if mixture else {}), "fixed": fixed,
             "settings": {k: self.settings[k] for k in ("samples", "walkers", "max_steps", "batch_size")},
             "seed": seed}, sort_keys=True).encode()).hexdigest()
        n_objects = table.n_objects
        self.bounds = list(range(0, n_objects, batch_size)) + [n_objects]
        n_batches = len(self.bounds) - 1
        self.seeds = np.random.SeedSequence(seed).spawn(n_batches)
        self.batch_lo, self.batch_hi = (_shard_batches(shard, n_batches) if batches is None
                                        else _batch_range(batches, n_batches))
        self.object_lo, self.object_hi = self.bounds[self.batch_lo], self.bounds[self.batch_hi]
        self.ids = table.ids[self.object_lo:self.object_hi]

    def task(self, i):
        """The :class:`BatchTask` of batch ``i``."""
        table, lo, hi = self.table, self.bounds[i], self.bounds[i + 1]
        rows = slice(table.starts[lo], table.starts[hi])
        return BatchTask(self.model, {role: values[rows] for role, values in self.model_columns.items()},
                         table.starts[lo:hi + 1] - table.starts[lo], table.ids[lo:hi], self.priors, self.names,
                         self.fixed, self.n_draws, self.n_walkers, self.max_steps, self.seeds[i])

    def header(self):
        """The samples file's provenance (a :class:`Samples` without draws; under a mixture
        interim prior, with ``joint_interim`` of the plan's objects)."""
        joint_columns = getattr(self.priors, "joint_columns", None)
        joint = None
        if joint_columns:
            joint = np.zeros((len(self.ids), len(self.names)), dtype=bool)
            joint[:, joint_columns] = True
        return Samples(ids=[], parameters=self.names, samples=None, log_interim_prior=None,
                       log_likelihood=None, diagnostics={}, model=self.model.name, interim_prior=self.interim_prior,
                       settings=self.settings, seed=self.seed, command=self.command, joint_interim=joint)

    def shard_attributes(self):
        """Root attributes of a shard file (None without shards)."""
        if not self.shard:
            return None
        return {"shard": f"{self.shard[0]}/{self.shard[1]}", "fingerprint": self.fingerprint,
                "n_objects_total": self.table.n_objects}


def _start_checkpoint(plan, output, resume, overwrite):
    """(checkpoint, scratch directory of a run writing to stdout, first batch still to run);
    no checkpoint without an output."""
    if output is None:
        return None, None, 0
    root = {"command": plan.command, "seed": plan.seed,
            "extra": {"model": plan.model.name, "parameters": plan.names, "interim_prior": plan.interim_prior,
                      "settings": plan.settings}}
    scratch = work_directory("-") if str(output) == "-" else None
    checkpoint = Checkpoint(os.path.join(scratch, "stdout.partial") if scratch else f"{output}.partial",
                            f"{plan.fingerprint}:{plan.shard or plan.batches}" if plan.shard or plan.batches
                            else plan.fingerprint)
    try:
        first_batch = checkpoint.start(resume, overwrite, plan.ids, plan.n_draws, plan.names,
                                       [b - plan.object_lo for b in plan.bounds[plan.batch_lo:plan.batch_hi + 1]],
                                       root)
    except BaseException:
        if scratch:
            release(scratch)
        raise
    return checkpoint, scratch, first_batch


def _run(plan, checkpoint, scratch, first_batch, output, overwrite, workers, progress, scheduler):
    """Run the plan's remaining batches, committing each to ``checkpoint`` (then published to
    ``output``) or, without one, gathering them in memory; the :class:`Samples`."""
    results = None if checkpoint is not None else [None] * (plan.batch_hi - plan.batch_lo)
    bar = tqdm(total=plan.object_hi - plan.object_lo, initial=plan.bounds[plan.batch_lo + first_batch] - plan.object_lo,
               unit="object", desc="fit-individuals", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        for i, result in results_in_order(plan.task, range(plan.batch_lo + first_batch, plan.batch_hi), workers, bar,
                                          scheduler):
            if checkpoint is not None:
                checkpoint.commit(i - plan.batch_lo, plan.bounds[i] - plan.object_lo, result)
            else:
                results[i - plan.batch_lo] = result
        bar.close()
        if checkpoint is not None:
            return checkpoint.publish(output, overwrite, plan.header(), plan.shard_attributes())
        header = plan.header()
        samples = _assemble(results, plan.ids, plan.names)
        samples.model, samples.interim_prior, samples.settings = header.model, header.interim_prior, header.settings
        samples.seed, samples.command, samples.joint_interim = header.seed, header.command, header.joint_interim
        return samples
    except BaseException as exc:
        if checkpoint is not None:
            _keep_or_drop_checkpoint(checkpoint, exc, scratch)
        raise
    finally:
        bar.close()
        if checkpoint is not None:
            checkpoint.close()
            if scratch:
                release(scratch)


def check_shard(shard):
    """``(i, n)`` of ``--shard I/N`` checked (whole numbers, 1 ≤ i ≤ n), or None."""
    if shard is None:
        return None
    try:
        i, n = shard
    except (TypeError, ValueError):
        i, n = shard, None
    if not (isinstance(i, (int, np.integer)) and isinstance(n, (int, np.integer)) and 1 <= i <= n):
        shown = repr(shard) if n is None else f"{i}/{n}"
        raise UsageError(f"--shard {shown}: expected I/N with 1 <= I <= N, e.g. 3/10.", "--shard")
    return int(i), int(n)


def shard_slice(shard, size):
    """The half-open range of ``size`` things (batches, objects) that shard (i, n) takes."""
    i, n = shard
    return (i - 1) * size // n, i * size // n


def _shard_batches(shard, n_batches):
    """The half-open range of batches the i-th of n shards fits (all of them without shards)."""
    shard = check_shard(shard)
    if shard is None:
        return 0, n_batches
    lo, hi = shard_slice(shard, n_batches)
    if lo == hi:
        i, n = shard
        raise UsageError(f"--shard {i}/{n}: there are only {n_batches} batches, so shard {i} would be empty; use "
                         f"at most {n_batches} shards, or a smaller --batch-size.", "--shard")
    return lo, hi


def _batch_range(batches, n_batches):
    lo, hi = batches
    if not 0 <= lo < hi <= n_batches:
        raise ValueError(f"batches {lo} to {hi - 1} of a run of {n_batches} batches")
    return int(lo), int(hi)


def batch_count(n_objects, model, n_draws, n_dim, max_steps=20000, batch_size=None, n_walkers=None):
    """The number of batches :func:`fit_individuals` splits ``n_objects`` objects into with
    these settings (``model`` a :class:`~popinfer.models.Model` or a name)."""
    if batch_size is None:
        model = get_model(model)
        batch_size = _batch_size(model, n_draws, _walkers(n_walkers, n_dim, n_draws, max_steps), n_dim)
    return -(-n_objects // batch_size)


def _keep_or_drop_checkpoint(checkpoint, exc, scratch):
    """After a failure: drop a checkpoint holding nothing (or one of a run writing to
    stdout, which cannot be resumed), else say it is kept."""
    if checkpoint.handle is None:
        return
    try:
        committed = checkpoint.committed()
    except (OSError, RuntimeError):  # unreadable after a failed write: nothing it holds can be trusted
        committed = 0
    if committed == 0 or scratch:
        checkpoint.remove()
    elif isinstance(exc, Exception) and exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]} The objects finished so far are kept in {checkpoint.path}; after fixing "
                    f"the problem, rerun the same command with --resume to continue (a change to the data or "
                    f"the model's code starts over, with --overwrite).",) + exc.args[1:]


def _parse_column(text, option):
    role, sep, name = str(text).partition("=")
    if not sep or not role.strip() or not name.strip():
        raise UsageError(f"Cannot parse {text!r} ({option}): expected ROLE=COLUMN, e.g. y=log_radon.", option)
    return role.strip(), name.strip()


def _check_counts(**values):
    for name, value in values.items():
        if value is None:
            continue
        if not isinstance(value, (int, np.integer)) or value < 1:
            option = {"n_draws": "--samples", "max_steps": "--max-steps", "workers": "--workers",
                      "batch_size": "--batch-size"}[name]
            raise UsageError(f"{option} must be a positive whole number, got {value!r}.", option)


def _assemble(results, ids, names):
    def stack(key):
        return np.concatenate([r[key] for r in results])

    return Samples(
        ids=list(ids), parameters=list(names), samples=stack("samples"),
        log_interim_prior=stack("log_interim_prior"), log_likelihood=stack("log_likelihood"),
        diagnostics={k: stack(k) for k in DIAGNOSTICS},
        model="", interim_prior={}, settings={}, seed=0)
