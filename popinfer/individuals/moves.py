"""An emcee move that runs an independent stretch move for every object of a batch."""

import numpy as np
from emcee.moves import Move


class BlockStretchMove(Move):
    """Goodman & Weare (2010) stretch move, independently per object block.

    The walker coordinates are the concatenation of ``n_objects`` blocks of
    ``n_dim`` parameters. Every object draws its own stretch factors z, its own
    complementary walkers and its own accept/reject decisions, exactly as
    ``emcee.moves.StretchMove`` would in a separate sampler for that object; only
    the log-probability call is shared (one vectorised call per half-step). The
    per-object log-probabilities travel in ``state.blobs`` (n_walkers, n_objects).

    Parameters
    ----------
    n_dim : int
        Parameters per object (D).
    rng : numpy.random.Generator
        Source of all randomness of the move.
    log_prob : callable, optional
        θ (n, n_objects, D) -> per-object log-probabilities (n, n_objects). When
        given it is called directly, skipping emcee's per-walker result
        unpacking (which costs more than the likelihood for large batches);
        otherwise the sampler's own ``compute_log_prob`` is used, with the
        per-object values as blobs.
    a : float
        Stretch scale (emcee's default 2).
    """

    def __init__(self, n_dim, rng, log_prob=None, a=2.0):
        self.n_dim = n_dim
        self.rng = rng
        self.log_prob = log_prob
        self.a = a
        self.accepted = None

    def propose(self, model, state):
        n_walkers = state.coords.shape[0]
        n_objects = state.coords.shape[1] // self.n_dim
        coords = state.coords.reshape(n_walkers, n_objects, self.n_dim)
        log_prob = np.array(state.blobs, dtype=float).reshape(n_walkers, n_objects)
        objects = np.arange(n_objects)[None, :]
        accepted = np.zeros((n_walkers, n_objects), dtype=bool)
        permutation = self.rng.permutation(n_walkers)
        halves = (permutation[: n_walkers // 2], permutation[n_walkers // 2:])
        for moving, complement in (halves, halves[::-1]):
            n_moving = len(moving)
            uniform = self.rng.random((3, n_moving, n_objects))
            z = ((self.a - 1.0) * uniform[0] + 1.0) ** 2 / self.a
            partners = complement[(uniform[2] * len(complement)).astype(np.intp)]
            partner = np.take(coords.reshape(-1, self.n_dim), partners * n_objects + objects, axis=0)
            current = coords[moving]
            proposal = partner - z[..., None] * (partner - current)
            if self.log_prob is not None:
                new_log_prob = self.log_prob(proposal)
            else:
                _, blobs = model.compute_log_prob_fn(proposal.reshape(n_moving, -1))
                new_log_prob = np.asarray(blobs, dtype=float).reshape(n_moving, n_objects)
            current_log_prob = log_prob[moving]
            log_ratio = new_log_prob - current_log_prob
            if self.n_dim > 1:
                log_ratio += (self.n_dim - 1.0) * np.log(z)
            accept = np.log(uniform[1]) < log_ratio
            coords[moving] = np.where(accept[..., None], proposal, current)
            log_prob[moving] = np.where(accept, new_log_prob, current_log_prob)
            accepted[moving] = accept
        state.coords = coords.reshape(n_walkers, -1)
        state.blobs = log_prob
        state.log_prob = log_prob.sum(axis=1)
        if self.accepted is not None:
            self.accepted += accepted
        return state, accepted.any(axis=1)
