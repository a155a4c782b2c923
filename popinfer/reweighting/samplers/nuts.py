"""The No-U-Turn sampler (nutpie) on the hyperparameters, in unconstrained coordinates.

    NUTS: Hoffman & Gelman (2014); nutpie's mass-matrix adaptation: Seyboldt et al. (nutpie docs)
    R̂ (rank-normalised, split) and bulk/tail ESS: Vehtari et al. (2021), via ArviZ

The target is ln p(u | data) of :class:`~popinfer.reweighting.transforms.UnconstrainedPosterior`
(each hyperparameter mapped to the real line from its hyperprior's support, Jacobian
included), whose gradient comes from the likelihood's ``ln_likelihood_and_gradient``
(one kernel pass gives both). Chains start at distinct points drawn from the hyperpriors
and resampled by likelihood (``mcmc.initial_positions``, as emcee's walkers do), so every
start is admissible. The chains run at once, each a nutpie run of one chain with its own
seed, in lockstep (:class:`_Lockstep`): a chain's evaluation waits until every chain still
running has a point waiting, and one kernel pass (on all the kernel's threads) evaluates
them all (for the numpy kernel, reading the draws, and a selection term's injections, once
for all chains; the JAX backend takes the points one by one). Every point's numbers are those it gets
alone (``HyperLikelihood.ln_likelihood_and_gradients``), so the draws are those of the
chains run one after another and depend neither on threads nor on which chains shared a
pass: the same seed gives the same file.

The ``tune`` adaptation steps per chain evaluate ln L̂ over every ``tune_thin``-th draw of
each object (``HyperLikelihood.thinned``): they only learn the posterior's scales. Then each
chain makes SETTLE draws on the full ln L̂ and drops them (they start from the adaptation's
last point and gradient), and keeps ⌈S / chains⌉ draws; the S draws returned are evenly
spaced over the chains' draws, which target the posterior of ln L̂ over all the draws.
R̂ and bulk/tail ESS of every hyperparameter (across chains), the divergent transitions
after tuning and the gradient evaluations are the diagnostics; a
:class:`~popinfer.mcmc.ConvergenceWarning` fires when R̂ > 1.01, when an ESS is below 100
per chain (Vehtari et al. 2021), or on divergences.
"""

from __future__ import annotations

import math
import sys
import threading
import warnings

import numpy as np
from tqdm import tqdm

from ...errors import PopinferError, UsageError
from ...mcmc import ConvergenceWarning, initial_positions
from ..transforms import UnconstrainedPosterior
from .base import SamplerResult
from .ensemble import _StartingBlock

MAX_RHAT = 1.01
MIN_ESS_PER_CHAIN = 100


def _nutpie():
    try:
        import nutpie
        from nutpie.compiled_pyfunc import from_pyfunc
    except ImportError:
        raise UsageError("--sampler nuts needs nutpie, which is not installed. Install the nuts extra: "
                         "pip install 'popinfer[nuts]'.", "--sampler") from None
    return nutpie, from_pyfunc


def convergence_diagnostics(chains, names):
    """R̂, bulk ESS and tail ESS of every hyperparameter of ``chains`` (C, D, H), via ArviZ."""
    import arviz

    out = {"rhat": {}, "ess_bulk": {}, "ess_tail": {}}
    for index, name in enumerate(names):
        values = chains[:, :, index]
        out["rhat"][name] = float(arviz.rhat(values))
        out["ess_bulk"][name] = float(arviz.ess(values, method="bulk"))
        out["ess_tail"][name] = float(arviz.ess(values, method="tail"))
    return out


def _after_tuning(trace, n_dim):
    """A one-chain raw nutpie trace's draws of ``u`` (D, H), divergences (D,) and step sizes (D,)
    after tuning. The raw trace (Arrow record batches, ``return_raw_trace``) is read directly:
    nutpie's conversion to an ArviZ InferenceData took about 0.15 s a chain and is not needed."""
    draw_batches, stat_batches = trace.get_arrow_trace()
    if not draw_batches:  # stopped before its first draw
        return np.empty((0, n_dim)), np.empty(0, dtype=bool), np.empty(0)
    if len(draw_batches) != 1 or len(stat_batches) != 1:
        raise PopinferError(f"nutpie returned {len(draw_batches)} chains' draws for a run of one chain, which this "
                            f"version of popinfer does not expect: reinstall the nuts extra (pip install --upgrade "
                            f"'popinfer[nuts]'), or use --sampler emcee.")
    (draws,), (stats,) = draw_batches, stat_batches
    kept = ~np.asarray(stats.column("tuning"), dtype=bool)
    u = np.array(draws.column("u").to_pylist(), dtype=float).reshape(-1, n_dim)[kept]
    diverging = np.asarray(stats.column("diverging"), dtype=bool)[kept]
    step_size = np.asarray(stats.column("step_size"), dtype=float)[kept]
    return u, diverging, step_size


