"""Sampling one batch of objects at once with emcee.

All objects of a batch share one ``emcee.EnsembleSampler`` whose walkers hold
every object's parameters side by side; :class:`BlockStretchMove` moves each
object independently, so the result is statistically the same as a separate
sampler per object, at the cost of one vectorised log-probability call per
half-step for the whole batch.

Run length adapts per object: at the check points of ``popinfer.mcmc``'s schedule
(the next one when a quarter of the active objects could be long enough by their
current τ) the integrated autocorrelation time τ of every active object is
estimated on the second half of its chain, the part that is kept, with the walkers
centred on the ensemble's mean (``autocorr.ensemble_autocorrelation``: emcee's
estimator, which centres each walker on its own mean, is about 1.6× too small on
a kept half of 25 τ per walker). An object is finished, and leaves the batch, once
its chain is at least ``MIN_AUTOCORR_TIMES`` τ long *and* its kept half holds at
least K effectively independent positions (n_steps·W/(2τ) ≥ K). The others go on,
up to ``max_steps``. The first half of each chain is discarded as burn-in; K draws
are taken from the second half, evenly spaced walker by walker, and the effective
size of those K draws (``autocorr.effective_size``, ≈ 0.8 K) is recorded as
``effective_draws``: stage two's diagnostics treat the draws as independent, and
``refine --moment-error`` accounts for the difference.

The stored chain is bounded: when its buffer fills, every other stored step is
dropped and the storage interval doubles, so memory is
``capacity × n_walkers × n_objects × n_dim`` floats however long the run.
"""

from __future__ import annotations

import math

import emcee
import numpy as np

from ..autocorr import effective_size, ensemble_autocorrelation
from ..errors import ModelError
from ..interim import factorised
from ..mcmc import (MIN_AUTOCORR_TIMES, InitialisationError, ensemble_sampler, first_check, initial_positions,
                    minimum_steps, next_check)
from .moves import BlockStretchMove

__all__ = ["BatchPosterior", "initial_positions", "minimum_steps", "sample_batch", "MIN_AUTOCORR_TIMES"]
# τ is estimated from the walker-averaged autocorrelation of at most this many
# walkers (walkers are exchangeable; more only lowers an already small variance).
TAU_WALKERS = 64


class BatchPosterior:
    """Log posterior (interim prior × likelihood) of a batch, vectorised.

    Parameters
    ----------
    model : popinfer.models.Model
    data : object
        ``model.prepare(columns, starts)`` for the batch.
    priors : list of Distribution, or an interim prior object
        Interim prior p0 of each sampled parameter, in order, or an object of
        ``popinfer.interim`` (e.g. the defensive mixture p0' of ``refine``).
    names : list of str
        Sampled parameter names (D of them).
    fixed : dict of str -> float
        Held model parameters.
    ids : list of str
        Object ids, for messages.
    """

    def __init__(self, model, data, priors, names, fixed, ids):
        self.model = model
        self.data = data
        self.priors = priors
        self.interim = factorised(priors)
        self.names = list(names)
        self.fixed = dict(fixed)
        self.ids = list(ids)
        self.per_object_calls = model.calls_per_object
        if self.per_object_calls:
            data["ids"] = self.ids

    @property
    def n_objects(self):
        return len(self.ids)

    n_blocks = n_objects  # the independent blocks of ``mcmc.initial_positions``

    def initialisation_error(self, blocks, n_tried, n_walkers):
        """Stage one's message when objects ``blocks`` have too few finite starting points."""
        worst = [self.ids[b] for b in blocks[:5]]
        return InitialisationError(
            f"Could not initialise object(s) {', '.join(map(repr, worst))}: among "
            f"{n_tried} draws from the interim prior fewer than "
            f"{n_walkers} have a finite posterior. The data may be impossible under the "
            f"model, or the interim prior (--prior) misses the region the data allow."
        )

    def log_prior(self, theta):
        """ln p0 of each parameter (as stored: a joint density in the first of its columns),
        shape ``theta.shape`` (..., n_objects, D)."""
        return self.interim.log_density(theta)

    def draw_prior(self, rng, size):
        """Draws of the interim prior, (*size, D) (``mcmc.initial_positions``)."""
        return self.interim.sample(rng, size)

    def log_likelihood(self, theta, valid):
        """ln L at ``theta`` (n, n_objects, D) where ``valid``; -inf elsewhere."""
        params = {name: theta[..., d] for d, name in enumerate(self.names)}
        shape = theta.shape[:-1]
        for name, value in self.fixed.items():
            params[name] = np.full(shape, value)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.per_object_calls:
                log_like = self.model.log_likelihood(params, self.data, valid)
            else:
                log_like = self.model.log_likelihood(params, self.data)
        log_like = np.where(valid, log_like, -np.inf)
        if not np.all(log_like < np.inf):  # a NaN or +inf inside the prior's support
            bad = valid & ~(log_like < np.inf)
            walker, obj = (int(i[0]) for i in np.nonzero(bad))
            values = ", ".join(f"{n}={theta[walker, obj, d]:.6g}" for d, n in enumerate(self.names))
            raise ModelError(
                f"Model {getattr(self.model, 'name', self.model)!r} returned "
                f"{log_like[walker, obj]} as the log-likelihood of object {self.ids[obj]!r} at "
                f"{values}. A log-likelihood must be finite or -inf; check the model and "
                f"that object's data."
            )
        return log_like

    def evaluate(self, theta):
        """(ln p0 summed over parameters, ln L), each (n, n_objects)."""
        log_prior = self.log_prior(theta).sum(axis=-1)
        valid = np.isfinite(log_prior)
        return log_prior, self.log_likelihood(theta, valid)

    def per_object(self, theta):
        """ln p0 + ln L of every object, (n, n_objects), at theta (n, n_objects, D)."""
        log_prior, log_like = self.evaluate(theta)
        return log_prior + log_like

    def __call__(self, coords):
        """emcee's vectorised log-probability: total and per-object (as blobs)."""
        theta = np.asarray(coords).reshape(len(coords), self.n_objects, len(self.names))
        per_object = self.per_object(theta)
        return np.concatenate([per_object.sum(axis=1, keepdims=True), per_object], axis=1)


