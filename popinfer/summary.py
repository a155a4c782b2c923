"""Tables that describe popinfer files: ``popinfer summary`` and ``popinfer inspect``."""

from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pandas as pd

from . import escaping
from .errors import UsageError
from .io.hdf5 import open_popinfer_file
from .reweighting.diagnostics import low_ess_objects
from .reweighting.selection import EFFECTIVE_PER_OBJECT as SELECTION_EFFECTIVE_PER_OBJECT

QUANTILES = (0.05, 0.5, 0.95)


def samples_summary(samples):
    """Per-object, per-parameter posterior summary of a samples file.

    Returns
    -------
    pandas.DataFrame
        Columns ``object, parameter, mean, sd, q05, q50, q95, autocorr_time,
        n_steps, acceptance_fraction, converged, n_draws`` (K_n, the object's draws).
    """
    n_objects, n_draws, n_dim = samples.samples.shape
    draws = samples.samples.transpose(0, 2, 1).reshape(n_objects * n_dim, n_draws)
    ragged = samples.draw_counts is not None  # padded draws are NaN: left out
    mean, std, quantile = (np.nanmean, np.nanstd, np.nanquantile) if ragged else (np.mean, np.std, np.quantile)
    q = quantile(draws, QUANTILES, axis=1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.filterwarnings("ignore", "Degrees of freedom <= 0", RuntimeWarning)
        sd = std(draws, axis=1, ddof=1)  # an object with one draw has no sd: NaN, said by the NaN itself
    diagnostics = samples.diagnostics
    return pd.DataFrame({
        "object": np.repeat(samples.ids, n_dim),
        "parameter": np.tile(samples.parameters, n_objects),
        "mean": mean(draws, axis=1),
        "sd": sd,
        "q05": q[0],
        "q50": q[1],
        "q95": q[2],
        "autocorr_time": diagnostics["autocorr_time"].reshape(-1),
        "n_steps": np.repeat(diagnostics["n_steps"], n_dim),
        "acceptance_fraction": np.repeat(diagnostics["acceptance_fraction"], n_dim),
        "converged": np.repeat(diagnostics["converged"].astype(bool), n_dim),
        "n_draws": np.repeat(samples.object_draw_counts, n_dim),
    })


def population_summary(result):
    """Tables of a population file: hyperparameters, objects, diagnostics.

    Returns
    -------
    dict
        ``hyperparameters`` (DataFrame: name, mean, sd, q05, q50, q95,
        autocorr_time), ``objects`` (DataFrame: object, parameter, independent
        and pooled mean/sd/q05/q95, median and minimum ESS) and ``diagnostics``
        (dict).
    """
    draws = result.hyper_samples
    q = np.quantile(draws, QUANTILES, axis=0)
    hyper = pd.DataFrame({
        "hyperparameter": result.hyperparameters, "mean": draws.mean(axis=0), "sd": draws.std(axis=0, ddof=1),
        "q05": q[0], "q50": q[1], "q95": q[2],
        "autocorr_time": np.nan if result.autocorr_time is None else result.autocorr_time})
    for column in ("rhat", "ess_bulk", "ess_tail"):  # samplers with several chains (nuts)
        if isinstance(result.settings.get(column), dict):
            hyper[column] = [result.settings[column].get(name, np.nan) for name in result.hyperparameters]
    derived = derived_quantities(result)
    if derived:
        values = np.stack(list(derived.values()), axis=1)
        q = np.quantile(values, QUANTILES, axis=0)
        hyper = pd.concat([hyper, pd.DataFrame({
            "hyperparameter": list(derived), "mean": values.mean(axis=0), "sd": values.std(axis=0, ddof=1),
            "q05": q[0], "q50": q[1], "q95": q[2], "autocorr_time": np.nan})], ignore_index=True)
    n_objects, _, n_params = result.reweighted.shape
    pooled = result.reweighted
    pooled_q = np.quantile(pooled, (0.05, 0.95), axis=1)  # (2, N, P)
    independent = result.independent_summary  # (N, P, 5): mean, sd, q05, q50, q95
    objects = pd.DataFrame({
        "object": np.repeat(result.ids, n_params),
        "parameter": np.tile(result.parameters, n_objects),
        "independent_mean": independent[:, :, 0].reshape(-1),
        "independent_sd": independent[:, :, 1].reshape(-1),
        "independent_q05": independent[:, :, 2].reshape(-1),
        "independent_q95": independent[:, :, 4].reshape(-1),
        "pooled_mean": pooled.mean(axis=1).reshape(-1),
        "pooled_sd": pooled.std(axis=1, ddof=1).reshape(-1),
        "pooled_q05": pooled_q[0].reshape(-1),
        "pooled_q95": pooled_q[1].reshape(-1),
        "median_ess": np.repeat(np.median(result.ess, axis=0), n_params),
        "min_ess": np.repeat(result.ess.min(axis=0), n_params),
    })
    variance = result.ln_likelihood_variance
    diagnostics = {
        "population": result.population,
        "sampler": result.settings.get("sampler", "emcee"),
        "parameters": list(result.parameters),
        "fixed": dict(result.fixed),
        "hyperprior": dict(result.hyperprior),
        "n_steps": result.settings.get("n_steps"),
        "converged": result.settings.get("converged"),
        "chains": result.settings.get("chains"),
        "max_rhat": result.settings.get("max_rhat"),
        "divergences": result.settings.get("divergences"),
        "stage_one_draws": result.settings.get("stage_one_draws"),
        "ln_likelihood_variance_median": float(np.median(variance)),
        "ln_likelihood_variance_max": float(np.max(variance)),
        "min_ess": float(result.ess.min()),
        "log_evidence": result.log_evidence,
        "log_evidence_error": result.log_evidence_error,
        "objects_below_min_ess": len(low_ess_objects((result.ess < result.settings.get("min_ess", 20)).mean(axis=0))),
    }
    if result.selection_effective_draws is not None:
        effective = result.selection_effective_draws
        injections = result.source.get("injections", {})
        diagnostics["selection"] = {
            "injections": injections.get("path"), "injections_sha256": injections.get("sha256"),
            "injections_total": injections.get("injections_total"), "detected_injections": injections.get("detected"),
            "ln_efficiency_median": float(np.median(result.selection_ln_efficiency)),
            "effective_draws_median": float(np.median(effective)), "effective_draws_min": float(np.min(effective)),
            "effective_draws_required": SELECTION_EFFECTIVE_PER_OBJECT * n_objects,
            "fraction_below_required": float(np.mean(effective < SELECTION_EFFECTIVE_PER_OBJECT * n_objects)),
            "observing_time": result.settings.get("observing_time")}
    return {"hyperparameters": hyper, "objects": objects, "diagnostics": diagnostics}


def derived_quantities(result):
    """Per-draw quantities derived from the hyperparameters, reported beside them:
    the detection efficiency ξ̂(α) (with a selection) and the rate R (with an observing time)."""
    derived = {}
    if result.selection_ln_efficiency is not None:
        derived["detection_efficiency"] = np.exp(result.selection_ln_efficiency)
    if result.rate is not None:
        derived["R"] = np.asarray(result.rate)
    return derived


TABLES = {"population": ("hyper", "objects"), "samples": ("objects",)}


def format_population(tables, fmt, table=None):
    """Render :func:`population_summary` as ``table``, ``csv`` or ``json``.

    ``table`` (``hyper`` or ``objects``) keeps one table; csv always has exactly one
    (``hyper`` by default), so that every csv output is one valid CSV table.
    """
    if fmt == "csv" and table is None:
        table = "hyper"
    if table is not None:
        return format_frame(tables["hyperparameters" if table == "hyper" else "objects"], fmt)
    if fmt == "json":
        payload = {"hyperparameters": json.loads(tables["hyperparameters"].to_json(orient="records", double_precision=15)),
                   "objects": json.loads(tables["objects"].to_json(orient="records", double_precision=15)),
                   "diagnostics": tables["diagnostics"]}
        return json.dumps(payload, indent=2) + "\n"
    diagnostics = tables["diagnostics"]
    lines = [f"population: {diagnostics['population']} of {', '.join(diagnostics['parameters'])}"
             + (f" (fixed: {diagnostics['fixed']})" if diagnostics["fixed"] else ""),
             (f"chain: {diagnostics['n_steps']} steps, converged: {diagnostics['converged']}; "
              if diagnostics["n_steps"] is not None else
              f"{diagnostics['sampler']}: {diagnostics['chains']} chains, max R̂ {diagnostics['max_rhat']:.3f}, "
              f"{diagnostics['divergences']} divergences, converged: {diagnostics['converged']}; "
              if diagnostics["max_rhat"] is not None else
              f"{diagnostics['sampler']}: ln Z = {diagnostics['log_evidence']:.3f} ± "
              f"{diagnostics['log_evidence_error']:.3f} (relative to the interim evidence); "
              if diagnostics["log_evidence"] is not None else f"sampler: {diagnostics['sampler']}; ") +
             f"Var[ln L̂] median {diagnostics['ln_likelihood_variance_median']:.3g}, "
             f"max {diagnostics['ln_likelihood_variance_max']:.3g}; smallest ESS {diagnostics['min_ess']:.3g} "
             f"of K = {diagnostics['stage_one_draws']}"]
    selection = diagnostics.get("selection")
    if selection:
        lines.append(f"selection: {selection['injections']} ({selection['detected_injections']} detected of "
                     f"M_total = {selection['injections_total']} injections); N_eff,sel median "
                     f"{selection['effective_draws_median']:.4g}, min {selection['effective_draws_min']:.4g} "
                     f"(4N = {selection['effective_draws_required']:g}, below it at "
                     f"{selection['fraction_below_required']:.1%} of draws); ln ξ̂ median "
                     f"{selection['ln_efficiency_median']:.4g}"
                     + (f"; R per unit of observing time T = {selection['observing_time']:g}"
                        if selection["observing_time"] else ""))
    lines += ["", "hyperparameters:", format_frame(tables["hyperparameters"], "table"),
              "objects (independent = stage one, pooled = under the inferred population):",
              format_frame(tables["objects"], "table")]
    return "\n".join(lines)


def summarize_file(path, fmt, table=None, formula_safe=False):
    """Summary text of a samples or population file (``-`` reads stdin).

    ``table``: ``hyper`` or ``objects`` for a population file (csv: ``hyper`` by
    default; the other formats show both unless one is chosen), ``objects`` for a
    samples file. ``formula_safe`` (csv only): text cells that a spreadsheet would
    run as formulas get a leading ``'`` (:func:`popinfer.escaping.formula_safe`).
    """
    from .io import read_file

    if formula_safe and fmt != "csv":
        raise UsageError(f"--formula-safe applies to --format csv, not --format {fmt}.", "--formula-safe")
    kind, content = read_file(path)
    if table is not None and table not in TABLES[kind]:
        raise UsageError(f"--table {table}: a {kind} file has the table(s) {', '.join(TABLES[kind])}.", "--table")
    defuse = escaping.formula_safe if formula_safe else (lambda frame: frame)
    if kind == "population":
        tables = population_summary(content)
        tables.update(hyperparameters=defuse(tables["hyperparameters"]), objects=defuse(tables["objects"]))
        return format_population(tables, fmt, table)
    return format_frame(defuse(samples_summary(content)), fmt)


def format_frame(frame, fmt):
    """Render a summary table as ``table`` (aligned text), ``csv`` or ``json``."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(frame.to_json(orient="records", double_precision=15)), indent=2) + "\n"
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        return frame.to_string(index=False, float_format=lambda x: f"{x:.4g}") + "\n"


def inspect_file(path):
    """A readable description of a popinfer file: attributes and datasets."""
    lines = []
    with open_popinfer_file(path) as handle:
        lines.append(f"file: {path}")
        for key in sorted(handle.attrs):
            value = handle.attrs[key]
            if isinstance(value, np.ndarray):
                value = ", ".join(v.decode() if isinstance(v, bytes) else str(v) for v in value)
            elif isinstance(value, str) and value.startswith("{"):
                try:
                    value = json.dumps(json.loads(value), sort_keys=True)
                except json.JSONDecodeError:
                    pass
            lines.append(f"  {key}: {value}")
        lines.append("datasets:")

        def visit(name, item):
            if isinstance(item, h5py.Dataset):
                lines.append(f"  /{name}  {item.shape}  {item.dtype}")

        handle.visititems(visit)
        if "diagnostics/converged" in handle:
            converged = handle["diagnostics/converged"][()]
            lines.append(f"objects: {converged.size}, converged: {int(converged.sum())}")
    return "\n".join(lines) + "\n"
