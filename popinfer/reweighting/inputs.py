"""Stage two's input: the draws of the described parameters, read by blocks, and checks on them."""

from __future__ import annotations

import numpy as np

from ..blocks import object_blocks
from ..errors import InputDataError, UsageError
from ..injections import Injections, read_injections
from ..io.hdf5 import open_popinfer_file, spooled_input
from ..io.samples import Samples, check_finite_draws, read_columns, read_header


def read_draws(samples, parameters):
    """(header, parameters, θ (N, K, P), Σ ln p0 (N, K), source dict) of the draws stage two needs.

    From a file only the chosen parameters' columns are read, by blocks of objects;
    stdin is spooled to a temporary file, and the SHA-256 is computed by blocks too.
    """
    if isinstance(samples, Samples):
        parameters = choose_parameters(samples, parameters)
        columns = [samples.parameters.index(p) for p in parameters]
        theta = np.ascontiguousarray(samples.samples[:, :, columns], dtype=float)
        check_finite_draws(theta, samples.ids, "The samples", draw_counts=samples.draw_counts)
        log_interim = samples.log_interim_prior[:, :, columns].sum(axis=-1)
        return samples, parameters, theta, log_interim, {"path": "<memory>", "sha256": ""}
    label = "<stdin>" if str(samples) == "-" else str(samples)
    with spooled_input(samples) as (source, digest), open_popinfer_file(source, "samples") as handle:
        header = read_header(handle, label)
        parameters = choose_parameters(header, parameters)
        theta, log_interim = read_columns(handle, [header.parameters.index(p) for p in parameters], label)
    return header, parameters, theta, log_interim, {"path": label, "sha256": digest}


def choose_parameters(samples, parameters):
    parameters = list(parameters or [])
    if not parameters:
        if len(samples.parameters) != 1:
            raise UsageError(
                f"The samples have parameters {', '.join(samples.parameters)}; say which the population "
                f"describes with --parameter NAME.",
                "--parameter",
            )
        parameters = list(samples.parameters)
    for name in parameters:
        if name not in samples.parameters:
            raise UsageError(
                f"--parameter {name}: the samples have no parameter {name!r}; they have "
                f"{', '.join(samples.parameters)}.",
                "--parameter",
            )
    if len(set(parameters)) != len(parameters):
        raise UsageError("--parameter names a parameter twice.", "--parameter")
    joint = getattr(samples, "joint_interim", None)
    if joint is not None:
        # A joint interim density (import-samples' log_prior column, or refine's mixture) is divided
        # out whole or not at all: its columns must all be described, or none of them.
        chosen = np.isin(samples.parameters, parameters)
        split = np.flatnonzero((joint & chosen).any(axis=1) & (joint & ~chosen).any(axis=1))
        if split.size:
            columns = [p for p, j in zip(samples.parameters, joint[split[0]]) if j]
            raise UsageError(
                f"Object {samples.ids[split[0]]!r} (and {split.size - 1} more) carries one joint interim prior of "
                f"{', '.join(columns)} (a log_prior column, or a refined fit's mixture prior), which cannot be "
                f"divided out for a subset: the population must describe all of {', '.join(columns)}, or none.",
                "--parameter")
    return parameters


def independent_summary(theta):
    """Stage-one mean, sd, 5/50/95 % quantiles per object and parameter, (N, P, 5), by blocks
    (NaN padding of a ragged file left out)."""
    out = np.empty((theta.shape[0], theta.shape[-1], 5))
    for lo, hi in object_blocks(theta.shape[0], theta[0].size):
        block = theta[lo:hi]
        if np.isnan(block).any():
            out[lo:hi] = np.stack([np.nanmean(block, axis=1), np.nanstd(block, axis=1, ddof=1),
                                   *np.nanquantile(block, (0.05, 0.5, 0.95), axis=1)], axis=-1)
        else:
            out[lo:hi] = np.stack([block.mean(axis=1), block.std(axis=1, ddof=1),
                                   *np.quantile(block, (0.05, 0.5, 0.95), axis=1)], axis=-1)
    return out


def _weighted_quantiles(values, weights, probabilities):
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return np.interp(np.asarray(probabilities) * cumulative[-1], cumulative, values[order])


def reweight_to_interim(summary, header, parameters, theta, log_interim):
    """Correct ``summary`` (from :func:`independent_summary`) for objects fitted under a joint
    interim prior p0' over exactly ``parameters`` (refine's mixture): their stage-one estimate is
    the posterior under the plain p0 of ``header.interim_prior``, so their draws are weighted by
    p0/p0' (Hesterberg 1995). Objects and files without such a prior are left as they are."""
    joint = getattr(header, "joint_interim", None)
    specs = [header.interim_prior.get(p) for p in parameters]
    if joint is None or None in specs:
        return summary
    from ..distributions import parse_distribution

    chosen = np.isin(header.parameters, parameters)
    rows = np.flatnonzero(joint[:, chosen].any(axis=1))
    priors = [parse_distribution(spec) for spec in specs]
    counts = getattr(header, "object_draw_counts", None)
    for n in rows:
        k = int(counts[n]) if counts is not None else theta.shape[1]
        log_weight = sum(prior.logpdf(theta[n, :k, j]) for j, prior in enumerate(priors)) - log_interim[n, :k]
        weights = np.exp(log_weight - np.max(log_weight))
        weights /= weights.sum()
        for j in range(len(parameters)):
            values = theta[n, :k, j]
            mean = float(np.sum(weights * values))
            sd = float(np.sqrt(np.sum(weights * (values - mean) ** 2) / max(1e-300, 1.0 - np.sum(weights**2))))
            summary[n, j] = [mean, sd, *_weighted_quantiles(values, weights, (0.05, 0.5, 0.95))]
    return summary


def check_draws_inside_interim(ids, log_interim, draw_counts=None):
    """Refuse draws outside their interim prior's support (ln p0 = −inf): an inconsistent file
    (the padded draws k ≥ K_n of a ragged file are not checked)."""
    n_objects, n_draws = log_interim.shape
    for lo, hi in object_blocks(n_objects, n_draws):
        finite = np.isfinite(log_interim[lo:hi])
        if draw_counts is not None:
            finite |= np.arange(n_draws)[None, :] >= np.asarray(draw_counts[lo:hi])[:, None]
        bad = ~finite.all(axis=1)
        if bad.any():
            raise InputDataError(f"Object {ids[lo + int(np.argmax(bad))]!r} has draws outside its interim "
                                 f"prior's support; the samples file is inconsistent. Regenerate it.")


def read_selection(selection, parameters, draw_priors, injections_total, injections_group):
    """The :class:`Injections` of ``--selection`` (None without it); its options need it."""
    if selection is None:
        given = [option for option, value in (("--injections-total", injections_total), ("--draw-prior", draw_priors),
                                              ("--injections-group", injections_group))
                 if value is not None and (not hasattr(value, "__len__") or len(value))]  # 0 is given too
        if given:
            raise UsageError(f"{given[0]} describes injections: it needs --selection INJECTIONS.", given[0])
        return None
    if isinstance(selection, Injections):
        return selection
    return read_injections(selection, parameters, draw_priors, injections_total, injections_group)
