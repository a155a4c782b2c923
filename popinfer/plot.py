"""Figures of samples and population files (``popinfer plot``; matplotlib, the ``plot`` extra).

Population files: ``population`` (the inferred density with 50 % and 90 % credible
bands over a histogram and rug of the objects' posterior medians), ``forest``
(independent next to partially pooled intervals), ``corner`` (the hyperparameter
posterior; the ``corner`` package when installed), ``diagnostics`` (per-object ESS
across posterior draws and Var[ln L̂] with the warning thresholds; with a selection,
N_eff,sel against 4N too), ``predictive`` (the posterior predictive check: the
population's density band over the objects' partially pooled draws, and the empirical
CDF of the independent estimates against estimates replicated from the population).
Samples files: ``forest`` and ``trace`` (run length against 50 τ and effective
draws against K, per object).
Both: ``model``, the hierarchical model in plate notation (daft, the ``plot`` extra).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

from .errors import PopinferError, UntrustedCodeError, UsageError
from .io import read_file
from .io.hdf5 import atomic_output, check_output
from .reweighting.selection import EFFECTIVE_PER_OBJECT as SELECTION_EFFECTIVE_PER_OBJECT

FORMATS = (".png", ".pdf", ".svg")
MAX_DPI = 1200  # a 6 × 4 inch figure is then 7200 × 4800 pixels (about 140 MB while drawn)
KINDS = {"population": ("population", "forest", "corner", "diagnostics", "predictive", "model"),
         "samples": ("forest", "trace", "model")}
DENSITY_DRAWS = 400
REPLICATES = 200


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PopinferError(
            "popinfer plot needs matplotlib, which is not installed. Install the plot extra: "
            "pip install 'popinfer[plot]'."
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_file(path, output, kind=None, dpi=110, trust_code=False, overwrite=False):
    """Draw a figure of a samples or population file into ``output`` (.png, .pdf, .svg).

    Parameters
    ----------
    path : str
        The file (``-`` reads stdin).
    output : str
        Figure file; its extension picks the format.
    kind : str, optional
        See the module docstring; default ``population`` for population files
        and ``forest`` for samples files.
    trust_code : bool
        Import and run the user population a population file names, to draw its
        density. Without it, that density curve is left out (with a warning): a file
        received from someone else never runs code.
    overwrite : bool
        Replace an existing figure (as every command: never without it). A symbolic
        link at ``output`` is replaced, never written through.
    """
    if Path(str(output)).suffix.lower() not in FORMATS:
        raise UsageError(f"-o {output}: the figure's name must end in {', '.join(FORMATS)}.", "-o")
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float, np.integer, np.floating)) or not 1 <= dpi <= MAX_DPI:
        raise UsageError(f"--dpi {dpi!r}: give a number of dots per inch from 1 to {MAX_DPI}.", "--dpi")
    check_output(output, overwrite, inputs=[path])
    file_kind, content = read_file(path)
    kinds = KINDS[file_kind]
    kind = kind or kinds[0]
    if kind not in kinds:
        raise UsageError(f"--kind {kind}: a {file_kind} file can be drawn as {', '.join(kinds)}.", "--kind")
    plt = _pyplot()
    label = "<stdin>" if str(path) == "-" else str(path)
    draw = ({"population": functools.partial(_population, label=label, trust_code=trust_code),
             "forest": _forest_population, "corner": _corner, "diagnostics": _diagnostics,
             "predictive": functools.partial(_predictive, label=label, trust_code=trust_code),
             "model": _model_population}
            if file_kind == "population" else {"forest": _forest_samples, "trace": _trace, "model": _model_samples})
    figure = draw[kind](content, plt)
    try:
        with atomic_output(output, overwrite) as temporary:
            figure.savefig(temporary, format=Path(str(output)).suffix.lower()[1:], dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(figure)


def _hyper_dicts(result, count):
    """Up to ``count`` posterior draws as a dict of arrays (fixed values included)."""
    index = np.unique(np.round(np.linspace(0, len(result.hyper_samples) - 1, count)).astype(int))
    hyper = {name: result.hyper_samples[index, i] for i, name in enumerate(result.hyperparameters)}
    for name, value in result.fixed.items():
        hyper[name] = np.full(index.size, float(value))
    return hyper


def _trusted_population(result, label, trust_code):
    """The file's population, or None (with a warning) when it names code that is not trusted."""
    from .populations import population_of_file

    try:
        return population_of_file(result.population, result.parameters, label, trust_code,
                                  result.source.get("population"))
    except UntrustedCodeError as exc:
        warnings.warn(f"{exc} The population density is left out of the figure.", UserWarning, stacklevel=3)
        return None


