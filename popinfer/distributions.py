"""The distribution grammar of priors and hyperpriors (README, "Distributions").

A spec such as ``normal(0, 5)`` is parsed into a frozen one-dimensional
:class:`Distribution` backed by :mod:`scipy.stats`, with a log-density that is
``-inf`` outside the support, the support itself, and seeded sampling.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from .errors import UsageError


def _uniform(low, high):
    return stats.uniform(loc=low, scale=high - low)


def _loguniform(low, high):
    return stats.loguniform(low, high)


def _normal(mu, sigma):
    return stats.norm(loc=mu, scale=sigma)


def _truncnormal(mu, sigma, low, high):
    return stats.truncnorm((low - mu) / sigma, (high - mu) / sigma, loc=mu, scale=sigma)


def _halfnormal(sigma):
    return stats.halfnorm(scale=sigma)


def _halfcauchy(scale):
    return stats.halfcauchy(scale=scale)


def _cauchy(loc, scale):
    return stats.cauchy(loc=loc, scale=scale)


def _exponential(rate):
    return stats.expon(scale=1.0 / rate)


def _lognormal(mu, sigma):
    return stats.lognorm(s=sigma, scale=math.exp(mu))


def _beta(a, b):
    return stats.beta(a, b)


def _gamma(shape, rate):
    return stats.gamma(a=shape, scale=1.0 / rate)


def _studentt(nu, mu, sigma):
    return stats.t(df=nu, loc=mu, scale=sigma)


def _positive(*names):
    def check(values):
        return [f"{name} must be > 0" for name in names if values[name] <= 0]

    return check


def _ordered(low="low", high="high"):
    def check(values):
        return [] if values[low] < values[high] else [f"{low} must be < {high}"]

    return check


def _all(*checks):
    def check(values):
        return [problem for c in checks for problem in c(values)]

    return check


# name -> (argument names, scipy constructor, validity check)
FAMILIES = {
    "uniform": (("low", "high"), _uniform, _ordered()),
    "loguniform": (("low", "high"), _loguniform, _all(_positive("low"), _ordered())),
    "normal": (("mu", "sigma"), _normal, _positive("sigma")),
    "truncnormal": (("mu", "sigma", "low", "high"), _truncnormal, _all(_positive("sigma"), _ordered())),
    "halfnormal": (("sigma",), _halfnormal, _positive("sigma")),
    "halfcauchy": (("scale",), _halfcauchy, _positive("scale")),
    "cauchy": (("loc", "scale"), _cauchy, _positive("scale")),
    "exponential": (("rate",), _exponential, _positive("rate")),
    "lognormal": (("mu", "sigma"), _lognormal, _positive("sigma")),
    "beta": (("a", "b"), _beta, _positive("a", "b")),
    "gamma": (("shape", "rate"), _gamma, _positive("shape", "rate")),
    "studentt": (("nu", "mu", "sigma"), _studentt, _positive("nu", "sigma")),
}

# name -> d ln p(x)/dx on the support's interior, given the arguments (grammar order); the
# gradient-based sampler needs it (``reweighting.transforms``).
LOGPDF_GRADIENTS = {
    "uniform": lambda x, low, high: np.zeros_like(x),
    "loguniform": lambda x, low, high: -1.0 / x,
    "normal": lambda x, mu, sigma: -(x - mu) / sigma**2,
    "truncnormal": lambda x, mu, sigma, low, high: -(x - mu) / sigma**2,
    "halfnormal": lambda x, sigma: -x / sigma**2,
    "halfcauchy": lambda x, scale: -2.0 * x / (scale**2 + x * x),
    "cauchy": lambda x, loc, scale: -2.0 * (x - loc) / (scale**2 + (x - loc) ** 2),
    "exponential": lambda x, rate: np.full_like(x, -rate),
    "lognormal": lambda x, mu, sigma: -(1.0 + (np.log(x) - mu) / sigma**2) / x,
    "beta": lambda x, a, b: (a - 1.0) / x - (b - 1.0) / (1.0 - x),
    "gamma": lambda x, shape, rate: (shape - 1.0) / x - rate,
    "studentt": lambda x, nu, mu, sigma: -(nu + 1.0) * (x - mu) / (nu * sigma**2 + (x - mu) ** 2),
}

_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$", re.DOTALL)


def _grammar_help():
    return ", ".join(f"{name}({', '.join(args)})" for name, (args, _, _) in FAMILIES.items())


@dataclass(frozen=True)
class Distribution:
    """A frozen one-dimensional distribution of the grammar.

    Parameters
    ----------
    family : str
        Grammar name, e.g. ``"normal"``.
    args : tuple of float
        Arguments in grammar order, e.g. ``(mu, sigma)``.
    """

    family: str
    args: tuple
    _frozen: object = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        _, make, _ = FAMILIES[self.family]
        object.__setattr__(self, "_frozen", make(*self.args))
        # The uniform density is a constant on its support: evaluate it as such (a hot
        # path of stage one), with the constant taken from scipy.
        if self.family == "uniform":
            low, high = self.args
            object.__setattr__(self, "_constant", float(self._frozen.logpdf(0.5 * (low + high))))

    @property
    def spec(self):
        """Canonical text of the spec, which parses back to an equal distribution."""
        return f"{self.family}({', '.join(repr(float(a)) for a in self.args)})"

    def __str__(self):
        return self.spec

    @property
    def support(self):
        """(low, high) of the support, possibly infinite."""
        if "_support" not in self.__dict__:
            low, high = self._frozen.support()
            object.__setattr__(self, "_support", (float(low), float(high)))
        return self._support

    def logpdf(self, x):
        """Log density at ``x`` (array); ``-inf`` outside the support."""
        x = np.asarray(x, dtype=float)
        if self.family == "uniform":
            low, high = self.args
            return np.where((x >= low) & (x <= high), self._constant, np.where(np.isnan(x), np.nan, -np.inf))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.asarray(self._frozen.logpdf(x), dtype=float)
        # scipy gives nan for some families exactly at an open boundary.
        return np.where(np.isnan(out) & ~np.isnan(x), -np.inf, out)

    def logpdf_gradient(self, x):
        """d ln p(x)/dx at ``x`` (array) inside the support (0 outside it, where ln p is -inf)."""
        x = np.asarray(x, dtype=float)
        low, high = self.support
        inside = (x > low) & (x < high)
        safe = np.where(inside, x, 0.5 * (low + high) if np.isfinite(low + high) else
                        (low + 1.0 if np.isfinite(low) else (high - 1.0 if np.isfinite(high) else 0.0)))
        with np.errstate(divide="ignore", invalid="ignore"):
            gradient = LOGPDF_GRADIENTS[self.family](safe, *self.args)
        return np.where(inside, gradient, 0.0)

    def sample(self, rng, size=None):
        """Draw from the distribution with the generator ``rng``."""
        return self._frozen.rvs(size=size, random_state=rng)

    def ppf(self, q):
        """Quantile function."""
        return self._frozen.ppf(q)


def parse_distribution(text, option=None):
    """Parse a spec such as ``"normal(0, 5)"`` into a :class:`Distribution`.

    Raises
    ------
    UsageError
        For a malformed spec, an unknown family or invalid arguments; the
        message quotes ``text``.
    """
    where = f" (in {option})" if option else ""
    match = _SPEC.match(str(text))
    if not match:
        raise UsageError(
            f"Cannot parse distribution {text!r}{where}: expected NAME(ARG, ...), "
            f"one of {_grammar_help()}.",
            option,
        )
    family, body = match.group(1), match.group(2)
    family = family.lower()
    if family not in FAMILIES:
        raise UsageError(
            f"Unknown distribution {match.group(1)!r} in {text!r}{where}; known: "
            f"{', '.join(FAMILIES)}.",
            option,
        )
    names, _, check = FAMILIES[family]
    pieces = [p.strip() for p in body.split(",")] if body.strip() else []
    if len(pieces) != len(names):
        raise UsageError(
            f"Distribution {text!r}{where}: {family} takes {len(names)} argument(s) "
            f"({', '.join(names)}), got {len(pieces)}.",
            option,
        )
    values = []
    for name, piece in zip(names, pieces):
        try:
            value = float(piece)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise UsageError(
                f"Distribution {text!r}{where}: argument {name} = {piece!r} is not a finite number.",
                option,
            )
        values.append(value)
    problems = check(dict(zip(names, values)))
    if problems:
        raise UsageError(f"Distribution {text!r}{where}: {'; '.join(problems)}.", option)
    return Distribution(family, tuple(values))


def parse_assignment(text, option=None):
    """Parse ``NAME=DIST`` into ``(name, Distribution)``."""
    name, sep, spec = str(text).partition("=")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise UsageError(
            f"Cannot parse {text!r}{f' (in {option})' if option else ''}: expected "
            f"NAME=DIST, e.g. theta=normal(0, 10).",
            option,
        )
    return name, parse_distribution(spec, option)


def parse_value(text, option=None):
    """Parse ``NAME=VALUE`` (as in ``--fix intercept=0``) into ``(name, float)``."""
    name, sep, value = str(text).partition("=")
    name = name.strip()
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not name or number is None:
        raise UsageError(
            f"Cannot parse {text!r}{f' (in {option})' if option else ''}: expected "
            f"NAME=NUMBER, e.g. intercept=0.",
            option,
        )
    if not math.isfinite(number):
        raise UsageError(f"{option or 'The value'} {name}={value.strip()}: expected a finite number, e.g. {name}=0.",
                         option)
    return name, number


def parse_options(items, parse, option):
    """Repeatable ``NAME=...`` options (or a dict) into a dict; a repeated name is an error."""
    if items is None:
        return {}
    if isinstance(items, dict):
        return {str(k): v for k, v in items.items()}
    out = {}
    for text in items:
        name, value = parse(text, option)
        if name in out:
            raise UsageError(f"{option} {name}=... is given twice.", option)
        out[name] = value
    return out


def parse_priors(items, known, fixed, option, owner, noun):
    """``NAME=DIST`` options checked against the ``known`` names and the held ``fixed`` ones.

    Parameters
    ----------
    items : list of str or dict
        ``--prior``/``--hyperprior`` values (a dict may hold Distribution objects).
    known : sequence of str
        Names the model or population has.
    fixed : dict
        Names held with ``--fix``.
    option : str
        ``"--prior"`` or ``"--hyperprior"``, for messages.
    owner, noun : str
        E.g. ``"model 'normal'"`` and ``"parameter"``, for messages.
    """
    given = {name: (p if isinstance(p, Distribution) else parse_distribution(p, f"{option} {name}"))
             for name, p in parse_options(items, parse_assignment, option).items()}
    for name in list(given) + list(fixed):
        if name not in known:
            used = option if name in given else "--fix"
            raise UsageError(
                f"{used} {name}=...: {owner} has no {noun} {name!r}; its {noun}s are {', '.join(known)}.", used)
    both = sorted(set(given) & set(fixed))
    if both:
        raise UsageError(f"{noun.capitalize()} {both[0]!r} has both {option} and --fix; give one.", option)
    return given
