"""Population densities f(θ; α) of stage two: the built-ins and user-supplied functions."""

import numpy as np

from ..errors import FileFormatError, UsageError
from ..io.population import POPULATION_CHECKS
from .base import LinearForm, Population, plain
from .mixture import MixturePopulation
from .mvnormal import MvNormalPopulation
from .univariate import (BetaPopulation, GammaPopulation, LogNormalPopulation, NormalPopulation,
                         PowerLawPopulation, StudentTPopulation, TruncNormalPopulation, UniformPopulation)
from ..user_functions import trusted_code
from .user import UserPopulation

BUILTIN_POPULATIONS = {cls.name: cls for cls in (
    NormalPopulation, TruncNormalPopulation, LogNormalPopulation, BetaPopulation, GammaPopulation,
    PowerLawPopulation, UniformPopulation, StudentTPopulation, MixturePopulation, MvNormalPopulation)}


def get_population(name, parameters):
    """A population instance describing the stage-one ``parameters``.

    Parameters
    ----------
    name : str
        Built-in name or ``file.py:function`` / ``module:function``.
    parameters : list of str
        One parameter, except for ``mvnormal`` (two or more) and user populations.
    """
    if isinstance(name, Population):
        return name
    parameters = list(parameters)
    if name in BUILTIN_POPULATIONS:
        cls = BUILTIN_POPULATIONS[name]
        if cls is MvNormalPopulation:
            if len(parameters) < 2:
                raise UsageError("--population mvnormal describes two or more parameters: give --parameter "
                                 "for each, e.g. --parameter slope --parameter intercept.", "--parameter")
        elif len(parameters) != 1:
            raise UsageError(f"--population {name} describes one parameter; got {len(parameters)} "
                             f"({', '.join(parameters)}). Use mvnormal for several.", "--parameter")
        return cls(parameters)
    if ":" in str(name):
        return UserPopulation(str(name), parameters)
    raise UsageError(
        f"Unknown population {name!r}: use one of {', '.join(BUILTIN_POPULATIONS)}, or "
        f"path/to/file.py:function / package.module:function for your own.",
        "--population",
    )


def population_of_file(name, parameters, label, trust_code=False, record=None):
    """The population a population file names (its ``population`` attribute).

    The one place where a population named *in a file* is resolved: a built-in is
    built; anything else names code (``file.py:function`` or ``module:function``),
    which is imported and run only when ``trust_code`` — opening a file received
    from someone else must never run code. ``record`` (the file's ``source["population"]``,
    absent in older files) is where that code's file was and its SHA-256: the file is
    found there, else as written, else beside ``label`` (``user_functions.recorded_code``).

    Raises
    ------
    UntrustedCodeError
        The file names user code and ``trust_code`` is false.
    InputDataError
        The code's file is not found, or is not the recorded one.
    """
    if name not in BUILTIN_POPULATIONS:
        name = trusted_code(name, record, label, "population", trust_code, "evaluating it")
    return get_population(name, parameters)


def check_population_of_file(name, parameters, hyperparameters, fixed, label):
    """That a population file's ``population`` attribute agrees with what the file holds, without
    running code: a built-in describing ``parameters`` has as hyperparameters exactly the sampled
    ``hyperparameters`` (``/hyper/samples``) and the held ones (``fixed``); any other name is code
    (``file.py:function`` / ``module:function``), whose hyperparameters only that code declares.

    Raises
    ------
    FileFormatError
        The name is neither, or a built-in that does not fit the file.
    """
    if name not in BUILTIN_POPULATIONS:
        if ":" in name:
            return
        raise FileFormatError(
            f"{label} is a damaged population file: its attribute population is {name!r}, neither a built-in "
            f"population ({', '.join(BUILTIN_POPULATIONS)}) nor user code (file.py:function or module:function). "
            f"Regenerate it.")
    try:
        population = get_population(name, parameters)
    except UsageError:
        described = "two or more parameters" if name == MvNormalPopulation.name else "one parameter"
        raise FileFormatError(
            f"{label} is a damaged population file: its attribute population is {name!r}, which describes "
            f"{described}, but its attribute parameters names {len(parameters)} ({', '.join(parameters)}). "
            f"Regenerate it.") from None
    expected, found = population.hyperparameters, list(hyperparameters) + list(fixed)
    if len(set(found)) != len(found) or set(found) != set(expected):
        held = f" and holds {', '.join(fixed)} fixed" if fixed else ""
        raise FileFormatError(
            f"{label} is a damaged population file: its attribute population is {name!r}, whose hyperparameters "
            f"are {', '.join(expected)}, but it holds draws of {', '.join(hyperparameters)}{held}. Regenerate it.")
    values = {}
    for key, value in fixed.items():
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if number is None or not np.isfinite(number):
            raise FileFormatError(f"{label} is a damaged population file: its attribute fixed holds {key}: {value!r}, "
                                  f"expected a finite number. Regenerate it.")
        values[key] = float(number)
    violation = population.domain_violation(values)
    if violation is not None:
        names, needs = violation
        held = ", ".join(f"{key}={plain(values[key])}" for key in names)
        raise FileFormatError(f"{label} is a damaged population file: its attribute fixed holds {held}, outside the "
                              f"domain of population {name!r} (it needs {needs}). Regenerate it.")


__all__ = ["Population", "LinearForm", "get_population", "population_of_file", "check_population_of_file",
           "BUILTIN_POPULATIONS"]


POPULATION_CHECKS.append(check_population_of_file)  # every reader of a population file runs it
