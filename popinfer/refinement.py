"""``popinfer refine``: refit the objects a population fit flagged, under a population-informed
interim prior and with more draws, and keep the others — one (ragged) samples file.

What is refitted (from the population file's per-object ESS at its M posterior draws):

- every object with ESS_n < 2·``min_ess`` at ≥ 1 % of the draws (the low-ESS warning's test,
  with a margin: the refitted population's posterior reaches a little further than the last);
- while Σ_n median(1/ESS_n − 1/K_n) exceeds ``target_variance`` (default 0.5), the largest
  contributors to Var[ln L̂] (Talbot & Golomb 2023), until the rest sum to at most half of it;
- with ``moment_error`` E: while stage one's Monte Carlo error of some hyperparameter's posterior
  mean exceeds E posterior sds, the largest contributors to it, until the rest is at most E²/2
  (in units of the posterior variance). Each object's contribution is the delta method through
  its weights (``HyperLikelihood.moment_variance``), times K_n over its stage-one effective draws
  when those are fewer. Var[ln L̂] at fixed α misses this error: a refitted object's weights
  are nearly flat at every α (Var[ln L̂] ≈ 0), yet the slope of ln L̂_n across α, which moves
  the posterior means, still has an error of order 1/(τ √K_n).

How: under the defensive mixture p0' = λ p0 + (1 − λ) q (``popinfer.interim``), q the
population's posterior predictive over S of the latest fit's hyperparameter draws. An
object's first refit keeps its K_n (the mixture is the cheap remedy); an object flagged
again gets K_n' = K_n · max(2·min_ess / ESS_n,1%, its median share of Var[ln L̂] over an
even share of half the target, its share of the moments' variance over an even share of E²/2) draws, ESS_n,1% its ESS at the 1 % quantile over the draws
(what the warning looks at), rounded up to a power of two from 2 to ``MAX_GROWTH`` so that
objects share few stage-one runs. After each round the population is
fitted again (in memory, with the population file's settings) and the next round flags
from that fit, up to ``rounds`` rounds. Because p0' ≥ λ p0, the weights f/p0'
are bounded by f/(λ p0): no support is lost; because q is where the population is, the
draws concentrate where f(θ; α) is not negligible (the τ → 0 corner included).

The data and model are read again: the samples file records the data's path and SHA-256
(``settings.data``), and data whose digest differs are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import InputDataError, UsageError
from .individuals import batch_count, check_shard, fit_individuals, shard_slice
from .injections import read_injections
from .interim import MixtureSpec
from .io.files import file_sha256, recorded_file
from .io.hdf5 import check_output
from .io.refine_checkpoint import RefineCheckpoint
from .io.population import read_population
from .io.samples import DIAGNOSTICS, Samples, read_samples, write_samples
from .models import BUILTIN_MODELS
from .populations import population_of_file
from .reweighting.diagnostics import LOW_ESS_FRACTION, MAX_ESS_DRAWS
from .reweighting.fit import check_min_ess
from .seeds import resolve_seed
from .table import read_table, table_from_frame
from .user_functions import trusted_code

DEFENSIVE_WEIGHT = 0.2    # λ, the share of p0 in p0'
COMPONENTS = 200          # S, hyperparameter draws in q
MAX_GROWTH = 16           # K_n' ≤ 16 K_n in one round
VARIANCE_TARGET = 0.5     # refit the largest Var[ln L̂] contributors while the sum exceeds this
DEFAULT_ROUNDS = 3
REFIT_MARGIN = 2.0        # refit objects with ESS < 2·min_ess at ≥ 1 % of the draws
MOMENT_DRAWS = 500        # posterior draws over which each object's share of the moments' error is estimated


@dataclass
class RefineResult:
    """What ``refine`` did.

    Attributes
    ----------
    samples : Samples
        The refined samples (ragged: ``draw_counts``).
    refitted : list of str
        Ids of the objects refitted in any round.
    draws_before, draws_after : ndarray of int
        K_n of those objects before and after.
    variance_before, variance_after : float
        Median of Var[ln L̂] = Σ_n (1/ESS_n − 1/K_n) over the posterior draws of the input
        population file, and of the population fitted (in memory) to the refined samples.
    min_ess_before, min_ess_after : float
        The smallest ESS_n of any object at those draws.
    flagged_before, flagged_after : int
        Objects the low-ESS warning names (ESS < min_ess at ≥ 1 % of the draws), before and after.
    moment_error_before, moment_error_after : float or None
        With ``moment_error``: stage one's Monte Carlo error of the posterior means (the largest
        over the hyperparameters, in posterior sds) of the input population fit and of the last one.
    shard : tuple of int or None
        ``(i, n)`` of a sharded run: ``samples`` and ``refitted`` are this shard's share, and
        the "after" numbers are the "before" ones (the population is fitted to the merged file).
    """

    samples: Samples
    refitted: list
    draws_before: np.ndarray
    draws_after: np.ndarray
    variance_before: float
    min_ess_before: float
    flagged_before: int
    variance_after: float
    min_ess_after: float
    flagged_after: int
    moment_error_before: float = None
    moment_error_after: float = None
    shard: object = None

    def report(self, label="the refined samples"):
        """One line: what was refitted and how Var[ln L̂] and the smallest ESS changed."""
        if self.shard:
            return (f"Shard {self.shard[0]}/{self.shard[1]}: refitted {len(self.refitted)} of the flagged objects "
                    f"under the population-informed interim prior and kept a share of the others. Join all "
                    f"{self.shard[1]} shards with popinfer merge, then fit the population on the merged file.")
        if not self.refitted:
            return (f"Nothing to refit: no object is flagged (median Var[ln L̂] {self.variance_before:.3g}, smallest "
                    f"ESS {self.min_ess_before:.3g}); the input's draws are kept unchanged in {label}.")
        listed = ", ".join(repr(i) for i in self.refitted[:10]) + (
            f" and {len(self.refitted) - 10} more" if len(self.refitted) > 10 else "")
        grown = sorted(set(zip(self.draws_before.tolist(), self.draws_after.tolist())))
        draws = "; ".join(f"K {a} → {b}" for a, b in grown[:4]) + ("; ..." if len(grown) > 4 else "")
        warned = ("no object has low ESS any more" if not self.flagged_after else
                  f"{self.flagged_after} object(s) still have ESS below the threshold (run refine again on "
                  f"{label} and its population fit, or raise --rounds)")
        moments = ("" if self.moment_error_before is None else
                   f", stage one's error of the posterior means {self.moment_error_before:.3g} → "
                   f"{self.moment_error_after:.3g} posterior sd")
        return (f"Refitted {len(self.refitted)} object(s) ({listed}) under the population-informed interim prior "
                f"({draws}). Median Var[ln L̂] {self.variance_before:.3g} → {self.variance_after:.3g}, smallest "
                f"ESS {self.min_ess_before:.3g} → {self.min_ess_after:.3g}{moments}, objects with low ESS "
                f"{self.flagged_before} → {self.flagged_after}: {warned}. Now fit the population on {label}.")


def refine(samples, population, output=None, *, data=None, selection=None, seed=None, min_ess=None, rounds=None,
           target_variance=VARIANCE_TARGET, workers=1, progress=True, overwrite=False, command="", trust_code=False,
           weight=DEFENSIVE_WEIGHT, components=COMPONENTS, max_growth=MAX_GROWTH, resume=False, scheduler=None,
           batch_size=None, moment_error=None, shard=None):
    """Refit the objects a population fit flagged; keep the others (see the module docstring).

    Parameters
    ----------
    samples : str or Path
        The samples file the population was fitted to.
    population : str or Path
        The population file (``fit-population`` on ``samples``).
    output : str, optional
        Refined samples file to write (``-``: stdout).
    data : str, Path or pandas.DataFrame, optional
        The stage-one data, when not at the path the samples file records (its
        SHA-256 must match the recorded one).
    selection : str or Path, optional
        The injections of a population fitted with ``--selection``, when not at the path the
        population file records (its SHA-256 must match the recorded one).
    seed : int, optional
    min_ess : float, optional
        ESS below which an object is flagged (default: the population fit's ``--min-ess``).
    rounds : int, optional
        Rounds of (flag, refit, fit the population again in memory, with the population
        file's settings); stops early once no object is flagged. Default 3 (1 with ``shard``).
    target_variance : float
        While Σ_n median(1/ESS_n − 1/K_n) exceeds it, the largest contributors are
        refitted too (until the rest is at most half of it). Smaller values buy a
        less noisy ln L̂ with more draws.
    moment_error : float, optional
        E: also refit (with more draws) the largest contributors to stage one's Monte Carlo
        error of the hyperparameters' posterior means while it exceeds E posterior sds (until
        the rest is at most E/√2). About 1/√(the fit's hyperparameter draws) makes it no larger
        than the population fit's own Monte Carlo error. Default: off.
    workers : int
        Local processes for the refits.
    resume : bool
        Continue an interrupted run into the same ``output``: the refits are checkpointed
        in ``OUTPUT.partial`` (per round and draw-count group, batch by batch), and a
        resumed run gives the same file as an uninterrupted one. The inputs, seed and
        settings must be the original run's.
    scheduler : str, optional
        Run the refits on a dask.distributed cluster (``tcp://HOST:PORT`` or ``local:N``);
        the result does not depend on it.
    batch_size : int, optional
        Objects refitted together (default: ``fit_individuals``'s, from a memory budget).
    shard : tuple of int, optional
        ``(i, n)``: refit only the i-th (1-based) of n deterministic slices of the refit
        batches, keep the i-th share of the other objects, and write a shard file that
        ``merge_shards`` (``popinfer merge``) joins with the others into the file an
        unsharded run writes. One round only (the next would need every shard's refits).
    trust_code : bool
        Allow re-running a user model (or population) that the files name.
    weight : float
        λ, the share of p0 in the defensive mixture.
    components : int
        S, hyperparameter draws of the population fit in q.
    max_growth : int
        The largest factor by which one round multiplies an object's draws.

    Returns
    -------
    RefineResult
    """
    shard = check_shard(shard)
    rounds = (1 if shard else DEFAULT_ROUNDS) if rounds is None else rounds
    if not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise UsageError(f"--rounds must be a positive whole number, got {rounds!r}.", "--rounds")
    if shard and rounds > 1:
        raise UsageError(f"--shard refits one round (the next round needs the population fitted to every shard's "
                         f"refits), but --rounds {rounds} was given: use --rounds 1 (the default with --shard), "
                         f"or leave out --shard.", "--shard")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise UsageError(f"--batch-size must be a positive whole number, got {batch_size!r}.", "--batch-size")
    if min_ess is not None:
        check_min_ess(min_ess)
    if not (isinstance(target_variance, (int, float)) and target_variance > 0):
        raise UsageError(f"--target-variance must be a positive number, got {target_variance!r}.", "--target-variance")
    if moment_error is not None and not (isinstance(moment_error, (int, float)) and 0 < moment_error < 1):
        raise UsageError(f"--moment-error must be a number between 0 and 1 (posterior standard deviations), got "
                         f"{moment_error!r}.", "--moment-error")
    if resume and (output is None or str(output) == "-"):
        raise UsageError("--resume needs a file output: a run writing to stdout (or returning in memory) cannot "
                         "be resumed.", "--resume")
    for given, what in ((samples, "SAMPLES"), (population, "POPULATION")):
        if str(given) == "-":
            raise UsageError(f"refine reads {what} by name (it checks the files against each other and finds the "
                             f"data next to them); write it to a file instead of a pipe.")
    if output is not None:
        check_output(output, overwrite, inputs=[samples, population])
    label, pop_label = str(samples), str(population)
    stage_one = read_samples(samples)
    fitted = read_population(population)
    digests = file_sha256(samples), file_sha256(population)
    _check_pair(stage_one, fitted, label, pop_label, digests[0])
    _check_model(stage_one.model, label)
    model = (stage_one.model if stage_one.model in BUILTIN_MODELS else
             trusted_code(stage_one.model, stage_one.settings.get("model_code"), label, "model", trust_code,
                          "refitting"))
    density = population_of_file(fitted.population, fitted.parameters, pop_label, trust_code,
                                 fitted.source.get("population"))
    if selection is not None and not fitted.settings.get("selection"):
        raise UsageError(f"--selection {selection}: {pop_label} was fitted without selection effects, so refine uses "
                         f"no injections; leave out --selection.", "--selection")
    if selection is not None and not os.path.isfile(str(selection)):  # a shard reads them not, but is told
        raise UsageError(f"--selection {selection}: no such file; give the injections {pop_label} was fitted with.",
                         "--selection")
    if min_ess is None:
        min_ess = fitted.settings.get("min_ess", 20.0)
        try:
            check_min_ess(min_ess)
        except UsageError:
            raise InputDataError(f"{pop_label} records min_ess {min_ess!r}, which is not a number of effective "
                                 f"draws (0 or more): give --min-ess.") from None
    min_ess = float(min_ess)
    if seed is None and resume:
        seed = RefineCheckpoint.recorded_seed(output)  # the seed a run without --seed drew
    seed = resolve_seed(seed)
    fingerprint = _fingerprint(digests, seed, min_ess, rounds, target_variance, weight, components, max_growth,
                               batch_size, moment_error)
    execution = _Execution(scheduler, batch_size, _checkpoint(output, resume, overwrite, fingerprint, seed, shard),
                           shard)
    round_seeds = np.random.SeedSequence(seed).spawn(rounds)
    before = _fit_diagnostics(fitted, stage_one.object_draw_counts, min_ess)
    original_counts = stage_one.object_draw_counts.copy()
    current, current_fit, after, table, source = stage_one, fitted, before, None, digests[1]
    moments = None if moment_error is None else _moment_shares(current, current_fit, density)
    moment_before = moment_after = None if moments is None else _moment_error(moments)
    refitted, refits = np.zeros(stage_one.n_objects, dtype=bool), {}
    for round_index in range(rounds):
        counts = current.object_draw_counts
        chosen = _flagged(np.asarray(current_fit.ess, dtype=float), counts, min_ess, target_variance, moments,
                          moment_error)
        if not chosen.size:
            break
        on_mixture = (current.joint_interim[chosen].any(axis=1) if current.joint_interim is not None
                      else np.zeros(chosen.size, dtype=bool)) & refitted[chosen]
        growth = np.where(on_mixture, _growth(np.asarray(current_fit.ess, dtype=float)[:, chosen], counts[chosen],
                                              min_ess, target_variance, max_growth,
                                              None if moments is None else moments[chosen], moment_error), 1)
        new_counts = counts.copy()
        new_counts[chosen] = counts[chosen] * growth
        if table is None:  # what the refits and the fits after them read, checked before any work
            table = _data_table(stage_one, data, label)
            injections = None if shard else _injections(fitted, selection, pop_label)
        refit_seed, fit_seed = (int(s.generate_state(1, np.uint64)[0] >> np.uint64(1))
                                for s in round_seeds[round_index].spawn(2))
        spec = MixtureSpec(density, _components(current_fit, components), weight,
                           {"path": pop_label, "sha256": source} if round_index == 0 else
                           {"path": f"round {round_index} of refine", "sha256": ""})
        if progress:
            print(f"refine: round {round_index + 1}: refitting {chosen.size} object(s)", file=sys.stderr)
        refits = _refit(current, table, chosen, new_counts, spec, refit_seed, workers, progress, execution,
                        round_index, model)
        current = _assemble(current, chosen, refits, new_counts, spec, seed, command, min_ess)
        refitted[chosen] = True
        if shard:
            break  # one round: the next needs every shard's refits
        current_fit = _fit_again(current, fitted, min_ess, fit_seed, progress, injections, density)
        after = _fit_diagnostics(current_fit, current.object_draw_counts, min_ess)
        if moment_error is not None:
            moments = _moment_shares(current, current_fit, density)
            moment_after = _moment_error(moments)
    final_counts, share = current.object_draw_counts, None
    if shard:
        share = _shard_share(refitted, refits, shard)
        refitted &= np.isin(np.arange(stage_one.n_objects), share)
        current = _rows(current, share)
    if output is not None:
        write_samples(current, output, overwrite=overwrite, positions=share, extra_attrs=None if not shard else {
            "shard": f"{shard[0]}/{shard[1]}", "fingerprint": fingerprint, "n_objects_total": stage_one.n_objects})
    if execution.checkpoint is not None:
        execution.checkpoint.finish()
    return RefineResult(current, [stage_one.ids[n] for n in np.flatnonzero(refitted)],
                        original_counts[refitted], final_counts[refitted], *before, *after, moment_before,
                        moment_after, shard=shard)


@dataclass
class _Execution:
    """How the refits run: on a Dask cluster or not, in batches of what size, checkpointed (a
    file output) or in memory, and which shard's share of them (only the batch size and the
    shard change what is written)."""

    scheduler: object = None
    batch_size: object = None
    checkpoint: object = None
    shard: object = None


def _fingerprint(digests, seed, *settings):
    """Digest of what decides a refine's result: the input files, the seed and the settings
    (what a resumed run, and the shards of one run, must share)."""
    return hashlib.sha256(json.dumps({"inputs": list(digests), "seed": int(seed), "settings": [
        None if value is None else float(value) for value in settings]}).encode()).hexdigest()


def _checkpoint(output, resume, overwrite, fingerprint, seed, shard):
    """The :class:`RefineCheckpoint` of a run writing a file (checked against a leftover
    one before any work), or None for ``-`` and in-memory runs."""
    if output is None or str(output) == "-":
        return None
    return RefineCheckpoint(output, f"{fingerprint}:{shard}" if shard else fingerprint, seed).start(resume, overwrite)


def _shard_share(refitted, refits, shard):
    """The objects of shard (i, n), in file order: its refits and the i-th of n slices of the kept objects."""
    kept = np.flatnonzero(~refitted)
    lo, hi = shard_slice(shard, len(kept))
    share = np.union1d(kept[lo:hi], np.fromiter(refits, dtype=np.int64, count=len(refits)))
    if not share.size:
        raise UsageError(f"--shard {shard[0]}/{shard[1]}: this shard would hold no object ({len(refitted)} objects, "
                         f"{int(refitted.sum())} refitted): use fewer shards, or a smaller --batch-size.", "--shard")
    return share


def _rows(samples, rows):
    """The :class:`Samples` of some objects (``rows``, indices) of ``samples``."""
    def pick(value):
        return None if value is None else np.asarray(value)[rows]

    return Samples(
        ids=[samples.ids[n] for n in rows], parameters=list(samples.parameters), samples=samples.samples[rows],
        log_interim_prior=samples.log_interim_prior[rows], log_likelihood=samples.log_likelihood[rows],
        diagnostics={name: pick(value) for name, value in samples.diagnostics.items()}, model=samples.model,
        interim_prior=dict(samples.interim_prior), settings=dict(samples.settings), seed=samples.seed,
        command=samples.command, draw_counts=samples.object_draw_counts[rows],
        joint_interim=pick(samples.joint_interim))


def _check_model(model, label):
    if model == "imported":
        raise UsageError(f"{label} holds imported draws (import-samples): popinfer has no model to refit its "
                         f"objects with. Refit them with the fitter that made them.")


def _fit_again(samples, fitted, min_ess, seed, progress, injections=None, density=None):
    """Stage two on ``samples`` in memory, with the population file's population, hyperpriors and settings
    (its sampler and backend too),
    keeping MAX_ESS_DRAWS hyperparameter draws at most: refine reads the ESS and Var[ln L̂] at that many
    (as a fit of more does), q's S components and the moments' draws from them, and evaluating the
    fit's other draws (3000 of the default 4000) would buy nothing. The chain runs as long (50 τ).
    ``density``: the file's population (its user code found where the file records it); ``injections``:
    the population file's (:func:`_injections`), for a fit with selection effects."""
    from .reweighting import fit_population
    from .reweighting.samplers import ACCEPTED, SAMPLER_OPTIONS

    settings = fitted.settings
    selection = {} if injections is None else {"selection": injections}  # the population file's, read up front
    sampler = settings.get("sampler", "emcee")  # and that fit's sampler, with its own options (others are refused)
    own = SAMPLER_OPTIONS.get(sampler)
    own = ACCEPTED if own is None else own  # a sampler registered without its options: emcee's settings
    recorded = {"n_walkers": "walkers"}  # the settings' names of fit_population's options
    sampler_options = {key: int(settings[recorded.get(key, key)]) for key in own if key != "moves"
                       and settings.get(recorded.get(key, key)) is not None}
    if sampler == "emcee":  # a file that records no moves was fitted with the stretch move
        sampler_options["moves"] = settings.get("moves", "stretch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # this fit's diagnostics are what refine reads and reports
        return fit_population(
            samples, fitted.population if density is None else density, parameters=fitted.parameters,
            hyperpriors=dict(fitted.hyperprior),
            fixed=dict(fitted.fixed), min_ess=min_ess, max_variance=settings.get("max_variance"),
            n_samples=min(int(settings.get("samples", 4000)), MAX_ESS_DRAWS), n_reweighted=1, seed=seed,
            progress=progress, sampler=sampler, **sampler_options, **selection,
            backend=settings.get("backend_option", settings.get("backend", "numpy")),  # auto chooses again here
            exp_precision=settings.get("exp_precision", "double"))


def _fit_diagnostics(fit, counts, min_ess):
    """(median Var[ln L̂], smallest ESS, objects the low-ESS warning names) of a population fit."""
    ess = np.asarray(fit.ess, dtype=float)
    variance = np.asarray(fit.ln_likelihood_variance)[np.asarray(fit.ess_draw_index)]
    flagged = int(np.sum(np.mean(ess < min_ess, axis=0) >= LOW_ESS_FRACTION))
    return float(np.median(variance)), float(ess.min()), flagged


def _check_pair(samples, fitted, label, pop_label, digest):
    """Refuse a population file that was not fitted to these samples."""
    recorded = fitted.source.get("sha256", "")
    if recorded and digest and recorded != digest:
        raise InputDataError(
            f"{pop_label} was fitted to {fitted.source.get('path')!r} (SHA-256 {recorded[:12]}…), not to {label} "
            f"(SHA-256 {digest[:12]}…). Give refine the samples file the population was fitted to, or fit the "
            f"population to {label} first.")
    if list(fitted.ids) != list(samples.ids):
        differ = next((i for i, (a, b) in enumerate(zip(fitted.ids, samples.ids)) if a != b),
                      min(len(fitted.ids), len(samples.ids)))
        raise InputDataError(
            f"{pop_label} describes {len(fitted.ids)} objects and {label} holds {len(samples.ids)}; they differ from "
            f"object {differ + 1} on. Give refine the samples file the population was fitted to.")
    missing = [p for p in fitted.parameters if p not in samples.parameters]
    if missing:
        raise InputDataError(f"{pop_label} describes {', '.join(missing)}, which {label} does not sample. Give "
                             f"refine the samples file the population was fitted to.")


def _flagged(ess, counts, min_ess, target_variance=VARIANCE_TARGET, moments=None, moment_error=None):
    """Indices of the objects to refit: those with ESS < REFIT_MARGIN·min_ess at ≥ 1 % of the draws (the
    low-ESS warning's test, with a margin: the next fit's posterior reaches a little further), then the
    largest Var[ln L̂] contributors, then (with ``moment_error`` E and ``moments`` (N, H), each object's
    share of the variance of the posterior means in posterior variances) the largest contributors to
    the moments' error."""
    low = np.mean(ess < REFIT_MARGIN * min_ess, axis=0) >= LOW_ESS_FRACTION
    with np.errstate(divide="ignore"):
        contribution = np.median(1.0 / ess - 1.0 / counts[None, :], axis=0)
    chosen = set(np.flatnonzero(low).tolist())
    if np.sum(contribution) > target_variance:
        _add_largest(chosen, contribution, target_variance, exclude=low)
    if moments is not None and np.max(np.sum(moments, axis=0)) > moment_error**2:
        share = np.max(moments, axis=1)
        _add_largest(chosen, share, moment_error**2, exclude=np.isin(np.arange(share.size), list(chosen)))
    return np.array(sorted(chosen), dtype=np.int64)


def _add_largest(chosen, contribution, target, exclude):
    """Add the largest contributors to ``chosen`` until the others (and the ``exclude``d) sum to ≤ target/2."""
    rest = float(np.sum(np.where(exclude, 0.0, contribution)))
    for n in np.argsort(-contribution):
        if rest <= 0.5 * target:
            break
        if n not in chosen:
            chosen.add(int(n))
            rest -= contribution[n]


def _growth(ess, counts, min_ess, target_variance, max_growth, moments=None, moment_error=None):
    """Draw multipliers K_n'/K_n (ESS grows, and the variances fall, in proportion to K), a power of two
    in [2, max_growth]: the largest of REFIT_MARGIN·min_ess over the 1 %-quantile ESS, the object's median
    share of Var[ln L̂] over an even share of half the target, and (with ``moment_error`` E) its largest
    share of the moments' variance over an even share of E²/2 (``ess`` (M, n), ``counts`` (n,) and
    ``moments`` (n, H) of the n objects)."""
    low = np.maximum(np.quantile(ess, LOW_ESS_FRACTION, axis=0), 1e-3)
    with np.errstate(divide="ignore"):
        contribution = np.median(1.0 / ess - 1.0 / counts[None, :], axis=0)
    share = 0.5 * target_variance / ess.shape[1]
    wanted = np.maximum(REFIT_MARGIN * min_ess / low, contribution / share)
    if moments is not None:
        wanted = np.maximum(wanted, np.max(moments, axis=1) / (0.5 * moment_error**2 / ess.shape[1]))
    wanted = np.clip(wanted, 2.0, max_growth)
    return np.minimum(2 ** np.ceil(np.log2(wanted)), max_growth).astype(np.int64)


def _moment_shares(samples, fit, density):
    """(N, H): each object's share of the Monte Carlo variance of the posterior means of the sampled
    hyperparameters, in units of their posterior variances, over MOMENT_DRAWS of the fit's draws
    (``HyperLikelihood.moment_variance``), times K_n over the object's stage-one effective draws where
    those are fewer (autocorrelated draws: stage one records the effective size of its K_n draws, ≈ 0.8 K_n)."""
    from .reweighting.inputs import read_draws
    from .reweighting.likelihood import HyperLikelihood

    header, _, theta, log_interim, _ = read_draws(samples, list(fit.parameters))
    draws = np.asarray(fit.hyper_samples, dtype=float)
    draws = draws[_evenly_spaced(len(draws), MOMENT_DRAWS)]
    spread = draws.std(axis=0)
    centred = (draws - draws.mean(axis=0)) / (len(draws) * np.where(spread > 0, spread, 1.0))
    likelihood = HyperLikelihood(density, theta, log_interim, fixed=dict(fit.fixed), copy=False,
                                 draw_counts=header.draw_counts)
    try:
        shares = likelihood.moment_variance(likelihood.hyper(list(fit.hyperparameters), draws), centred)
    finally:
        likelihood.close()
    effective = np.asarray(samples.diagnostics.get("effective_draws", np.full(samples.n_objects, np.nan)), float)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(effective > 0, samples.object_draw_counts / effective, 1.0)
    return shares * np.maximum(factor, 1.0)[:, None]


def _moment_error(moments):
    """Stage one's Monte Carlo error of the posterior means, the largest over the hyperparameters, in sds."""
    return float(np.sqrt(np.max(np.sum(moments, axis=0)))) if moments.size else 0.0


def _evenly_spaced(size, count):
    """Indices of at most ``count`` of ``size`` draws, evenly spaced over them."""
    return np.unique(np.round(np.linspace(0, size - 1, min(count, size))).astype(int))


def _components(fitted, n_components):
    """S hyperparameter draws, evenly spaced over the posterior, with the held ones: the α_s of q."""
    draws = fitted.hyper_samples
    index = _evenly_spaced(len(draws), n_components)
    hyper = {name: draws[index, i] for i, name in enumerate(fitted.hyperparameters)}
    hyper.update({name: np.full(len(index), float(value)) for name, value in fitted.fixed.items()})
    return hyper


def _injections(fitted, selection, pop_label):
    """The :class:`Injections` a population was fitted with (None without selection effects): found
    (``selection``, else the recorded path: as written, then beside the population file under that
    relative path or that file name), verified against the recorded SHA-256, and read."""
    chosen = fitted.settings.get("selection")
    if not chosen:
        return None
    recorded, group = fitted.source.get("injections") or {}, chosen.get("group")
    source = recorded.get("path") or ""
    if group and source.endswith(f" (group {group})"):  # the path is recorded with its HDF5 group
        source = source[:-len(f" (group {group})")]
    if selection is not None:
        path = str(selection)  # a file (checked before any work)
    else:
        path = recorded_file(source, pop_label)
        if path is None:
            raise InputDataError(f"{pop_label} was fitted with the injections {source!r} (--selection), which are not "
                                 f"there (nor beside {pop_label}). Pass --selection PATH with that file.")
    digest = file_sha256(path)
    if recorded.get("sha256") and digest != recorded["sha256"]:
        raise InputDataError(f"{path} is not the injections {pop_label} was fitted with: its SHA-256 is "
                             f"{digest[:12]}…, the recorded one ({source!r}) {recorded['sha256'][:12]}…. Pass "
                             f"--selection with the original file.")
    declared = chosen.get("draw_prior") or {}
    return read_injections(path, list(fitted.parameters),
                           None if "joint" in declared else [f"{k}={v}" for k, v in declared.items()],
                           chosen.get("injections_total"), group)


def _data_table(samples, data, label):
    """The stage-one data, found (``data``, else the recorded path: as written, then beside the samples
    file under that relative path or that file name) and verified against the recorded SHA-256."""
    recorded = samples.settings.get("data") or {}
    id_column = samples.settings.get("id_column")
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        table = table_from_frame(data, id_column)
        where = "the DataFrame"
    else:
        path = data
        if path is None:
            source = recorded.get("source")
            path = recorded_file(source, label)
            if path is None:
                raise InputDataError(
                    f"{label} was fitted to the data {source!r}, which is not there (nor beside {label}). Pass "
                    f"--data PATH with that table.")
        table = read_table(path, id_column)
        where = str(path)
    if recorded.get("sha256") and table.sha256 != recorded["sha256"]:
        raise InputDataError(
            f"{where} is not the data {label} was fitted to: its SHA-256 is {table.sha256[:12]}…, the recorded "
            f"one ({recorded.get('source')!r}) {recorded['sha256'][:12]}…. Pass --data with the original table.")
    missing = [i for i in samples.ids if i not in set(table.ids)]
    if missing:
        raise InputDataError(f"{where} has no rows of object(s) {', '.join(map(repr, missing[:5]))} of {label}.")
    return table


def _refit(samples, table, chosen, new_counts, spec, seed, workers, progress, execution=None, round_index=0,
           model=None):
    """Stage one under p0' for the chosen objects, one run per distinct K_n': {object index: (Samples, row)}.
    With a checkpoint, each run is one of its refits (read back when a resumed run finds it finished).
    ``model``: the samples' model, a user model's file found where they record it (default: as named)."""
    execution = execution or _Execution()
    slices = _group_batches(samples, chosen, new_counts, execution)

    settings = samples.settings
    ids = table.frame[table.id_column].astype(str).str.strip()
    groups = sorted(set(new_counts[chosen].tolist()))
    streams = np.random.SeedSequence(seed).spawn(len(groups))
    out = {}
    for n_draws, stream, batches in zip(groups, streams, slices):
        if batches is not None and batches[0] == batches[1]:
            continue  # none of this group's batches is this shard's
        members = [n for n in chosen if new_counts[n] == n_draws]
        frame = table.frame[ids.isin({samples.ids[n] for n in members}).to_numpy()]
        group_seed = int(stream.generate_state(1, np.uint64)[0] >> np.uint64(1))

        def fit(output=None):
            return fit_individuals(
                frame, samples.model if model is None else model, output, priors=dict(samples.interim_prior),
                fixed=dict(settings.get("fixed") or {}), columns=dict(settings.get("columns") or {}),
                id_column=table.id_column, n_draws=int(n_draws),
                max_steps=max(int(settings.get("max_steps", 20000)), 1),
                workers=workers, seed=group_seed, progress=progress, interim_mixture=spec,
                scheduler=execution.scheduler, batch_size=execution.batch_size, resume=output is not None,
                batches=batches)

        if execution.checkpoint is None:
            fitted = fit()
        else:
            key = hashlib.sha256(json.dumps({
                "round": round_index, "draws": int(n_draws), "objects": [samples.ids[n] for n in members],
                "seed": group_seed, "batch_size": execution.batch_size, "mixture": spec.fingerprint(),
                "batches": batches},
                sort_keys=True).encode()).hexdigest()[:16]
            fitted = execution.checkpoint.refit(f"round{round_index + 1}-K{int(n_draws)}-{key}", fit, read_samples)
        rows = {object_id: row for row, object_id in enumerate(fitted.ids)}
        for n in members:
            if samples.ids[n] in rows:  # a shard fits some of the group's batches
                out[n] = (fitted, rows[samples.ids[n]])
    return out


def _group_batches(samples, chosen, new_counts, execution):
    """Per draw-count group (in ``_refit``'s order), the half-open range of its batches that this
    shard refits: the shard's slice of all groups' batches, one after the other (None: all)."""
    groups = sorted(set(new_counts[chosen].tolist()))
    if not execution.shard:
        return [None] * len(groups)
    settings = samples.settings
    counts = [batch_count(int(np.sum(new_counts[chosen] == k)), samples.model, int(k), len(samples.parameters),
                          max(int(settings.get("max_steps", 20000)), 1), execution.batch_size) for k in groups]
    lo, hi = shard_slice(execution.shard, sum(counts))
    starts = np.cumsum([0] + counts)
    return [(int(min(max(lo - start, 0), count)), int(min(max(hi - start, 0), count)))
            for start, count in zip(starts[:-1], counts)]


def _assemble(samples, chosen, refits, new_counts, spec, seed, command, min_ess):
    """One samples file: the kept objects' draws as they were, the refitted objects' new ones (ragged)."""
    n_objects, n_dim = samples.n_objects, len(samples.parameters)
    width = int(max(samples.n_draws, new_counts.max()))
    counts = samples.object_draw_counts.copy()

    def grid(old, tail_shape):
        out = np.full((n_objects, width) + tail_shape, np.nan)
        out[:, :old.shape[1]] = old
        return out

    theta = grid(samples.samples, (n_dim,))
    log_interim = grid(samples.log_interim_prior, (n_dim,))
    log_likelihood = grid(samples.log_likelihood, ())
    joint = (np.zeros((n_objects, n_dim), dtype=bool) if samples.joint_interim is None
             else np.array(samples.joint_interim, dtype=bool))
    diagnostics = {name: np.array(value) for name, value in samples.diagnostics.items()}
    for n in sorted(refits):  # every chosen object, or a shard's share of them
        fitted, row = refits[n]
        k = int(new_counts[n])
        columns = [fitted.parameters.index(p) for p in samples.parameters]
        theta[n] = np.nan
        log_interim[n] = np.nan
        log_likelihood[n] = np.nan
        theta[n, :k] = fitted.samples[row][:, columns]
        log_interim[n, :k] = fitted.log_interim_prior[row][:, columns]
        log_likelihood[n, :k] = fitted.log_likelihood[row]
        joint[n] = fitted.joint_interim[row][columns]
        counts[n] = k
        for name in DIAGNOSTICS:
            value = fitted.diagnostics[name][row]
            diagnostics[name][n] = value[columns] if np.ndim(value) else value
    rounds = list(samples.settings.get("refinement", []))
    rounds.append({"objects": [samples.ids[n] for n in chosen],
                   "draws": {samples.ids[n]: int(new_counts[n]) for n in chosen},
                   "min_ess": min_ess, "seed": int(seed), "interim_mixture": spec.describe()})
    return Samples(
        ids=list(samples.ids), parameters=list(samples.parameters), samples=theta, log_interim_prior=log_interim,
        log_likelihood=log_likelihood, diagnostics=diagnostics, model=samples.model,
        interim_prior=dict(samples.interim_prior), settings={**samples.settings, "refinement": rounds}, seed=seed,
        command=command, draw_counts=counts if (counts < width).any() else None,
        joint_interim=joint if joint.any() else None)


__all__ = ["refine", "RefineResult"]