class _Lockstep:
    """The chains' evaluations made together (see the module docstring).

    ``evaluate(chain, u)`` is a chain's ln p and gradient at ``u``: the call waits until every
    chain still running has a point waiting, and the last to arrive evaluates them all while
    the others wait for their results — one call of ``log_density_and_gradients`` per target:
    ``targets[0]`` for the chains still tuning (their first ``tune`` draws), ``targets[1]``
    after. ``drawn(chain)``, called from nutpie's per-draw expansion, counts a chain's draws
    (and reports each to ``on_draw``, the progress bar);
    after its last (``draws_per_chain``, tuning included) it no longer counts as running, nor
    once its run has finished (checked when the chains have waited ``STALL`` seconds for one,
    e.g. a chain nutpie stopped early; never the run the main thread is waiting on,
    ``awaited``, which nutpie will not answer for while it waits). With one chain it simply
    evaluates. ``error`` is the first exception an evaluation raised (handed to every chain of
    its pass): nutpie reports a failed chain with its own message, so the sampler raises this
    one instead.
    """

    STALL = 0.2

    def __init__(self, targets, runs, tune, draws_per_chain, on_draw=None):
        self._targets, self._runs = targets, runs
        self._tune, self._draws_per_chain = tune, draws_per_chain
        self._on_draw = on_draw
        self._drawn = [0] * len(runs)
        self._stopped = [False] * len(runs)
        self._waiting, self._results = {}, {}
        self._busy = self._closed = False
        self._condition = threading.Condition()
        self.awaited = None  # the run the main thread is blocked on
        self.error = None

    def evaluate(self, chain, u):
        with self._condition:
            self._waiting[chain] = np.array(u, dtype=float)
            while chain not in self._results and not self._closed:
                if not self._busy and len(self._waiting) >= self._stopped.count(False):
                    self._evaluate_waiting()
                elif not self._condition.wait(self.STALL) and not self._busy:
                    self._check_runs()
            self._waiting.pop(chain, None)
            result = self._results.pop(chain, None)
            target = self._target(chain)
        if result is None:  # released by close(): evaluated alone until nutpie stops the chain
            return target.log_density_and_gradient(u)
        if isinstance(result, BaseException):
            raise result
        return result

    def drawn(self, chain):
        """Chain ``chain`` has made one more draw (tuning included); after its last it stops calling."""
        with self._condition:
            self._drawn[chain] += 1
            if self._drawn[chain] >= self._draws_per_chain:
                self._stop(chain)
            if self._on_draw is not None:  # under the lock: the chains' threads share the bar
                self._on_draw(1)

    def close(self):
        """Release every waiting chain, to evaluate its point alone: the run is being cancelled
        (nutpie stops a chain between evaluations; one that fails or returns −inf there panics)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _target(self, chain):
        return self._targets[0] if self._drawn[chain] < self._tune else self._targets[1]

    def _stop(self, chain):
        if not self._stopped[chain]:
            self._stopped[chain] = True
            self._condition.notify_all()

    def _check_runs(self):
        """Count the chains whose nutpie run has finished as stopped (called with the lock held)."""
        for chain, run in enumerate(self._runs):
            if chain not in self._waiting and not self._stopped[chain] and run is not None and run is not self.awaited:
                try:
                    finished = run.is_finished
                except TimeoutError:  # nutpie's answer for "still running"
                    finished = False
                except BaseException as error:  # noqa: BLE001 - a failed run raises (or panics) when asked
                    # ... unless the main thread has just begun waiting on it (pyo3: "Already borrowed")
                    finished = "borrowed" not in str(error)
                if finished:
                    self._stop(chain)

    def _evaluate_waiting(self):
        """Evaluate every waiting point, one call per target (called with the lock held, released meanwhile)."""
        batch, self._waiting, self._busy = self._waiting, {}, True
        groups = {}  # target -> its chains
        for chain in sorted(batch):
            groups.setdefault(self._target(chain), []).append(chain)
        self._condition.release()
        results = {}
        try:
            for target, chains in groups.items():
                try:
                    values, gradients = target.log_density_and_gradients(np.stack([batch[c] for c in chains]))
                    results.update({c: (float(values[i]), gradients[i]) for i, c in enumerate(chains)})
                except BaseException as error:  # handed to every chain of the call, to raise in its own thread
                    results.update({c: error for c in chains})
                    self.error = self.error or error
        finally:
            self._condition.acquire()
            if not self._closed:  # once closed, the chains have left to evaluate alone: no stale results
                self._results.update(results)
            self._busy = False
            self._condition.notify_all()


class NutsSampler:
    """nutpie's NUTS on the hyperparameters, several chains (see the module docstring).

    Parameters
    ----------
    chains : int
        Independent chains (``--chains``), at least 2 for R̂ across chains.
    tune : int
        Adaptation steps per chain (``--tune``), discarded.
    tune_thin : int
        The tuning steps evaluate ln L̂ over every ``tune_thin``-th stage-one draw of each
        object (``--tune-thin``; 1: all of them); the kept draws always use all.
    """

    name = "nuts"
    # All chains at once (each with its own seed: the draws are those of one chain after
    # another); False runs them one after another.
    concurrent = True
    DEFAULT_CHAINS = 4
    DEFAULT_TUNE = 400
    DEFAULT_TUNE_THIN = 4
    SETTLE = 10

    def __init__(self, chains=DEFAULT_CHAINS, tune=DEFAULT_TUNE, tune_thin=DEFAULT_TUNE_THIN):
        self.chains, self.tune, self.tune_thin = chains, tune, tune_thin
        self.nutpie_options = {"low_rank_modified_mass_matrix": True}

    @property
    def settings(self):
        return {"chains": self.chains, "tune": self.tune, "tune_thin": self.tune_thin}

    def check(self, names):
        _nutpie()
        if not isinstance(self.chains, (int, np.integer)) or self.chains < 2:
            raise UsageError(f"--chains {self.chains}: need a whole number of at least 2 (R̂ compares chains).",
                             "--chains")
        if not isinstance(self.tune, (int, np.integer)) or self.tune < 10:
            raise UsageError(f"--tune {self.tune}: need a whole number of at least 10.", "--tune")
        if not isinstance(self.tune_thin, (int, np.integer)) or self.tune_thin < 1:
            raise UsageError(f"--tune-thin {self.tune_thin}: need a whole number of at least 1 (1 tunes on every "
                             f"draw).", "--tune-thin")

    def sample(self, posterior, n_samples, seed, progress=False):
        nutpie, from_pyfunc = _nutpie()
        target = UnconstrainedPosterior(posterior)
        n_dim = target.n_dim
        init_seed, *chain_seeds = seed.spawn(1 + self.chains)
        start, _ = initial_positions(_StartingBlock(posterior), self.chains, np.random.default_rng(init_seed))
        start = target.to_unconstrained(start[:, 0, :])
        # The first evaluation outside nutpie: a population without gradients is refused here,
        # with its message, before any sampling.
        if not math.isfinite(target.log_density_and_gradient(start[0])[0]):
            raise PopinferError("The hyperparameter posterior is not finite at a start point drawn from the "
                                "hyperpriors; check the --fix values and the hyperpriors.")
        n_draws = -(-n_samples // self.chains)
        thinned = target.likelihood.thinned(self.tune_thin)
        try:
            tuning = target if thinned is target.likelihood else UnconstrainedPosterior(
                type(posterior)(thinned, posterior.names, dict(zip(posterior.names, posterior.priors))))
            rejected = tuning is not target and not np.all(np.isfinite(tuning.log_density_and_gradients(start)[0]))
        except BaseException:
            if thinned is not target.likelihood:
                thinned.close()
            raise
        if rejected:
            # A start point the thinned ln L̂ rejects (a --max-variance cut): adapt on all the draws.
            thinned.close()
            thinned, tuning = target.likelihood, target
        # With a thinned tuning target, a chain's first draws after tuning start from a point
        # (and a gradient) of that target, a little off the full one's: SETTLE of them are made
        # and dropped.
        skip = self.SETTLE if tuning is not target else 0
        chains, divergences, step_sizes = [], 0, []
        evaluations_before = target.evaluations

        per_chain = self.tune + n_draws + skip
        bar = tqdm(total=self.chains * per_chain, unit="draw", desc="fit-population (nuts)", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        runs = [None] * self.chains
        # The chains in lockstep, or (one after another) each on its own.
        if self.concurrent:
            locksteps = [_Lockstep((tuning, target), runs, self.tune, per_chain, bar.update)] * self.chains
            slots = list(range(self.chains))
        else:
            locksteps = [_Lockstep((tuning, target), [None], self.tune, per_chain, bar.update)
                         for _ in range(self.chains)]
            slots = [0] * self.chains

        def make_logp(chain):
            lockstep, slot = locksteps[chain], slots[chain]
            return lambda: lambda u: lockstep.evaluate(slot, u)

        def make_expand(chain):
            lockstep, slot = locksteps[chain], slots[chain]

            def make(seed1, seed2, chain_index):
                def expand(u):
                    lockstep.drawn(slot)
                    return {"u": np.array(u, dtype=float)}
                return expand
            return make

        pending = []  # runs started and not yet collected: cancelled on any interruption (Ctrl-C included)

        def collect(run):
            # Waiting ourselves: nutpie's blocking call turns Ctrl-C into a shortened trace.
            for lockstep in set(locksteps):
                lockstep.awaited = run
            trace = run.wait()
            pending.remove(run)
            return trace

        def raised():
            """The first exception an evaluation raised, if any (nutpie reports it as its own)."""
            return next((lockstep.error for lockstep in set(locksteps) if lockstep.error is not None), None)

        traces = []
        try:
            for chain, (chain_seed, point) in enumerate(zip(chain_seeds, start)):
                model = from_pyfunc(n_dim, make_logp(chain), make_expand(chain), [np.dtype("float64")], [(n_dim,)],
                                    ["u"], make_initial_point_fn=lambda _seed, point=point.copy(): point.copy())
                runs[chain] = nutpie.sample(model, draws=n_draws + skip, tune=self.tune, chains=1, cores=1,
                                            **self.nutpie_options,
                                            seed=int(chain_seed.generate_state(1, np.uint64)[0] >> np.uint64(1)),
                                            progress_bar=False, save_warmup=False, blocking=False,
                                            return_raw_trace=True)
                pending.append(runs[chain])
                if not self.concurrent:
                    traces.append(collect(pending[-1]))
            while pending:
                traces.append(collect(pending[0]))
        except BaseException as failure:  # nutpie reports a failed chain by panicking (a BaseException)
            if isinstance(failure, KeyboardInterrupt) or raised() is None:
                raise
            raise raised() from None
        finally:
            for lockstep in set(locksteps):
                lockstep.close()  # before cancelling: a chain waiting for its batch would never return
            for run in pending:
                try:
                    run.cancel()
                except BaseException as error:  # noqa: BLE001 - a failed run panics when cancelled; it has stopped
                    if isinstance(error, KeyboardInterrupt):
                        raise
            if thinned is not target.likelihood:
                thinned.close()
            bar.close()
        if raised() is not None:  # a chain failed, and nutpie returned what it had
            raise raised()
        for chain, trace in enumerate(traces):
            draws, diverging, step_size = _after_tuning(trace, n_dim)
            if draws.shape[0] != n_draws + skip:
                raise PopinferError(f"NUTS chain {chain + 1} stopped after {max(0, draws.shape[0] - skip)} of "
                                    f"{n_draws} draws.")
            chains.append(draws[skip:])
            divergences += int(diverging[skip:].sum())
            step_sizes.append(float(step_size[-1]))
        constrained = target.to_constrained(np.stack(chains))  # (C, D, H)
        diagnostics = convergence_diagnostics(constrained, target.names)
        tuning_evaluations = tuning.evaluations if tuning is not target else 0
        gradient_evaluations = target.evaluations - evaluations_before + tuning_evaluations
        problems = self._problems(diagnostics, divergences)
        if problems:
            warnings.warn(ConvergenceWarning(
                "The NUTS chains may not have converged: " + "; ".join(problems) + ". Raise --samples and --tune, "
                "or check the hyperpriors; --sampler emcee is the alternative."), stacklevel=2)
        flat = constrained.reshape(-1, n_dim)
        pick = np.round(np.linspace(0, flat.shape[0] - 1, n_samples)).astype(np.int64)
        diagnostics.update(
            draws_per_chain=int(n_draws), divergences=divergences, gradient_evaluations=int(gradient_evaluations),
            tuning_evaluations_thinned=int(tuning_evaluations),
            max_rhat=max(diagnostics["rhat"].values()), min_ess_bulk=min(diagnostics["ess_bulk"].values()),
            min_ess_tail=min(diagnostics["ess_tail"].values()), step_size=step_sizes,
            transforms={name: t.kind for name, t in zip(target.names, target.transforms)})
        diagnostics["converged"] = not problems
        return SamplerResult(flat[pick], diagnostics)

    def _problems(self, diagnostics, divergences):
        """What keeps the chains from counting as converged: R̂, ESS, divergences (empty when none)."""
        problems = []
        high = {name: value for name, value in diagnostics["rhat"].items() if not value <= MAX_RHAT}
        if high:
            problems.append("R̂ > " + f"{MAX_RHAT} for " + ", ".join(f"{n} ({v:.3f})" for n, v in high.items()))
        needed = MIN_ESS_PER_CHAIN * self.chains
        low = {name: min(diagnostics["ess_bulk"][name], diagnostics["ess_tail"][name])
               for name in diagnostics["rhat"]}
        low = {name: value for name, value in low.items() if not value >= needed}
        if low:
            problems.append(f"an effective sample size below {needed} ({MIN_ESS_PER_CHAIN} per chain) for "
                            + ", ".join(f"{n} ({v:.0f})" for n, v in low.items()))
        if divergences:
            problems.append(f"{divergences} divergent transitions after tuning (ln L̂ is rough where objects have "
                            f"few effective draws, which more stage-one draws smooth, or the posterior reaches an "
                            f"edge where ln L̂ = −inf)")
        return problems
