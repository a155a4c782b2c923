"""emcee's ensemble sampler on the hyperparameters (the default sampler).

Its proposals (``--moves``, README "Samplers of the hyperparameters"):

- ``stretch`` (the default): Goodman & Weare's stretch move (``StretchMove``);
- ``de``: differential evolution, emcee's ``DEMove`` (ter Braak 2006; a walker moves along
  the difference of two others, scaled by 2.38/√(2H)) 80 % of the steps and ``DESnookerMove``
  (ter Braak & Vrugt 2008) 20 %, the mix of emcee's tutorial on moves.

Both leave the posterior invariant. On the eight schools and on 100 normal objects
differential evolution needed 1.7–3.0× fewer ln L̂ evaluations per effective draw, measured
from the spread of posterior means over sampler seeds (``benchmarks/moves.py``); but a walker
stranded in a long tail stays there (its proposals are differences of the other walkers,
small against its distance), and emcee's τ, each walker centred on its own mean, does not see
it: on the rat tumours one of 28 runs kept such a walker and moved E[a] by 6 of its
Monte Carlo errors. The stretch move pulls a stranded walker toward the others; it stays the
default.
"""

from __future__ import annotations

import sys
import warnings

import emcee
import numpy as np
from tqdm import tqdm

from ...autocorr import integrated_time
from ...errors import UsageError
from ...mcmc import (MIN_AUTOCORR_TIMES, ConvergenceWarning, InitialisationError, ensemble_sampler, first_check,
                     initial_positions, next_check)
from .base import SamplerResult


class _StartingBlock:
    """The hyperparameter posterior as the one block of ``mcmc.initial_positions``."""

    n_blocks = 1

    def __init__(self, posterior):
        self.posterior, self.priors = posterior, posterior.priors

    def evaluate(self, theta):
        """theta (n, 1, H) -> (ln prior, ln L), each (n, 1)."""
        values = theta[:, 0, :]
        log_prior = self.posterior.log_prior(values)
        return log_prior[:, None], self.posterior.log_likelihood(values, np.isfinite(log_prior))[:, None]

    def initialisation_error(self, blocks, n_tried, n_walkers):
        return InitialisationError(
            f"Could not start the hyperparameter sampler: among {n_tried} draws from the hyperpriors fewer than "
            f"{n_walkers} give every object a finite likelihood (and Var[ln L̂] within --max-variance, if given). "
            f"Widen the hyperpriors (--hyperprior), check the --fix values, or check that the population "
            f"covers the stage-one draws.")


MOVES = {
    "de": lambda: [(emcee.moves.DEMove(), 0.8), (emcee.moves.DESnookerMove(), 0.2)],
    "stretch": lambda: [(emcee.moves.StretchMove(), 1.0)],
}
DEFAULT_MOVES = "stretch"


class EmceeSampler:
    """emcee on the hyperparameters until the chain is ≥ 50 τ long (or ``max_steps``).

    Walkers start from the hyperpriors, resampled by likelihood; the run length follows
    ``popinfer.mcmc``'s schedule; the first half of the chain is discarded, and
    ``n_samples`` draws are taken evenly spaced from the rest.

    Parameters
    ----------
    n_walkers : int
        W, an even number ≥ 2H + 2 (``--walkers``).
    max_steps : int
        Cap on steps (``--max-steps``).
    moves : str
        The proposals, a key of ``MOVES`` (``--moves``; see the module docstring).
    """

    name = "emcee"
    DEFAULT_WALKERS = 32
    DEFAULT_MAX_STEPS = 20000

    def __init__(self, n_walkers=DEFAULT_WALKERS, max_steps=DEFAULT_MAX_STEPS, moves=DEFAULT_MOVES):
        self.n_walkers, self.max_steps, self.moves = n_walkers, max_steps, moves

    @property
    def settings(self):
        return {"walkers": self.n_walkers, "max_steps": self.max_steps, "moves": self.moves}

    def check(self, names):
        if not isinstance(self.moves, str) or self.moves not in MOVES:
            raise UsageError(f"--moves {self.moves}: unknown; choose one of {', '.join(sorted(MOVES))}.", "--moves")
        if self.n_walkers < 2 * len(names) + 2 or self.n_walkers % 2:
            raise UsageError(f"--walkers {self.n_walkers}: need an even number of at least {2 * len(names) + 2}.",
                             "--walkers")

    def sample(self, posterior, n_samples, seed, progress=False):
        n_walkers, max_steps = self.n_walkers, self.max_steps
        n_dim = len(posterior.names)
        init_seed, sampler_seed = seed.spawn(2)
        start, _ = initial_positions(_StartingBlock(posterior), n_walkers, np.random.default_rng(init_seed))
        sampler = ensemble_sampler(n_walkers, n_dim, posterior, MOVES[self.moves]())
        sampler.random_state = np.random.RandomState(np.random.MT19937(sampler_seed)).get_state()
        state = start[:, 0, :]
        check, step = min(first_check(n_samples, n_walkers, MIN_AUTOCORR_TIMES), max_steps), 0
        bar = tqdm(total=max_steps, unit="step", desc="fit-population", file=sys.stderr, disable=not progress,
                   dynamic_ncols=True)
        try:
            while True:
                state = sampler.run_mcmc(state, check - step, skip_initial_state_check=True)
                bar.update(check - step)
                step = check
                kept = sampler.get_chain(discard=step // 2)
                tau = integrated_time(kept)
                converged = bool(np.all(step >= MIN_AUTOCORR_TIMES * tau))
                if converged or step >= max_steps:
                    break
                target = MIN_AUTOCORR_TIMES * np.max(tau) if np.all(np.isfinite(tau)) else np.inf
                check = min(next_check(step, target), max_steps)
                bar.set_postfix_str(f"τ ≈ {np.max(tau):.3g}")
        finally:
            bar.close()
        if not converged:
            warnings.warn(ConvergenceWarning(
                f"The hyperparameter chain did not reach {MIN_AUTOCORR_TIMES} autocorrelation times in "
                f"{step} steps (τ ≈ {np.max(tau):.3g}); raise --max-steps."), stacklevel=2)
        flat = kept.reshape(-1, n_dim)
        pick = np.round(np.linspace(0, flat.shape[0] - 1, n_samples)).astype(np.int64)
        diagnostics = {"n_steps": int(step), "converged": converged, "min_autocorr_times": MIN_AUTOCORR_TIMES,
                       "burn_in": "first half of the chain"}
        return SamplerResult(flat[pick], diagnostics, np.asarray(tau, dtype=float))
