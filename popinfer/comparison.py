"""Choosing a population: leave-one-object-out (PSIS-LOO) and evidence, side by side
(``popinfer compare``).

Leave-one-object-out uses each object's ln L̂_n(α) = ln (1/K) Σ_k w_nk stored at M ≤ 1000
posterior draws (``/objects/log_likelihood``) and ArviZ's Pareto-smoothed importance
sampling (Vehtari, Gelman & Gabry 2017): elpd_loo = Σ_n ln p(data_n | data_−n). The
evidence ln Z comes from nested sampling (``fit-population --sampler nested``).

Both are relative to the interim prior: ln L̂_n estimates ln p(data_n | α) − ln Z0_n,
with Z0_n the object's evidence under the interim prior, so elpd_loo and ln Z are
shifted by −Σ_n ln Z0_n. The shift is the same for every population fitted to one
samples file and cancels in Δelpd and in Bayes factors; that is why files made from
different samples files (by SHA-256) are refused.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import InputDataError, PopinferError, UsageError
from .summary import format_frame

# Objects whose Pareto k̂ exceeds this have an unreliable PSIS estimate (Vehtari et al. 2017).
PARETO_K_THRESHOLD = 0.7
ROW_KEYS = ("file", "population", "sampler", "rank", "n_hyperparameters", "elpd_loo", "elpd_loo_se", "delta_elpd_loo",
            "delta_elpd_loo_se", "p_loo", "log_evidence", "log_evidence_error", "log_bayes_factor",
            "log_bayes_factor_error", "max_pareto_k", "high_pareto_k_objects", "min_ess",
            "ln_likelihood_variance_max")


class ComparisonWarning(UserWarning):
    """A comparison diagnostic: large Pareto k, or a file without per-object likelihoods."""


@dataclass
class LeaveOneOut:
    """PSIS-LOO of one population file.

    Attributes
    ----------
    elpd_loo, se, p_loo : float
        Σ_n ln p(data_n | data_−n) (relative to the interim evidence), its standard
        error and the effective number of parameters.
    pointwise : ndarray, shape (N,)
        Each object's term.
    pareto_k : ndarray, shape (N,)
        Pareto k̂ of each object's importance weights (> 0.7: unreliable).
    elpd : object
        ArviZ's ELPDData, for :func:`arviz.compare`.
    """

    elpd_loo: float
    se: float
    p_loo: float
    pointwise: np.ndarray
    pareto_k: np.ndarray
    elpd: object

    def high_k(self, ids):
        """Ids of the objects with k̂ > 0.7, worst first."""
        order = np.argsort(-self.pareto_k)
        return [ids[n] for n in order if self.pareto_k[n] > PARETO_K_THRESHOLD]


def _arviz():
    try:
        import arviz
    except ImportError:
        raise PopinferError("Leave-one-object-out needs ArviZ, which is not installed. Install the export extra: "
                            "pip install 'popinfer[export]'.") from None
    return arviz


def leave_one_out(result):
    """PSIS-LOO over objects of a :class:`~popinfer.io.population.PopulationResult`,
    or None when the file stores no per-object log-likelihoods (written before they were)."""
    log_likelihood = result.object_log_likelihood
    if log_likelihood is None or not np.isfinite(log_likelihood).any():
        return None
    arviz = _arviz()
    log_likelihood = np.asarray(log_likelihood, dtype=float)
    selection = getattr(result, "selection_ln_efficiency", None)
    if selection is not None:
        # With selection effects each object's term is ln L̂_n(α) − ln ξ̂(α) (ln L = Σ_n ln L̂_n − N ln ξ̂).
        log_likelihood = log_likelihood - np.asarray(selection)[np.asarray(result.ess_draw_index)][:, None]
    draws = np.asarray(result.hyper_samples)[np.asarray(result.ess_draw_index)]
    data = arviz.from_dict(
        posterior={name: draws[None, :, i] for i, name in enumerate(result.hyperparameters)},
        log_likelihood={"objects": log_likelihood[None]},
        coords={"object": list(result.ids)}, dims={"objects": ["object"]})
    with warnings.catch_warnings():
        # ArviZ's own k warning names no object; ours does (compare_populations).
        warnings.simplefilter("ignore")
        # The M draws are thinned, nearly independent posterior draws: relative efficiency 1.
        elpd = arviz.loo(data, pointwise=True, reff=1.0)
    return LeaveOneOut(float(elpd.elpd_loo), float(elpd.se), float(elpd.p_loo), np.asarray(elpd.loo_i.values),
                       np.asarray(elpd.pareto_k.values), elpd)


def _check_same_samples(results, labels):
    digests = {label: result.source.get("sha256", "") for label, result in zip(labels, results)}
    known = {label: digest for label, digest in digests.items() if digest}
    if len(set(known.values())) > 1:
        listed = "; ".join(f"{label} from {results[labels.index(label)].source.get('path', '?')} "
                           f"(SHA-256 {digest[:12]}…)" for label, digest in known.items())
        raise InputDataError(
            f"These population files were made from different samples files: {listed}. elpd_loo and ln Z are "
            f"relative to the interim evidence of their samples file, so they compare only within one. Fit every "
            f"population to the same samples file and compare those.")
    if len(known) < len(results) and len(results) > 1:
        unknown = ", ".join(label for label in labels if not digests[label])
        warnings.warn(ComparisonWarning(
            f"{unknown}: made from samples in memory (no SHA-256 recorded), so it cannot be checked that every "
            f"file comes from the same samples."), stacklevel=3)
    first = results[0]
    for label, result in zip(labels[1:], results[1:]):
        if list(result.ids) != list(first.ids):
            raise InputDataError(f"{label} and {labels[0]} hold different objects; compare populations fitted to "
                                 f"one samples file.")


def _none(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def compare_populations(results, labels):
    """One row per population, ranked by elpd_loo (best first).

    Parameters
    ----------
    results : list of PopulationResult
        Populations fitted to one samples file.
    labels : list of str
        Their names in the table (file names).

    Returns
    -------
    list of dict
        Keys ``ROW_KEYS``; ``None`` where a quantity is not available (ln Z without
        nested sampling, elpd_loo for files without per-object likelihoods).
    """
    if not results:
        raise InputDataError("Nothing to compare: give one or more population files.")
    _check_same_samples(results, labels)
    loos = [leave_one_out(result) for result in results]
    for label, loo, result in zip(labels, loos, results):
        if loo is None:
            warnings.warn(ComparisonWarning(
                f"{label} stores no per-object log-likelihoods (/objects/log_likelihood), so it has no elpd_loo; "
                f"refit it with this version of popinfer."), stacklevel=2)
        elif loo.high_k(result.ids):
            high = loo.high_k(result.ids)
            warnings.warn(ComparisonWarning(
                f"{label}: PSIS-LOO is unreliable for {len(high)} object(s) with Pareto k > {PARETO_K_THRESHOLD} "
                f"({', '.join(repr(i) for i in high[:10])}{' …' if len(high) > 10 else ''}): each is influential "
                f"enough that leaving it out changes the posterior a lot. Treat their elpd terms with care (a "
                f"brute-force refit without them is exact)."), stacklevel=2)
    rows = []
    for label, result, loo in zip(labels, results, loos):
        rows.append({
            "file": label, "population": result.population, "sampler": result.settings.get("sampler", "emcee"),
            "rank": None, "n_hyperparameters": len(result.hyperparameters),
            "elpd_loo": loo.elpd_loo if loo else None, "elpd_loo_se": loo.se if loo else None,
            "delta_elpd_loo": None, "delta_elpd_loo_se": None, "p_loo": loo.p_loo if loo else None,
            "log_evidence": result.log_evidence, "log_evidence_error": result.log_evidence_error,
            "log_bayes_factor": None, "log_bayes_factor_error": None,
            "max_pareto_k": float(np.max(loo.pareto_k)) if loo else None,
            "high_pareto_k_objects": loo.high_k(result.ids) if loo else [],
            "min_ess": float(np.min(result.ess)),
            "ln_likelihood_variance_max": float(np.max(result.ln_likelihood_variance))})
    scored = [i for i, loo in enumerate(loos) if loo is not None]
    if scored:
        # Δelpd and its standard error from the paired pointwise differences (ArviZ).
        table = _arviz().compare({str(i): loos[i].elpd for i in scored}, ic="loo")
        for key, entry in table.iterrows():
            row = rows[int(key)]
            row["rank"] = int(entry["rank"]) + 1
            row["delta_elpd_loo"] = float(entry["elpd_diff"])
            row["delta_elpd_loo_se"] = float(entry["dse"])
    with_evidence = [row for row in rows if row["log_evidence"] is not None]
    if with_evidence:
        best = max(with_evidence, key=lambda row: row["log_evidence"])
        for row in with_evidence:
            # ln B = ln Z - ln Z_best: the interim evidence cancels.
            row["log_bayes_factor"] = row["log_evidence"] - best["log_evidence"]
            row["log_bayes_factor_error"] = (0.0 if row is best else
                                             math.hypot(row["log_evidence_error"], best["log_evidence_error"]))
    rows.sort(key=lambda row: (row["rank"] is None, row["rank"] or 0,
                               -(row["log_evidence"] if row["log_evidence"] is not None else -math.inf)))
    return [{key: _none(row[key]) for key in ROW_KEYS} for row in rows]


def format_comparison(rows, fmt):
    """Render :func:`compare_populations` rows as ``table``, ``csv`` or ``json``."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    frame = pd.DataFrame(rows, columns=ROW_KEYS)
    frame["high_pareto_k_objects"] = [" ".join(map(str, ids)) for ids in frame["high_pareto_k_objects"]]
    if fmt == "csv":
        return format_frame(frame, "csv")
    shown = frame.drop(columns=["high_pareto_k_objects"])
    notes = [f"{row['file']}: Pareto k > {PARETO_K_THRESHOLD} for {row['high_pareto_k_objects']}"
             for row in frame.to_dict("records") if row["high_pareto_k_objects"]]
    footer = ("elpd_loo and ln Z are relative to the samples file's interim evidence (it cancels in Δelpd and in "
              "ln B = ln Z − ln Z_best).")
    return format_frame(shown, "table") + "".join(f"{note}\n" for note in notes) + footer + "\n"


def compare_files(paths, fmt="table"):
    """``popinfer compare``: the comparison table of population files."""
    from .io.population import read_population

    names = [str(path) for path in paths]
    for i, name in enumerate(names):
        for other in names[:i]:
            if name == other or (name != "-" and other != "-" and os.path.realpath(name) == os.path.realpath(other)):
                raise UsageError(f"{name} is given more than once ({other}): compare different population files, "
                                 f"each once.")
    results = [read_population(path) for path in paths]
    return format_comparison(compare_populations(results, [str(p) for p in paths]), fmt)