def _density_on_grid(population, hyper, index, grid):
    """f(θ; α_m) of parameter ``index`` on ``grid`` for every draw m, shape (G, M)
    (the marginal when the population describes several parameters)."""
    if len(population.parameters) == 1:
        with np.errstate(all="ignore"):
            return np.exp(population.log_density(grid[None, :, None], hyper)[0])
    return np.stack([population.marginal({k: v[m] for k, v in hyper.items()}, index).pdf(grid)
                     for m in range(len(next(iter(hyper.values()))))], axis=1)


def _population(result, plt, label, trust_code):
    population = _trusted_population(result, label, trust_code)
    hyper = _hyper_dicts(result, DENSITY_DRAWS)
    n_params = len(result.parameters)
    figure, axes = plt.subplots(1, n_params, figsize=(5.5 * n_params, 3.8), squeeze=False)
    for index, (axis, name) in enumerate(zip(axes[0], result.parameters)):
        medians = result.independent_summary[:, index, 3]
        pooled = np.median(result.reweighted[:, :, index], axis=1)
        spread = np.ptp(np.concatenate([medians, result.independent_summary[:, index, 2],
                                        result.independent_summary[:, index, 4]]))
        low = min(medians.min(), result.independent_summary[:, index, 2].min()) - 0.1 * spread
        high = max(medians.max(), result.independent_summary[:, index, 4].max()) + 0.1 * spread
        grid = np.linspace(low, high, 300)
        density = None if population is None else _density_on_grid(population, hyper, index, grid)
        axis.hist(medians, bins=min(30, max(5, len(medians) // 3)), density=True, color="0.85",
                  label="independent posterior medians")
        if density is not None:
            q05, q25, q50, q75, q95 = np.quantile(density, [0.05, 0.25, 0.5, 0.75, 0.95], axis=1)
            axis.fill_between(grid, q05, q95, color="#4c72b0", alpha=0.25, lw=0, label="90 % band")
            axis.fill_between(grid, q25, q75, color="#4c72b0", alpha=0.45, lw=0, label="50 % band")
            axis.plot(grid, q50, color="#1f3b73", lw=1.5, label="posterior median density")
        axis.plot(medians, np.zeros_like(medians), "|", color="k", ms=12, label="independent medians")
        axis.plot(pooled, np.zeros_like(pooled), "|", color="#c44e52", ms=8, label="pooled medians")
        axis.set_xlabel(name)
        axis.set_ylabel("density")
        axis.set_title(f"{result.population} population of {name}")
    axes[0][0].legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return figure


def _forest(ids, name, independent, pooled, plt):
    """Intervals per object: (mean, q05, q95) arrays for each of independent, pooled (or None)."""
    n = len(ids)
    figure, axis = plt.subplots(figsize=(6, 0.9 + 0.28 * n))
    y = np.arange(n)[::-1]
    offset = 0.15 if pooled is not None else 0.0
    mean, low, high = independent
    axis.errorbar(mean, y + offset, xerr=[mean - low, high - mean], fmt="o", ms=4, color="0.35", capsize=0,
                  label="independent (stage one)")
    if pooled is not None:
        mean, low, high = pooled
        axis.errorbar(mean, y - offset, xerr=[mean - low, high - mean], fmt="s", ms=4, color="#c44e52",
                      capsize=0, label="partially pooled")
    axis.set_yticks(y)
    axis.set_yticklabels(ids, fontsize=8 if n < 40 else 5)
    axis.set_xlabel(f"{name} (mean and 90 % interval)")
    axis.legend(fontsize=8, frameon=False, loc="best")
    figure.tight_layout()
    return figure


def _forest_population(result, plt):
    index = 0
    independent = (result.independent_summary[:, index, 0], result.independent_summary[:, index, 2],
                   result.independent_summary[:, index, 4])
    draws = result.reweighted[:, :, index]
    pooled = (draws.mean(axis=1), *np.quantile(draws, [0.05, 0.95], axis=1))
    return _forest(result.ids, result.parameters[index], independent, pooled, plt)


def _forest_samples(samples, plt):
    draws = samples.samples[:, :, 0]  # NaN at a ragged file's padded draws
    return _forest(samples.ids, samples.parameters[0],
                   (np.nanmean(draws, axis=1), *np.nanquantile(draws, [0.05, 0.95], axis=1)), None, plt)


def _corner(result, plt):
    draws, names = result.hyper_samples, result.hyperparameters
    try:
        import corner

        return corner.corner(draws, labels=names, quantiles=[0.05, 0.5, 0.95], show_titles=True)
    except ImportError:
        pass
    n = len(names)
    figure, axes = plt.subplots(n, n, figsize=(2.4 * n, 2.4 * n), squeeze=False)
    for i in range(n):
        for j in range(n):
            axis = axes[i][j]
            if j > i:
                axis.axis("off")
            elif i == j:
                axis.hist(draws[:, i], bins=40, color="#4c72b0", histtype="stepfilled", alpha=0.7)
                axis.set_yticks([])
            else:
                axis.plot(draws[:, j], draws[:, i], ",", color="#1f3b73", alpha=0.4)
            if i == n - 1:
                axis.set_xlabel(names[j])
            if j == 0 and i > 0:
                axis.set_ylabel(names[i])
    figure.tight_layout()
    return figure


def _diagnostics(result, plt):
    min_ess = float(result.settings.get("min_ess", 20))
    selection = result.selection_effective_draws is not None
    figure, axes = plt.subplots(1, 3 if selection else 2, figsize=(16 if selection else 11,
                                                                  0.9 + max(3.0, 0.22 * len(result.ids))))
    left, right = axes[:2]
    ess = np.maximum(result.ess, 1e-3)
    order = np.argsort(np.median(ess, axis=0))
    left.boxplot(ess[:, order], vert=False, whis=(1, 99), showfliers=False, widths=0.6)
    left.set_yticks(np.arange(1, len(order) + 1))
    left.set_yticklabels([result.ids[i] for i in order], fontsize=8 if len(order) < 40 else 5)
    left.set_xscale("log")
    left.axvline(min_ess, color="#c44e52", lw=1.2, label=f"--min-ess {min_ess:g}")
    left.axvline(result.settings.get("stage_one_draws", ess.max()), color="0.5", lw=1, ls=":", label="K")
    left.set_xlabel("ESS across posterior draws (1-99 % whiskers)")
    left.legend(fontsize=8, frameon=False)
    variance = result.ln_likelihood_variance
    right.hist(np.log10(np.maximum(variance, 1e-12)), bins=50, color="#4c72b0")
    right.axvline(0.0, color="#c44e52", lw=1.2, label="Var = 1")
    if result.settings.get("max_variance"):
        right.axvline(np.log10(result.settings["max_variance"]), color="k", lw=1, ls="--", label="--max-variance")
    right.set_xlabel("log10 Var[ln L̂] over posterior draws" + (" (selection term included)" if selection else ""))
    right.legend(fontsize=8, frameon=False)
    if selection:
        required = SELECTION_EFFECTIVE_PER_OBJECT * len(result.ids)
        axes[2].hist(np.log10(np.maximum(result.selection_effective_draws, 1e-3)), bins=50, color="#55a868")
        axes[2].axvline(np.log10(required), color="#c44e52", lw=1.2, label=f"4N = {required:g}")
        axes[2].set_xlabel("log10 N_eff,sel (injections' effective draws) over posterior draws")
        axes[2].legend(fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


def _trace(samples, plt):
    diagnostics = samples.diagnostics
    tau = np.nanmax(diagnostics["autocorr_time"], axis=1)
    steps = diagnostics["n_steps"]
    converged = diagnostics["converged"].astype(bool)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.scatter(tau[converged], steps[converged], s=12, color="#4c72b0", label="converged")
    left.scatter(tau[~converged], steps[~converged], s=16, color="#c44e52", marker="x", label="not converged")
    grid = np.linspace(0, np.nanmax(tau) * 1.1 if np.isfinite(tau).any() else 1, 50)
    left.plot(grid, 50 * grid, color="k", lw=1, label="n_steps = 50 τ")
    left.set_xlabel("integrated autocorrelation time τ (steps)")
    left.set_ylabel("steps")
    left.legend(fontsize=8, frameon=False)
    effective = diagnostics.get("effective_draws", np.full(len(steps), np.nan))
    right.hist(effective[np.isfinite(effective)], bins=30, color="#4c72b0")
    right.axvline(samples.n_draws, color="#c44e52", lw=1.2, label=f"K = {samples.n_draws}")
    right.set_xlabel("effectively independent draws per object")
    right.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


def _predictive(result, plt, label, trust_code):
    """Posterior predictive check, one column per parameter.

    Top: the population density f(θ; α) over the posterior (median and 90 % band)
    against a histogram of all objects' partially pooled draws (the deconvolved
    distribution). Bottom: the empirical CDF of the objects' independent (stage-one)
    posterior medians against those of replicated data sets, each made of N new
    objects θ̃_n ~ f(θ; α) (α a posterior draw, the inverse CDF on a fine grid) measured
    with each object's own independent posterior sd as Gaussian noise. Observed curves
    outside the replicated band show a misfit (a second mode, a heavy tail).
    """
    population = _trusted_population(result, label, trust_code)
    rng = np.random.default_rng(0)  # a figure, not an inference: fixed, so the file is reproducible
    n_params = len(result.parameters)
    figure, axes = plt.subplots(2, n_params, figsize=(5.5 * n_params, 7.0), squeeze=False)
    for index, name in enumerate(result.parameters):
        top, bottom = axes[0][index], axes[1][index]
        medians, sds = result.independent_summary[:, index, 3], result.independent_summary[:, index, 1]
        pooled = np.asarray(result.reweighted[:, :, index]).ravel()
        low, high = np.quantile(np.concatenate([pooled, medians]), [0.0, 1.0])
        spread = max(high - low, 1e-12)
        grid = np.linspace(low - 0.15 * spread, high + 0.15 * spread, 400)
        top.hist(pooled, bins=60, range=(grid[0], grid[-1]), density=True, color="0.8",
                 label="objects' pooled draws (all objects)")
        if population is not None:
            density = _density_on_grid(population, _hyper_dicts(result, DENSITY_DRAWS), index, grid)
            q05, q50, q95 = np.quantile(density, [0.05, 0.5, 0.95], axis=1)
            top.fill_between(grid, q05, q95, color="#4c72b0", alpha=0.3, lw=0, label="population, 90 % band")
            top.plot(grid, q50, color="#1f3b73", lw=1.5, label="population, posterior median")
        top.set_xlabel(name)
        top.set_ylabel("density")
        top.set_title(f"{result.population}: population against pooled draws")
        top.legend(fontsize=7, frameon=False)

        observed = np.sort(medians)
        levels = np.arange(1, observed.size + 1) / observed.size
        if population is not None:
            wide = np.linspace(low - 3 * spread, high + 3 * spread, 4000)
            hyper = _hyper_dicts(result, REPLICATES)
            density = np.nan_to_num(_density_on_grid(population, hyper, index, wide))  # (G, M)
            cumulative = np.cumsum(density, axis=0)
            cumulative /= np.where(cumulative[-1] > 0, cumulative[-1], 1.0)
            replicated = np.empty((density.shape[1], medians.size))
            for m in range(density.shape[1]):
                theta = np.interp(rng.random(medians.size), cumulative[:, m], wide)
                replicated[m] = np.sort(theta + sds * rng.standard_normal(medians.size))
            r05, r50, r95 = np.quantile(replicated, [0.05, 0.5, 0.95], axis=0)
            bottom.fill_betweenx(levels, r05, r95, color="#4c72b0", alpha=0.3, lw=0, step="post",
                                 label="replicated estimates, 90 % band")
            bottom.step(r50, levels, where="post", color="#1f3b73", lw=1.2, label="replicated, median")
        bottom.step(observed, levels, where="post", color="k", lw=1.5, label="independent medians (observed)")
        bottom.set_xlabel(f"{name}: independent posterior median")
        bottom.set_ylabel("empirical CDF")
        bottom.legend(fontsize=7, frameon=False, loc="lower right")
    figure.tight_layout()
    return figure


def _daft():
    try:
        import daft
    except ImportError:
        raise PopinferError("popinfer plot --kind model needs daft, which is not installed. Install the plot extra: "
                            "pip install 'popinfer[plot]'.") from None
    return daft


def _stage_one_of(result):
    """(model, interim prior dict, data columns) from the samples file a population file names,
    when it is still at its recorded path; None otherwise."""
    from .io.hdf5 import open_popinfer_file
    from .io.samples import read_header

    path = result.source.get("path", "")
    if not path or path.startswith("<") or not Path(path).is_file():
        return None
    try:
        with open_popinfer_file(path, "samples") as handle:
            header = read_header(handle, path)
    except PopinferError:
        return None
    return header.model, header.interim_prior, list(header.settings.get("columns", {}).values())


def _plate_diagram(n_objects, parameters, interim, data, hyper=None, selection=None):
    """The hierarchical model in plate notation (daft).

    ``hyper`` lists (name, label, held) of hyperparameters (label: its hyperprior, or
    the held value); ``interim`` the interim prior text; ``data`` the data columns;
    ``selection`` a note on the injections (a detection node), or None.
    """
    daft = _daft()
    hyper = hyper or []
    width = max(7.0, 1.6 * len(hyper) + 1.5)
    pgm = daft.PGM(shape=(width, 5.6 if hyper else 3.6), origin=(0, 0), node_unit=1.1)
    centre = width / 3
    theta_label = ", ".join(parameters)
    pgm.add_node("theta", fr"$\theta_n$", centre, 2.6, scale=1.2)
    pgm.add_text(centre + 0.75, 2.45, f"{theta_label}, fitted in stage one\nunder the interim prior p0:\n{interim}", fontsize=7)
    pgm.add_node("data", r"$y_n$", centre, 1.1, observed=True, scale=1.2)
    pgm.add_text(centre + 0.75, 1.05, f"data: {', '.join(data) if data else 'the data table'}", fontsize=7)
    pgm.add_edge("theta", "data")
    pgm.add_plate([0.3, 0.4, width - 0.6, 3.0], label=f"n = 1 … N (N = {n_objects} objects)", fontsize=8)
    for i, (name, label, fixed) in enumerate(hyper):
        x = (i + 0.5) * width / len(hyper)
        node = f"hyper_{i}"
        pgm.add_node(node, name, x, 4.4, fixed=fixed, scale=1.0 if not fixed else 1.5,
                     offset=(0, 8) if fixed else (0, 0), fontsize=8)
        pgm.add_text(x - 0.6, 5.05, label, fontsize=6)
        pgm.add_edge(node, "theta")
        if selection is not None:
            pgm.add_edge(node, "selection")
    if selection is not None:
        pgm.add_node("selection", "det", width - 0.45, 2.6, observed=True, scale=0.9, fontsize=7)
        pgm.add_text(width - 1.2, 3.2, selection, fontsize=6)
    pgm.render()
    return pgm.figure


def _model_population(result, plt):
    stage_one = _stage_one_of(result)
    if stage_one is None:
        interim, data = "see the samples file", []
    else:
        model, interim_prior, data = stage_one
        interim = "; ".join(f"{p} ~ {interim_prior.get(p, '?')}" for p in result.parameters)
    hyper = [(name, f"~ {result.hyperprior[name]}", False) for name in result.hyperparameters]
    hyper += [(name, f"{name} = {value:g}", True) for name, value in result.fixed.items()]
    selection = result.settings.get("selection")
    if isinstance(selection, dict):
        selection = (f"selection: {selection.get('detected_injections', '?')} of "
                     f"{selection.get('injections_total', '?')} injections detected")
    figure = _plate_diagram(len(result.ids), result.parameters, interim, data, hyper,
                            f"{selection}" if selection else None)
    figure.suptitle(f"population {result.population} of {', '.join(result.parameters)}", fontsize=9)
    return figure


def _model_samples(samples, plt):
    interim = "; ".join(f"{p} ~ {samples.interim_prior.get(p, '?')}" for p in samples.parameters)
    data = list(samples.settings.get("columns", {}).values())
    figure = _plate_diagram(samples.n_objects, samples.parameters, interim, data)
    figure.suptitle(f"stage one: model {samples.model}", fontsize=9)
    return figure
