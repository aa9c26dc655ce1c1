"""Max-|T| tests with simultaneous intervals that agree with them (Hothorn, Bretz & Westfall 2008, "Simultaneous
inference in general parametric models"; single-step max-T).

For k components with statistics T_r, the test statistic is M = max_r |T_r| and its p-value is P[M* ≥ M] under the
null distribution of M*. The interval of component r at level 1 − γ is the set of values it could take without
|T_r| exceeding the critical value c_γ of M*, so **the test rejects at level γ exactly when some component's
interval excludes its null value**, and the component with the largest |T_r| is the one that drives the test. The
intervals are simultaneous over the k components of one test (not over the tests of a report).

* :class:`WaldMaxT`: T_r = (θ̂_r − θ0_r)/se_r with a covariance estimate; M* from the multivariate normal (df = ∞)
  or multivariate t (finite df) with the estimated correlation, exact for k = 1 and Monte-Carlo otherwise.
* :class:`ScoreMaxT`: multinomial counts against fixed reference shares, T_r = (x_r − n·p0_r)/√(n·p0_r(1 − p0_r)),
  M* by simulating multinomial(n, p0) tables (exact for any n up to Monte-Carlo error); the interval is Wilson's
  with z = c_γ, which contains p0_r exactly when |T_r| ≤ c_γ.

Monte-Carlo p-values are (1 + #{M* ≥ M})/(1 + n_sim) (valid: P[p ≤ γ] ≤ γ under the null) and c_γ is the order
statistic of the same draws at which that p-value crosses γ, so "p < γ" and "an interval excludes the null" are the
same event, draw for draw.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from audit.stats.intervals import wilson_bounds

N_SIM = 20000


def _mc_critical(descending: np.ndarray, level: float) -> float:
    """c such that M > c ⇔ (1 + #{M* ≥ M})/(1 + N) < 1 − level."""
    gamma = 1 - level
    k_max = math.ceil(gamma * (len(descending) + 1) - 1 - 1e-9) - 1
    return math.inf if k_max < 0 else float(descending[min(k_max, len(descending) - 1)])


class _MaxT:
    """Shared parts: statistics ``t`` over ``active`` components, null draws (descending) or an exact law."""

    t: np.ndarray
    active: np.ndarray
    _draws: np.ndarray | None
    _df: float

    @property
    def k(self) -> int:
        return int(self.active.sum())

    @property
    def statistic(self) -> float:
        return float(np.max(np.abs(self.t[self.active]))) if self.k else math.nan

    @property
    def driver(self) -> int:
        """Index of the component with the largest |T| (the one that drives the test); −1 when none is active."""
        return int(np.nanargmax(np.where(self.active, np.abs(self.t), -1.0))) if self.k else -1

    def _exact(self) -> bool:
        return self._draws is None

    @property
    def p_value(self) -> float:
        if not self.k:
            return math.nan
        m = self.statistic
        if self._exact():
            return float(2 * (stats.norm.sf(m) if math.isinf(self._df) else stats.t.sf(m, self._df)))
        hits = np.count_nonzero(self._draws >= m)
        return (1 + hits) / (1 + len(self._draws))

    def critical(self, level: float) -> float:
        """c at which the test of level 1 − ``level`` rejects: reject ⇔ max |T_r| > c."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        if self._exact():
            q = (1 + level) / 2
            return float(stats.norm.ppf(q) if math.isinf(self._df) else stats.t.ppf(q, self._df))
        return _mc_critical(self._draws, level)


class WaldMaxT(_MaxT):
    """Max-|T| Wald test of θ = θ0 for k components from an estimate and its covariance.

    Components with se = 0 carry no information and are left out (their statistic and interval are NaN);
    ``df`` is the reference t distribution's degrees of freedom (∞: normal)."""

    def __init__(self, estimate: np.ndarray, cov: np.ndarray, null: np.ndarray | float = 0.0, df: float = math.inf,
                 n_sim: int = N_SIM, seed: int = 0) -> None:
        self.estimate = np.asarray(estimate, float).ravel()
        self.null = np.broadcast_to(np.asarray(null, float), self.estimate.shape).copy()
        cov = np.asarray(cov, float).reshape(len(self.estimate), len(self.estimate))
        self.se = np.sqrt(np.clip(np.diag(cov), 0, None))
        self.active = self.se > 1e-12 * max(1.0, float(np.abs(self.estimate).max(initial=0)))
        with np.errstate(invalid="ignore", divide="ignore"):
            self.t = np.where(self.active, (self.estimate - self.null) / self.se, np.nan)
        self._df = float(df)
        self._draws = None
        if self.k > 1:
            idx = np.flatnonzero(self.active)
            s = self.se[idx]
            corr = cov[np.ix_(idx, idx)] / np.outer(s, s)
            w, v = np.linalg.eigh((corr + corr.T) / 2)
            root = v * np.sqrt(np.clip(w, 0, None))
            rng = np.random.default_rng(seed)
            z = rng.standard_normal((n_sim, len(idx))) @ root.T
            if math.isfinite(self._df):
                z /= np.sqrt(rng.chisquare(self._df, size=(n_sim, 1)) / self._df)
            self._draws = np.sort(np.abs(z).max(axis=1))[::-1]

    def intervals(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """θ̂_r ∓ c·se_r for every component (simultaneous over the active ones at ``level``)."""
        c = self.critical(level) if self.k else math.nan
        low = np.where(self.active, self.estimate - c * self.se, np.nan)
        return low, np.where(self.active, self.estimate + c * self.se, np.nan)


class ScoreMaxT(_MaxT):
    """Max-|T| score test of multinomial ``counts`` against fixed reference shares p0 (all > 0), with Wilson
    intervals at the test's critical value."""

    def __init__(self, counts: np.ndarray, reference: np.ndarray, n_sim: int = N_SIM, seed: int = 0) -> None:
        self.counts = np.asarray(counts, float).ravel()
        self.reference = np.asarray(reference, float).ravel()
        if self.counts.shape != self.reference.shape or np.any(self.reference <= 0):
            raise ValueError("the reference needs a positive share for every counted category")
        self.reference = self.reference / self.reference.sum()
        self.n = float(self.counts.sum())
        self.estimate = self.counts / self.n if self.n else np.full(len(self.counts), np.nan)
        self.null = self.reference
        self.active = np.full(len(self.counts), self.n > 0 and len(self.counts) > 1)
        spread = np.sqrt(self.n * self.reference * (1 - self.reference))
        with np.errstate(invalid="ignore", divide="ignore"):
            self.t = (self.counts - self.n * self.reference) / spread
        self._df = math.inf
        self._draws = None
        if self.k:
            sims = np.random.default_rng(seed).multinomial(int(self.n), self.reference, size=n_sim)
            draws = np.abs((sims - self.n * self.reference) / spread).max(axis=1)
            self._draws = np.sort(draws)[::-1]

    def intervals(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Wilson intervals of each share at z = c (contain p0_r ⇔ |T_r| ≤ c)."""
        if not self.k:
            nan = np.full(len(self.counts), np.nan)
            return nan, nan.copy()
        return wilson_bounds(self.counts, np.full(len(self.counts), self.n), self.critical(level))
