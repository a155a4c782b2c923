"""Integrated autocorrelation times of many chains at once.

Two estimators, each computed for all parameters of all objects in one FFT instead of a
Python loop over walkers and dimensions:

- ``integrated_time`` is emcee's (``emcee.autocorr.integrated_time``: the walker-averaged
  normalised autocorrelation function, each walker centred on its own mean, Sokal's automatic
  window with c = 5); ``tests/test_autocorr.py`` checks it against emcee to 1e-10.
- ``ensemble_autocorrelation`` centres every walker on the ensemble's mean and pools the
  walkers' autocovariances before normalising. On short chains (stage one keeps 25 τ per
  walker) centring each walker on its own mean removes the slow part of its fluctuation — the
  centred autocovariance of one walker sums to zero over all lags — so emcee's τ comes out
  about 1.6 times too small there, and the variance of a posterior mean predicted from it about
  half the real one (``tests/test_autocorr.py`` measures both). The ensemble-centred estimate
  keeps the walkers' differing means, which is exactly what the variance of the ensemble's mean
  sees. ``effective_size`` turns its autocorrelation function into the effective number of
  independent draws of a given selection of the chain's positions.
"""

import numpy as np
import scipy.fft
from emcee.autocorr import next_pow_two

COLUMN_BLOCK_ELEMENTS = 2**20


def _mean_autocorrelation(chain, pooled):
    """The walker-averaged (``pooled`` False: each walker centred and normalised on its own) or pooled
    (True: centred on the ensemble's mean, autocovariances summed, then normalised) autocorrelation
    function of each column, (n_steps, n_columns)."""
    chain = np.asarray(chain, dtype=float)
    n_steps, n_walkers, n_columns = chain.shape
    n_fft = 2 * next_pow_two(n_steps)
    # Columns go in blocks small enough to stay in cache (and to avoid touching
    # one huge fresh array).
    block = max(1, COLUMN_BLOCK_ELEMENTS // (n_fft * n_walkers))
    padded = np.zeros((n_fft, n_walkers, min(block, n_columns)))
    mean_power = np.empty((n_fft // 2 + 1, n_columns))
    for lo in range(0, n_columns, block):
        hi = min(lo + block, n_columns)
        work = padded[:, :, : hi - lo]
        work[n_steps:] = 0.0
        centred = work[:n_steps]
        part = chain[:, :, lo:hi]
        np.subtract(part, part.mean(axis=(0, 1) if pooled else 0), out=centred)
        with np.errstate(divide="ignore", invalid="ignore"):
            if pooled:
                weights = np.broadcast_to(1.0 / np.einsum("twc,twc->c", centred, centred), centred.shape[1:])
            else:
                weights = 1.0 / np.einsum("twc,twc->wc", centred, centred) / n_walkers
        spectrum = scipy.fft.rfft(work, axis=0)
        # The walker average of normalised autocorrelation functions is linear in
        # the power spectra |F|², so normalise (by each walker's zero-lag term, or by
        # the pooled one) and average in the frequency domain, then transform back
        # once per column.
        with np.errstate(invalid="ignore"):
            mean_power[:, lo:hi] = (np.einsum("fwc,fwc,wc->fc", spectrum.real, spectrum.real, weights)
                                    + np.einsum("fwc,fwc,wc->fc", spectrum.imag, spectrum.imag, weights))
    return scipy.fft.irfft(mean_power, n=n_fft, axis=0)[:n_steps]


def _windowed(acf, c):
    """τ per column and Sokal's window (the last lag summed), from autocorrelation functions (n_steps, columns)."""
    n_steps = acf.shape[0]
    taus = 2.0 * np.cumsum(acf, axis=0) - 1.0
    # Sokal: the smallest window M with M >= c τ(M), as emcee's auto_window. Where
    # the window never closes (chain far too short) emcee would return τ = 1; we
    # return the estimate over the whole chain instead, so such a chain never
    # looks converged.
    inside = np.arange(n_steps)[:, None] < c * taus
    window = np.where(inside.all(axis=0), n_steps - 1, np.argmin(inside, axis=0))
    tau = taus[window, np.arange(taus.shape[1])]
    return np.where(np.isfinite(tau), tau, np.inf), window


def integrated_time(chain, c=5):
    """Integrated autocorrelation time of each column, in steps of ``chain`` (emcee's estimator).

    Parameters
    ----------
    chain : ndarray, shape (n_steps, n_walkers, n_columns)
    c : float
        Window constant of Sokal's automatic windowing (emcee's default 5).

    Returns
    -------
    ndarray, shape (n_columns,)
        τ per column; ``inf`` where a chain is constant (no information).
    """
    return _windowed(_mean_autocorrelation(chain, pooled=False), c)[0]


def ensemble_autocorrelation(chain, c=5):
    """Ensemble-centred integrated autocorrelation time of each column, with its autocorrelation function.

    Parameters
    ----------
    chain : ndarray, shape (n_steps, n_walkers, n_columns)
    c : float
        Window constant of Sokal's automatic windowing.

    Returns
    -------
    tau : ndarray, shape (n_columns,)
        τ per column, in steps of ``chain``; ``inf`` where every walker is constant at one value.
    acf : ndarray, shape (n_steps, n_columns)
        The pooled autocorrelation function, zero beyond each column's window (and NaN for a
        constant column).
    """
    acf = _mean_autocorrelation(chain, pooled=True)
    tau, window = _windowed(acf, c)
    acf[np.arange(acf.shape[0])[:, None] > window[None, :]] = 0.0
    return tau, acf


def effective_size(acf, picks):
    """Effective number of independent draws in a selection of a chain's positions.

    Parameters
    ----------
    acf : ndarray, shape (n_steps, n_columns)
        Windowed autocorrelation functions (``ensemble_autocorrelation``), assumed the same for every walker,
        and walkers taken as independent of each other.
    picks : ndarray of bool, shape (n_steps, n_walkers)
        The positions selected (K of them).

    Returns
    -------
    ndarray, shape (n_columns,)
        K² / Σ_{i,j} ρ(lag between picks i and j of the same walker): the variance of the picks' mean is
        the posterior variance over this.
    """
    picks = np.asarray(picks, dtype=float)
    n_steps = picks.shape[0]
    n_fft = 2 * next_pow_two(n_steps)
    spectrum = scipy.fft.rfft(picks, n=n_fft, axis=0)
    # pairs[k]: the number of pairs of picks of one walker k steps apart
    pairs = np.rint(scipy.fft.irfft((spectrum * spectrum.conj()).real.sum(axis=1), n=n_fft)[:n_steps])
    n_picks = pairs[0]
    with np.errstate(invalid="ignore"):
        correlated = n_picks + 2.0 * pairs[1:] @ acf[1:]
        return np.where(correlated > 0, n_picks**2 / correlated, 0.0)
