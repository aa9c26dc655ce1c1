"""The classifier's own noise floor (from an ``oracle`` run, where the output is the original image) and an optional
correction of output shares for the classifier's confusion."""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.metrics.attribute import AttributeAudit
from audit.stats.intervals import Bootstrap, percentile_interval


def same_design(a: Bootstrap, b: Bootstrap) -> bool:
    """True when two bootstrap designs draw identical replicates (same seed, n_boot, strata sizes and cluster ids),
    i.e. the runs hold the same inputs in the same strata and their replicates are paired."""
    return (a.seed == b.seed and a.n_boot == b.n_boot and np.array_equal(a.stratum_sizes, b.stratum_sizes)
            and np.array_equal(a.cluster_keys.astype(str), b.cluster_keys.astype(str)))


def noise_floor(run: AttributeAudit, oracle: AttributeAudit) -> pd.DataFrame:
    """Per group: flip rate (1 − preservation) of the run, of the oracle run (the classifier's own flip rate when
    the output is the original, i.e. the noise floor), and the excess = run − oracle, in [−1, 1].

    The excess interval is the percentile interval of replicate differences. When both audits share a bootstrap
    design (same inputs, strata and seed; column ``paired``) the replicates are paired and the interval accounts for
    the shared inputs; otherwise the runs are treated as independent (conservative if they share inputs).
    """
    run_idx, oracle_idx = run.frame.group_index, oracle.frame.group_index
    common = [g for g in run_idx if g in set(oracle_idx)]
    ri, oi = [run_idx.get_loc(g) for g in common], [oracle_idx.get_loc(g) for g in common]
    run_flip = 1 - run.frame.value("preservation").to_numpy()[ri]
    oracle_flip = 1 - oracle.frame.value("preservation").to_numpy()[oi]
    reps = oracle.frame.replicates("preservation")[:, oi] - run.frame.replicates("preservation")[:, ri]
    low, high = percentile_interval(reps, run.confidence)
    index = run_idx[ri] if len(common) else run_idx[:0]
    return pd.DataFrame({"flip_rate": run_flip, "oracle_flip_rate": oracle_flip, "excess": run_flip - oracle_flip,
                         "ci_low": low, "ci_high": high,
                         "paired": same_design(run.frame.bootstrap, oracle.frame.bootstrap)}, index=index).reset_index()


def project_to_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of v onto {x ≥ 0, Σx = 1} (Duchi et al. 2008): x = max(v − θ, 0) with θ chosen so
    that the result sums to 1."""
    v = np.asarray(v, float)
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1
    rho = np.flatnonzero(u - cumulative / np.arange(1, len(u) + 1) > 0)[-1]
    return np.maximum(v - cumulative[rho] / (rho + 1), 0.0)


def corrected_shares(observed: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """Output shares corrected for classifier error (a method suggestion, not a standard of the field).

    With C[i, j] = P[classifier says j | true class i] estimated on the originals (``oracle.confusion()`` when the
    oracle's truth is the dataset label) and observed output shares q̂, the true shares π satisfy q = Cᵀπ, so
    π̂ = (Cᵀ)⁻¹ q̂ (least squares when C is singular), projected onto the simplex. This is the multiclass
    Rogan–Gladen / "adjusted classify and count" estimator; it assumes the classifier errs on generated faces as it
    does on real ones, which a GAN's artefacts can violate. Rows of C for classes absent from the originals are
    taken as perfect (identity rows).
    """
    c = np.array(confusion, float)
    absent = ~np.isfinite(c).all(axis=1)
    c[absent] = np.eye(len(c))[absent]
    pi = np.linalg.lstsq(c.T, np.asarray(observed, float), rcond=None)[0]
    return project_to_simplex(pi)