def subset_rows(columns, starts, objects):
    """Columns and starts restricted to some objects (indices into the batch)."""
    lengths = np.diff(starts)[objects]
    rows = np.concatenate([np.arange(starts[b], starts[b + 1]) for b in objects]) if len(objects) else np.zeros(0, int)
    new_starts = np.concatenate([[0], np.cumsum(lengths)])
    return {role: values[rows] for role, values in columns.items()}, new_starts


def buffer_capacity(n_draws, n_walkers):
    """Stored steps per chain: enough that the kept half always holds K draws."""
    needed = 4 * math.ceil(n_draws / n_walkers)
    return max(256, needed + needed % 2)


def required_autocorr_times(n_draws, n_walkers):
    """Chain length needed, in τ: ≥ 50 τ, and a kept half of n_steps·W/(2τ) ≥ K
    effectively independent positions, so that the K draws are nearly independent."""
    return max(MIN_AUTOCORR_TIMES, 2.0 * n_draws / n_walkers)


def _next_check(step, tau, times):
    """Steps at which to look again (``mcmc.next_check``): when a quarter of the active
    objects could be long enough by their current τ."""
    longest = np.max(tau, axis=1) if tau.size else np.array([np.inf])
    with np.errstate(invalid="ignore"):  # inf - inf between infinite τ: a NaN target, which next_check handles
        target = times * np.quantile(np.where(np.isfinite(longest), longest, np.inf), 0.25)
    return next_check(step, target)


