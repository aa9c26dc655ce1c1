"""Divergences between an observed distribution p and a reference q (probability vectors over the same k
categories, last axis; leading axes broadcast, e.g. bootstrap replicates (B, k) against a reference (k,)).

Inputs are used as given (normalise them first). Conventions: 0·log 0 = 0 and 0/0 = 0; mass where q = 0 makes the
χ² and KL divergences infinite; a NaN share (no data) makes every divergence NaN.
"""

from __future__ import annotations

import numpy as np


def _pair(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.broadcast_arrays(np.asarray(p, float), np.asarray(q, float))
    if np.any(p < 0) or np.any(q < 0):
        raise ValueError("probabilities must be non-negative")
    return p, q


def pearson_chi2(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Pearson χ² divergence D_χ²(p‖q) = Σ_r (p_r − q_r)²/q_r, in [0, ∞). Equals Cohen's w² and χ²_GOF/N;
    against the uniform q = 1/k it is the benchmark's ``chi`` = k·Σ (p_r − 1/k)²."""
    p, q = _pair(p, q)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, (p - q) ** 2 / q, np.where(p > 0, np.inf, 0.0))
    return terms.sum(axis=-1)


def chebyshev(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Chebyshev (L∞) distance max_r |p_r − q_r|, in [0, 1] (the benchmark's ``cheb``)."""
    p, q = _pair(p, q)
    return np.abs(p - q).max(axis=-1)


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Kullback–Leibler divergence KL(p‖q) = Σ_r p_r·ln(p_r/q_r) in nats, in [0, ∞]."""
    p, q = _pair(p, q)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(np.isnan(p) | np.isnan(q), np.nan, np.where(p > 0, p * np.log(p / q), 0.0))
    return terms.sum(axis=-1)


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total variation distance ½·Σ_r |p_r − q_r| = max over sets A of |p(A) − q(A)|, in [0, 1].
    (The benchmark's ``tv`` is the L1 distance, i.e. twice this.)"""
    p, q = _pair(p, q)
    return 0.5 * np.abs(p - q).sum(axis=-1)


DIVERGENCES = {"pearson_chi2": pearson_chi2, "chebyshev": chebyshev, "kl": kl, "total_variation": total_variation}


def divergences(p: np.ndarray, q: np.ndarray) -> dict[str, np.ndarray]:
    """All four divergences of p from q, keyed by name (see :data:`DIVERGENCES`)."""
    return {name: f(p, q) for name, f in DIVERGENCES.items()}
