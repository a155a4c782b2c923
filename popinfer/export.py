"""Exports of samples and population files to other tools' formats (``popinfer export``).

Tidy long tables (pandas) as csv, parquet (pyarrow) or json:

- samples file, table ``draws``: object, draw, parameter, value;
- population file, table ``hyper``: draw, hyperparameter, value, plus the
  log posterior, log likelihood and Var[ln L̂] of each draw as their own
  "hyperparameter" rows (``lp``, ``log_likelihood``, ``ln_likelihood_variance``, and
  with a selection ``selection_ln_efficiency``, ``selection_effective_draws`` and ``R``);
- population file, table ``pooled``: object, draw, parameter, value of the
  partially pooled draws.

``netcdf`` writes an ArviZ InferenceData (arviz, the ``export`` extra): for a
population file the hyperparameter posterior (group ``posterior``, dimensions
chain × draw; with the rate ``R``) and ``sample_stats`` (lp, hyper_log_likelihood,
ln_likelihood_variance, and the selection terms);
for a samples file every parameter with dimensions chain × draw × object. The
draws are already thinned, independent-ish draws, so they form one chain.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from . import escaping
from .errors import PopinferError, UsageError
from .io import read_file
from .io.hdf5 import atomic_output, check_output

FORMATS = ("csv", "parquet", "json", "netcdf")
TABLES = {"samples": ("draws",), "population": ("hyper", "pooled")}


def _long_table(ids, parameters, draws):
    """object, draw, parameter, value rows of a (N, K, P) array."""
    n_objects, n_draws, n_params = draws.shape
    return pd.DataFrame({
        "object": np.repeat(ids, n_draws * n_params),
        "draw": np.tile(np.repeat(np.arange(n_draws), n_params), n_objects),
        "parameter": np.tile(parameters, n_objects * n_draws),
        "value": draws.reshape(-1),
    })


def samples_table(samples):
    """Long table of stage-one draws: object, draw, parameter, value (an object's padded
    draws k ≥ K_n, in a ragged file, are left out)."""
    table = _long_table(samples.ids, samples.parameters, samples.samples)
    if samples.draw_counts is None:
        return table
    counts = np.repeat(samples.object_draw_counts, samples.n_draws * len(samples.parameters))
    return table[table["draw"].to_numpy() < counts].reset_index(drop=True)


def hyper_table(result):
    """Long table of hyperparameter draws (and their lp, ln L, Var[ln L̂])."""
    columns = {name: result.hyper_samples[:, i] for i, name in enumerate(result.hyperparameters)}
    columns.update(lp=result.log_posterior, log_likelihood=result.log_likelihood,
                   ln_likelihood_variance=result.ln_likelihood_variance, **_selection_columns(result))
    wide = pd.DataFrame(columns)
    wide.insert(0, "draw", np.arange(len(wide)))
    return wide.melt(id_vars="draw", var_name="hyperparameter", value_name="value")


def _selection_columns(result):
    """Per-draw selection terms and rate, where the file has them: ln ξ̂, N_eff,sel, R."""
    columns = {}
    if result.selection_ln_efficiency is not None:
        columns.update(selection_ln_efficiency=result.selection_ln_efficiency,
                       selection_effective_draws=result.selection_effective_draws)
    if result.rate is not None:
        columns["R"] = result.rate
    return columns


def pooled_table(result):
    """Long table of the partially pooled draws: object, draw, parameter, value."""
    return _long_table(result.ids, result.parameters, result.reweighted)


def _arviz():
    try:
        import arviz
    except ImportError:
        raise PopinferError("--to netcdf needs arviz, which is not installed. Install the export extra: "
                            "pip install 'popinfer[export]'.") from None
    return arviz


def inference_data(kind, content):
    """An ArviZ InferenceData of a samples or population file's content."""
    arviz = _arviz()
    if kind == "population":
        posterior = {name: content.hyper_samples[None, :, i] for i, name in enumerate(content.hyperparameters)}
        stats = {"lp": content.log_posterior[None], "hyper_log_likelihood": content.log_likelihood[None],
                 "ln_likelihood_variance": content.ln_likelihood_variance[None]}
        stats.update({name: values[None] for name, values in _selection_columns(content).items() if name != "R"})
        if content.rate is not None:
            posterior["R"] = content.rate[None]
        return arviz.from_dict(posterior=posterior, sample_stats=stats,
                               attrs={"popinfer_population": content.population})
    posterior = {name: content.samples[:, :, d].T[None] for d, name in enumerate(content.parameters)}
    return arviz.from_dict(posterior=posterior, coords={"object": content.ids},
                           dims={name: ["object"] for name in content.parameters},
                           attrs={"popinfer_model": content.model})


def export_file(path, output, to, table=None, overwrite=False, formula_safe=False):
    """Export a samples or population file.

    Parameters
    ----------
    path : str
        Input file (``-`` reads stdin).
    output : str
        Output file (``-`` writes csv or json to stdout).
    to : str
        ``csv``, ``parquet``, ``json`` or ``netcdf``.
    table : str, optional
        ``draws`` (samples files), ``hyper`` (default) or ``pooled`` (population files).
    overwrite : bool
        Replace an existing output.
    formula_safe : bool
        csv only: prefix text cells starting with ``= + - @`` (or a tab or carriage
        return) with ``'`` so that spreadsheets show them as text, never run them.
    """
    if to not in FORMATS:
        raise UsageError(f"--to {to}: choose one of {', '.join(FORMATS)}.", "--to")
    if formula_safe and to != "csv":
        raise UsageError(f"--formula-safe applies to --to csv, not --to {to}.", "--formula-safe")
    check_output(output, overwrite, inputs=[path], binary=False)  # only csv and json go to stdout (text)
    kind, content = read_file(path)
    table = table or TABLES[kind][0]
    if table not in TABLES[kind]:
        raise UsageError(f"--table {table}: a {kind} file has the tables {', '.join(TABLES[kind])}.", "--table")
    if to == "netcdf":
        if str(output) == "-":
            raise UsageError("--to netcdf needs a file output, not -.", "-o")
        data = inference_data(kind, content)
        with atomic_output(output, overwrite) as temporary:
            data.to_netcdf(temporary)
        return
    frame = {"draws": samples_table, "hyper": hyper_table, "pooled": pooled_table}[table](content)
    if to == "parquet":
        if str(output) == "-":
            raise UsageError("--to parquet needs a file output, not -.", "-o")
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise PopinferError("--to parquet needs pyarrow, which is not installed. Install the export extra: "
                                "pip install 'popinfer[export]'.") from None
        with atomic_output(output, overwrite) as temporary:
            frame.to_parquet(temporary, index=False)
        return
    if formula_safe:
        frame = escaping.formula_safe(frame)
    text = frame.to_csv(index=False) if to == "csv" else frame.to_json(orient="records", double_precision=15)
    if str(output) == "-":
        sys.stdout.write(text)
        return
    with atomic_output(output, overwrite) as temporary, open(temporary, "w") as handle:
        handle.write(text)