class ChainBuffer:
    """The stored chain of a batch's active objects, bounded in memory.

    Steps are stored every ``interval`` steps; when the buffer fills, every other
    stored row is dropped and the interval doubles, so memory is
    ``capacity × n_walkers × n_objects × n_dim`` floats however long the run.
    """

    def __init__(self, capacity, n_walkers, n_objects, n_dim):
        self.capacity = capacity
        self.rows = np.empty((capacity, n_walkers, n_objects, n_dim))
        self.row_step = np.zeros(capacity, dtype=np.int64)  # the step each stored row was taken at
        self.n_stored, self.interval = 0, 1

    def record(self, step, coords):
        """Store the walkers' positions ``coords`` (W, B, D) after ``step`` if it is on the interval."""
        if step % self.interval:
            return
        self.rows[self.n_stored] = coords
        self.row_step[self.n_stored] = step
        self.n_stored += 1
        if self.n_stored == self.capacity:  # keep the rows on the doubled interval
            self.interval *= 2
            first = int(np.argmax(self.row_step % self.interval == 0))
            kept_rows = slice(first, self.capacity, 2)
            self.n_stored = len(range(first, self.capacity, 2))
            self.rows[:self.n_stored] = self.rows[kept_rows]
            self.row_step[:self.n_stored] = self.row_step[kept_rows]

    def _half_start(self, step):
        return int(np.searchsorted(self.row_step[:self.n_stored], step // 2, side="right"))

    def second_half(self, step):
        """The stored rows after ``step // 2`` (the kept half), shape (M, W, B, D)."""
        return self.rows[self._half_start(step):self.n_stored]

    def keep(self, stay, step):
        """Keep the objects ``stay`` (a mask), and only the rows of the current second half:
        no other row can ever be kept again."""
        start = self._half_start(step)
        n_rows = self.n_stored - start
        kept = self.rows[start:self.n_stored][:, :, stay]
        self.rows = np.empty((self.capacity,) + kept.shape[1:])
        self.rows[:n_rows] = kept
        self.row_step[:n_rows] = self.row_step[start:self.n_stored]
        self.n_stored = n_rows


class FinishedObjects:
    """K draws and diagnostics of a batch's objects, filled in as the objects finish."""

    def __init__(self, n_objects, n_draws, n_dim):
        self.n_draws = n_draws
        self.samples = np.empty((n_objects, n_draws, n_dim))
        self.acceptance = np.zeros(n_objects)
        self.autocorr = np.full((n_objects, n_dim), np.nan)
        self.n_steps = np.zeros(n_objects, dtype=np.int64)
        self.converged = np.zeros(n_objects, dtype=bool)
        self.effective = np.zeros(n_objects)

    def finish(self, active, finishing, kept, step, tau, acf, accepted):
        """Record the objects ``active[finishing]``: K draws evenly spaced over the kept half
        ``kept`` (M, W, B, D), and their diagnostics after ``step`` steps; ``acf`` (M, B, D) is the
        kept half's autocorrelation function (``autocorr.ensemble_autocorrelation``)."""
        n_rows, n_walkers = kept.shape[:2]
        # Evenly spaced walker by walker (each walker's draws as far apart as they can be), stored in
        # the order of the chain: spacing them evenly over the rows, walkers side by side, lets a
        # walker's draws clump in neighbouring rows whenever W is close to a multiple of the spacing.
        pick = np.round(np.linspace(0, n_rows * n_walkers - 1, self.n_draws)).astype(np.int64)
        pick_walkers, pick_rows = np.unravel_index(pick, (n_walkers, n_rows))
        order = np.lexsort((pick_walkers, pick_rows))
        pick_rows, pick_walkers = pick_rows[order], pick_walkers[order]
        done = np.flatnonzero(finishing)
        if not done.size:
            return
        finished = active[done]
        self.samples[finished] = kept[pick_rows, pick_walkers][:, done, :].transpose(1, 0, 2)
        self.acceptance[finished] = accepted[:, done].sum(axis=0) / (n_walkers * step)
        self.autocorr[finished] = tau[done]
        self.n_steps[finished] = step
        self.converged[finished] = np.all(step >= MIN_AUTOCORR_TIMES * tau, axis=1)[done]
        # The effective draws of the K draws themselves: fewer than the kept half's n_steps·W/(2τ), since
        # draws of one walker a few steps apart are correlated.
        picked = np.zeros((n_rows, n_walkers), dtype=bool)
        picked[pick_rows, pick_walkers] = True
        effective = effective_size(acf[:, done].reshape(n_rows, -1), picked).reshape(done.size, -1)
        effective = np.where(np.isfinite(tau[done]), np.minimum(effective, self.n_draws), 0.0)
        self.effective[finished] = np.min(effective, axis=1)

    def diagnostics(self):
        return {"acceptance_fraction": self.acceptance, "autocorr_time": self.autocorr, "n_steps": self.n_steps,
                "converged": self.converged, "effective_draws": self.effective}


def sample_batch(model, columns, starts, ids, priors, names, fixed, n_draws, n_walkers, max_steps, rng,
                 on_finished=None):
    """Sample every object of a batch; return draws and per-object diagnostics.

    Parameters
    ----------
    model : popinfer.models.Model
    columns : dict of str -> ndarray
        The batch's rows by role, sorted by object.
    starts : ndarray, shape (B + 1,)
        Object b owns rows ``starts[b]:starts[b+1]``.
    ids : list of str
    priors, names, fixed
        Interim priors p0 and names of the D sampled parameters; held parameters.
    n_draws : int
        K, draws kept per object.
    n_walkers : int
        W, walkers per object.
    max_steps : int
        Cap on steps per object.
    rng : numpy.random.Generator
    on_finished : callable, optional
        Called with the number of objects each time some finish (progress).

    Returns
    -------
    dict
        ``samples`` (B, K, D), ``log_likelihood`` (B, K), ``log_interim_prior``
        (B, K, D), ``acceptance_fraction`` (B,), ``autocorr_time`` (B, D),
        ``n_steps`` (B,), ``converged`` (B,) (chain ≥ 50 τ), ``effective_draws``
        (B,) (the effective size of the K draws, for the worst parameter).
    """
    n_objects, n_dim = len(ids), len(names)
    times = required_autocorr_times(n_draws, n_walkers)

    def posterior_for(objects):
        sub_columns, sub_starts = subset_rows(columns, starts, objects)
        return BatchPosterior(model, model.prepare(sub_columns, sub_starts), priors, names, fixed,
                              [ids[b] for b in objects])

    full_posterior = posterior_for(np.arange(n_objects))
    coords, log_prob = initial_positions(full_posterior, n_walkers, rng)
    results = FinishedObjects(n_objects, n_draws, n_dim)
    active = np.arange(n_objects)
    posterior = full_posterior
    chain = ChainBuffer(buffer_capacity(n_draws, n_walkers), n_walkers, n_objects, n_dim)
    step = 0
    move = BlockStretchMove(n_dim, rng, posterior.per_object)
    move.accepted = np.zeros((n_walkers, n_objects), dtype=np.int64)
    check = min(first_check(n_draws, n_walkers, times), max_steps)
    while active.size:
        sampler = ensemble_sampler(n_walkers, active.size * n_dim, posterior, [move])
        state = emcee.State(coords.reshape(n_walkers, -1), log_prob=log_prob.sum(axis=1), blobs=log_prob)
        for state in sampler.sample(state, iterations=check - step, store=False,
                                    skip_initial_state_check=True):
            step += 1
            chain.record(step, state.coords.reshape(n_walkers, active.size, n_dim))
        coords = state.coords.reshape(n_walkers, active.size, n_dim)
        log_prob = np.asarray(state.blobs, dtype=float).reshape(n_walkers, active.size)

        kept = chain.second_half(step)
        tau_walkers = kept[:, :TAU_WALKERS].reshape(kept.shape[0], min(n_walkers, TAU_WALKERS), -1)
        tau, acf = ensemble_autocorrelation(tau_walkers)
        tau = tau.reshape(active.size, n_dim) * chain.interval
        finishing = np.ones(active.size, bool) if step >= max_steps else np.all(step >= times * tau, axis=1)
        results.finish(active, finishing, kept, step, tau, acf.reshape(-1, active.size, n_dim), move.accepted)
        if finishing.any():
            if on_finished is not None:
                on_finished(int(finishing.sum()))
            stay = ~finishing
            active = active[stay]
            if not active.size:
                break
            coords, log_prob = coords[:, stay], log_prob[:, stay]
            chain.keep(stay, step)
            move.accepted = move.accepted[:, stay]
            posterior = posterior_for(active)
            move.log_prob = posterior.per_object
        check = min(_next_check(step, tau[~finishing], times), max_steps)

    return _batch_output(full_posterior, results)


def _batch_output(posterior, results):
    """The batch's result dict: draws, ln p0 and ln L at them, diagnostics."""
    samples = results.samples
    log_interim_prior = posterior.log_prior(samples.transpose(1, 0, 2)).transpose(1, 0, 2)
    valid = np.isfinite(log_interim_prior.sum(axis=-1)).T
    log_likelihood = posterior.log_likelihood(samples.transpose(1, 0, 2), valid).T
    return {
        "samples": samples,
        "log_likelihood": np.ascontiguousarray(log_likelihood),
        "log_interim_prior": log_interim_prior,
        **results.diagnostics(),
    }
