"""Population files (``popinfer_format = "population"``): stage two's output.

Layout (README, "HDF5 layout")::

    attrs: popinfer_format, format_version, popinfer_version, created, command, seed,
           population, parameters, hyperparameters, hyperprior (JSON), fixed (JSON),
           source (JSON: input path and SHA-256), settings (JSON)
    /hyper/samples                  (S, H) f8, attr names
    /hyper/log_posterior            (S,) f8
    /hyper/log_likelihood           (S,) f8
    /hyper/ln_likelihood_variance   (S,) f8   Var[ln L̂] at each draw
    /hyper/autocorr_time            (H,) f8   only from samplers that have one (emcee)
    /objects/id                     (N,) str
    /objects/ess                    (M, N) f4, attr draw_index (M ≤ 1000 draws)
    /objects/log_likelihood         (M, N) f8  ln L̂_n(α) of every object at the same draws (for PSIS-LOO)
    /objects/reweighted             (N, R, P) f8  draws under the inferred population
    /objects/independent_summary    (N, P, 5) f8  stage-one mean, sd, q05, q50, q95 (attr columns)

With ``--selection`` (additions; ``source`` then also holds ``injections``: path, SHA-256,
M_total, detected count, draw prior)::

    /hyper/selection_ln_efficiency      (S,) f8   ln ξ̂(α) at each draw
    /hyper/selection_effective_draws    (S,) f8   N_eff,sel = ξ̂²/Var[ξ̂] at each draw
    /hyper/rate                         (S,) f8   R ~ Gamma(N, ξ̂ T) (with --observing-time; attr observing_time)
    /hyper/log_evidence             () f8  ln Z relative to the interim evidence (samplers that compute it)
    /hyper/log_evidence_error       () f8  its error estimate
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..errors import FileFormatError
from .hdf5 import (attribute_value, check_dataset_types, check_shapes, discard, file_bytes, mapped,
                   open_popinfer_file, publish, read_json_attr, read_string_list, reserve_space, root_attributes,
                   strings, temporary_path, write_root_attributes)

# Checks of the population attribute that only the catalogue of populations can make, each
# check(population, parameters, hyperparameters, fixed, label): ``populations`` registers its own
# (io imports nothing above it).
POPULATION_CHECKS = []
SUMMARY_COLUMNS = ("mean", "sd", "q05", "q50", "q95")
# (S,) datasets of /hyper present only with --selection (and --observing-time).
OPTIONAL_HYPER = ("selection_ln_efficiency", "selection_effective_draws", "rate")

# What each dataset of the layout holds (checked before any is read).
DATASET_TYPES = {**{f"hyper/{name}": "numbers" for name in (
    "samples", "log_posterior", "log_likelihood", "ln_likelihood_variance", "autocorr_time", *OPTIONAL_HYPER,
    "log_evidence", "log_evidence_error")}, "objects/id": "strings",
    **{f"objects/{name}": "numbers" for name in ("ess", "log_likelihood", "reweighted", "independent_summary")}}


@dataclass
class PopulationResult:
    """Stage-two output: hyperparameter posterior, diagnostics and pooled draws.

    Attributes
    ----------
    population : str
    parameters : list of str
        Stage-one parameters the population describes (P).
    hyperparameters : list of str
        Sampled hyperparameters (H), the columns of ``hyper_samples``.
    hyper_samples : ndarray, shape (S, H)
    log_posterior, log_likelihood, ln_likelihood_variance : ndarray, shape (S,)
    autocorr_time : ndarray, shape (H,), or None
        Present when the sampler has one (emcee).
    ids : list of str
    ess : ndarray, shape (M, N)
        Per-object effective sample size at the draws ``ess_draw_index``.
    ess_draw_index : ndarray, shape (M,)
    reweighted : ndarray, shape (N, R, P)
        ``ess`` and ``reweighted`` are read-only ``numpy.memmap`` views of the file
        when the result comes from or went to a file on disk.
    independent_summary : ndarray, shape (N, P, 5)
    hyperprior, fixed, source, settings : dict
    selection_ln_efficiency, selection_effective_draws : ndarray, shape (S,), or None
        ln ξ̂(α) and N_eff,sel at each draw (with ``--selection``).
    rate : ndarray, shape (S,), or None
        R at each draw (with ``--observing-time``, in ``settings["observing_time"]``).
    seed : int
    command : str
    attrs : dict
    object_log_likelihood : ndarray, shape (M, N), or None
        ln L̂_n(α) = ln (1/K) Σ_k w_nk of every object at the draws ``ess_draw_index``
        (None in files written before it was stored).
    log_evidence, log_evidence_error : float or None
        ln Z of the population relative to the interim prior's evidence, and its error,
        from samplers that compute it (nested sampling).
    """

    population: str
    parameters: list
    hyperparameters: list
    hyper_samples: np.ndarray
    log_posterior: np.ndarray
    log_likelihood: np.ndarray
    ln_likelihood_variance: np.ndarray
    autocorr_time: np.ndarray
    ids: list
    ess: np.ndarray
    ess_draw_index: np.ndarray
    reweighted: np.ndarray
    independent_summary: np.ndarray
    hyperprior: dict
    fixed: dict
    source: dict
    settings: dict
    seed: int
    command: str = ""
    attrs: dict = field(default_factory=dict)
    selection_ln_efficiency: np.ndarray = None
    selection_effective_draws: np.ndarray = None
    rate: np.ndarray = None
    object_log_likelihood: np.ndarray = None
    log_evidence: float = None
    log_evidence_error: float = None

    def hyper(self, name):
        """Posterior draws of one hyperparameter, shape (S,)."""
        return self.hyper_samples[:, self.hyperparameters.index(name)]


class PopulationWriter:
    """A population file written piece by piece, so that no (M, N) or (N, R, P) array
    need ever be in memory: stage two streams ESS rows into :attr:`ess` and blocks of
    pooled draws into :attr:`reweighted` (h5py datasets, sliced like arrays), then
    :meth:`finish` adds the rest and publishes the file atomically.

    Parameters
    ----------
    path : str
        Destination (``-``: stdout), written through a temporary file beside it.
    shape : tuple (N, M, R, P)
        Objects, ESS draws, pooled draws per object, parameters.
    overwrite : bool
    """

    def __init__(self, path, shape, overwrite=False):
        n_objects, n_ess, n_reweighted, n_parameters = shape
        self.path, self.overwrite = path, overwrite
        reserve_space(path, file_bytes(
            4 * n_ess * n_objects + 8 * n_objects * n_parameters * (n_reweighted + len(SUMMARY_COLUMNS)), n_objects))
        self.temporary = temporary_path(path)
        try:
            self.handle = h5py.File(self.temporary, "w")
            objects = self.handle.create_group("objects")
            # Contiguous (unchunked) datasets: the finished file can be memory-mapped.
            self.ess = objects.create_dataset("ess", shape=(n_ess, n_objects), dtype="f4")
            self.object_log_likelihood = objects.create_dataset("log_likelihood", shape=(n_ess, n_objects),
                                                                dtype="f8")
            self.reweighted = objects.create_dataset("reweighted", shape=(n_objects, n_reweighted, n_parameters),
                                                     dtype="f8")
        except BaseException:
            self.abort()
            raise

    def finish(self, result):
        """Write everything of ``result`` but its ``ess`` and ``reweighted`` (already streamed),
        publish, and return ``result`` with those two as read-only memory maps of the file
        (arrays when the file cannot be mapped)."""
        try:
            handle = self.handle
            write_root_attributes(handle, "population", result.command, result.seed, {
                "population": result.population, "parameters": list(result.parameters),
                "hyperparameters": list(result.hyperparameters), "hyperprior": dict(result.hyperprior),
                "fixed": dict(result.fixed), "source": dict(result.source), "settings": dict(result.settings)})
            hyper = handle.create_group("hyper")
            samples = hyper.create_dataset("samples", data=result.hyper_samples)
            samples.attrs["names"] = strings(result.hyperparameters)
            hyper.create_dataset("log_posterior", data=result.log_posterior)
            hyper.create_dataset("log_likelihood", data=result.log_likelihood)
            hyper.create_dataset("ln_likelihood_variance", data=result.ln_likelihood_variance)
            if result.autocorr_time is not None:
                hyper.create_dataset("autocorr_time", data=result.autocorr_time)
            for name in OPTIONAL_HYPER:
                if getattr(result, name) is not None:
                    hyper.create_dataset(name, data=np.asarray(getattr(result, name), dtype=float))
            if result.rate is not None:
                hyper["rate"].attrs["observing_time"] = float(result.settings["observing_time"])
            objects = handle["objects"]
            objects.create_dataset("id", data=strings(result.ids))
            self.ess.attrs["draw_index"] = np.asarray(result.ess_draw_index, dtype=np.int64)
            self.object_log_likelihood.attrs["draw_index"] = np.asarray(result.ess_draw_index, dtype=np.int64)
            if result.log_evidence is not None:
                hyper.create_dataset("log_evidence", data=float(result.log_evidence))
                hyper.create_dataset("log_evidence_error", data=float(result.log_evidence_error))
            self.reweighted.attrs["parameters"] = strings(result.parameters)
            summary = objects.create_dataset("independent_summary", data=result.independent_summary)
            summary.attrs["columns"] = strings(SUMMARY_COLUMNS)
            handle.close()
            # Mapped before publishing: the mapping outlives the temporary name (stdout, link).
            with h5py.File(self.temporary, "r") as reread:
                for name, stored in (("ess", "ess"), ("reweighted", "reweighted"),
                                     ("object_log_likelihood", "log_likelihood")):
                    dataset = reread["objects"][stored]
                    view = mapped(dataset, self.temporary)
                    setattr(result, name, dataset[()] if view is None else view)
            publish(self.temporary, self.path, self.overwrite)
        except BaseException:
            self.abort()
            raise
        return result

    def abort(self):
        """Close and remove the temporary file (nothing is published)."""
        discard(getattr(self, "handle", None), self.temporary)


def write_population(result, path, overwrite=False):
    """Write a :class:`PopulationResult` atomically (``-``: stdout)."""
    n_objects, n_reweighted, n_parameters = np.shape(result.reweighted)
    writer = PopulationWriter(path, (n_objects, len(result.ess), n_reweighted, n_parameters), overwrite)
    try:
        writer.ess[...] = np.asarray(result.ess, dtype=np.float32)
        if result.object_log_likelihood is not None:
            writer.object_log_likelihood[...] = result.object_log_likelihood
        else:
            writer.object_log_likelihood[...] = np.nan
        writer.reweighted[...] = result.reweighted
    except BaseException:
        writer.abort()
        raise
    writer.finish(copy.copy(result))


def _large(dataset, path):
    """A (M, N) or (N, R, P) array: memory-mapped from a file on disk, read otherwise."""
    view = mapped(dataset, path) if isinstance(path, (str, os.PathLike)) and str(path) != "-" else None
    return dataset[()] if view is None else view


def _check_layout(handle, label):
    """Every dataset holds numbers (the ids strings) and its shape agrees with the others' (the
    layout above)."""
    check_dataset_types(handle, label, "population", DATASET_TYPES)
    hyper, objects = handle["hyper"], handle["objects"]
    names = read_string_list(hyper["samples"].attrs["names"])
    parameters = read_string_list(handle.attrs["parameters"])
    n_ess = len(np.atleast_1d(objects["ess"].attrs["draw_index"]))
    if hyper["samples"].ndim != 2 or objects["reweighted"].ndim != 3:
        raise FileFormatError(f"{label} is a damaged population file: /hyper/samples has shape "
                              f"{hyper['samples'].shape} and /objects/reweighted {objects['reweighted'].shape}, "
                              f"expected (draws, hyperparameters) and (objects, draws, parameters). Regenerate it.")
    n_samples = hyper["samples"].shape[0]
    n_objects, n_reweighted, _ = objects["reweighted"].shape
    check_shapes(label, "population", {
        "/hyper/samples": (hyper["samples"].shape, (n_samples, len(names))),
        **{f"/hyper/{name}": (hyper[name].shape, (n_samples,))
           for name in ("log_posterior", "log_likelihood", "ln_likelihood_variance")},
        **({"/hyper/autocorr_time": (hyper["autocorr_time"].shape, (len(names),))} if "autocorr_time" in hyper else {}),
        "/objects/id": (objects["id"].shape, (n_objects,)),
        "/objects/ess": (objects["ess"].shape, (n_ess, n_objects)),
        "/objects/reweighted": (objects["reweighted"].shape, (n_objects, n_reweighted, len(parameters))),
        "/objects/independent_summary": (objects["independent_summary"].shape,
                                         (n_objects, len(parameters), len(SUMMARY_COLUMNS))),
    })


def _check_names(handle, label, fixed):
    """The root attributes that name things agree with the datasets (and ``population`` with
    both): ``hyperparameters`` with /hyper/samples's ``names``, ``parameters`` with
    /objects/reweighted's, the population's own hyperparameters with the sampled and held ones."""
    names = read_string_list(handle["hyper/samples"].attrs["names"])
    parameters = read_string_list(handle.attrs["parameters"])
    pairs = [("hyperparameters", "/hyper/samples", names)]
    reweighted = handle["objects/reweighted"].attrs
    if "parameters" in reweighted:
        pairs.append(("parameters", "/objects/reweighted", read_string_list(reweighted["parameters"])))
    for key, dataset, expected in pairs:
        declared = read_string_list(handle.attrs[key]) if key in handle.attrs else expected
        if declared != expected:
            raise FileFormatError(
                f"{label} is a damaged population file: its attribute {key} ({', '.join(declared)}) does not "
                f"match the names of {dataset} ({', '.join(expected)}). Regenerate it.")
    population = attribute_value(handle, "population")
    if not isinstance(population, str) or not population:
        raise FileFormatError(f"{label} is a damaged population file: its attribute population is "
                              f"{population!r}, expected the name of a population. Regenerate it.")
    for check in POPULATION_CHECKS:
        check(population, parameters, names, fixed, label)


def _scalar(handle, name):
    return float(handle[name][()]) if name in handle else None


def read_population(path):
    """Read a population file (``-`` reads stdin) into a :class:`PopulationResult`."""
    label = "<stdin>" if str(path) == "-" or not isinstance(path, (str, os.PathLike)) else str(path)
    with open_popinfer_file(path, "population") as handle:
        try:
            _check_layout(handle, label)
            fixed = read_json_attr(handle, "fixed", label, "population")
            _check_names(handle, label, fixed)
            return PopulationResult(
                population=attribute_value(handle, "population"),
                parameters=read_string_list(handle.attrs["parameters"]),
                hyperparameters=read_string_list(handle["hyper/samples"].attrs["names"]),
                hyper_samples=handle["hyper/samples"][()],
                log_posterior=handle["hyper/log_posterior"][()],
                log_likelihood=handle["hyper/log_likelihood"][()],
                ln_likelihood_variance=handle["hyper/ln_likelihood_variance"][()],
                autocorr_time=handle["hyper/autocorr_time"][()] if "hyper/autocorr_time" in handle else None,
                ids=list(handle["objects/id"].asstr()[()]),
                ess=_large(handle["objects/ess"], path),
                ess_draw_index=handle["objects/ess"].attrs["draw_index"][()],
                reweighted=_large(handle["objects/reweighted"], path),
                independent_summary=handle["objects/independent_summary"][()],
                hyperprior=read_json_attr(handle, "hyperprior", label, "population"),
                fixed=fixed,
                source=read_json_attr(handle, "source", label, "population"),
                settings=read_json_attr(handle, "settings", label, "population"),
                seed=int(handle.attrs["seed"]),
                command=str(handle.attrs.get("command", "")),
                attrs=root_attributes(handle),
                **{name: handle[f"hyper/{name}"][()] for name in OPTIONAL_HYPER if f"hyper/{name}" in handle},
                object_log_likelihood=(_large(handle["objects/log_likelihood"], path)
                                       if "objects/log_likelihood" in handle else None),
                log_evidence=_scalar(handle, "hyper/log_evidence"),
                log_evidence_error=_scalar(handle, "hyper/log_evidence_error"),
            )
        except (KeyError, OSError, ValueError, json.JSONDecodeError) as exc:
            raise FileFormatError(f"{label} is a damaged population file: {exc}. Regenerate it.") from None
