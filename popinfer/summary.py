"""Tables that describe popinfer files: ``popinfer summary`` and ``popinfer inspect``."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd

from .io.hdf5 import open_popinfer_file

QUANTILES = (0.05, 0.5, 0.95)


def samples_summary(samples):
    """Per-object, per-parameter posterior summary of a samples file.

    Returns
    -------
    pandas.DataFrame
        Columns ``object, parameter, mean, sd, q05, q50, q95, autocorr_time,
        n_steps, acceptance_fraction, converged``.
    """
    n_objects, n_draws, n_dim = samples.samples.shape
    draws = samples.samples.transpose(0, 2, 1).reshape(n_objects * n_dim, n_draws)
    q = np.quantile(draws, QUANTILES, axis=1)
    diagnostics = samples.diagnostics
    return pd.DataFrame({
        "object": np.repeat(samples.ids, n_dim),
        "parameter": np.tile(samples.parameters, n_objects),
        "mean": draws.mean(axis=1),
        "sd": draws.std(axis=1, ddof=1),
        "q05": q[0],
        "q50": q[1],
        "q95": q[2],
        "autocorr_time": diagnostics["autocorr_time"].reshape(-1),
        "n_steps": np.repeat(diagnostics["n_steps"], n_dim),
        "acceptance_fraction": np.repeat(diagnostics["acceptance_fraction"], n_dim),
        "converged": np.repeat(diagnostics["converged"].astype(bool), n_dim),
    })


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
