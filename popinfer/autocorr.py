"""Integrated autocorrelation times of many chains at once.

This is emcee's estimator (``emcee.autocorr.integrated_time``: the walker-averaged
normalised autocorrelation function, Sokal's automatic window with c = 5) computed
for all parameters of all objects in one FFT instead of a Python loop over walkers
and dimensions; ``tests/test_autocorr.py`` checks it against emcee to 1e-10.
"""

import numpy as np
import scipy.fft
from emcee.autocorr import next_pow_two

COLUMN_BLOCK_ELEMENTS = 2**20


def integrated_time(chain, c=5):
    """Integrated autocorrelation time of each column, in steps of ``chain``.

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
        np.subtract(part, part.mean(axis=0), out=centred)
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = 1.0 / np.einsum("twc,twc->wc", centred, centred) / n_walkers
        spectrum = scipy.fft.rfft(work, axis=0)
        # The walker average of normalised autocorrelation functions is linear in
        # the power spectra |F|², so normalise (by each walker's zero-lag term) and
        # average in the frequency domain, then transform back once per column.
        with np.errstate(invalid="ignore"):
            mean_power[:, lo:hi] = (np.einsum("fwc,fwc,wc->fc", spectrum.real, spectrum.real, weights)
                                    + np.einsum("fwc,fwc,wc->fc", spectrum.imag, spectrum.imag, weights))
    mean_acf = scipy.fft.irfft(mean_power, n=n_fft, axis=0)[:n_steps]
    taus = 2.0 * np.cumsum(mean_acf, axis=0) - 1.0
    # Sokal: the smallest window M with M >= c τ(M), as emcee's auto_window. Where
    # the window never closes (chain far too short) emcee would return τ = 1; we
    # return the estimate over the whole chain instead, so such a chain never
    # looks converged.
    inside = np.arange(n_steps)[:, None] < c * taus
    window = np.where(inside.all(axis=0), n_steps - 1, np.argmin(inside, axis=0))
    tau = taus[window, np.arange(taus.shape[1])]
    return np.where(np.isfinite(tau), tau, np.inf)
