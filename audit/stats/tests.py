"""Hypothesis tests for input → output audits, each returning one tidy :class:`TestResult`.

Every test reports the minimum detectable effect (MDE) at its own n (α and power as given, defaults 0.05 / 0.8)
and the observed effect in the same unit: Cohen's w for χ² tests, percentage points for McNemar, the data's unit
for Wilcoxon. Small-sample fallbacks are Monte-Carlo tests with ``n_sim`` draws and a fixed seed; their p-value
(1 + #{T* ≥ T})/(1 + n_sim) is valid for any n_sim: P[p ≤ α] ≤ α under the null.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse, special, stats

from audit.stats.power import mde_mcnemar, mde_shift, mde_w

EXACT_DISCORDANT = 25  # McNemar / Bowker pairs below this use exact (binomial) null distributions
MIN_EXPECTED = 5.0  # Cochran's rule for χ² approximations
_TOL = 1e-9  # relative tolerance for "statistic at least as extreme" in Monte-Carlo p-values


@dataclass(frozen=True)
class TestResult:
    """One hypothesis test.

    Attributes:
        name: what was tested, e.g. "race: output shares vs reference".
        statistic: the test statistic (χ² for χ² tests and McNemar, W for Wilcoxon).
        df: degrees of freedom of the χ² reference distribution (NaN when not applicable).
        p_value: two-sided p-value in [0, 1] (NaN when the test could not be run).
        method: how p was obtained ("asymptotic χ²", "exact binomial", "Monte-Carlo …").
        n: number of independent units (inputs, or pairs) the test used.
        mde: minimum detectable effect at this n, in ``unit``.
        notes: warnings (small expected counts, dropped categories, …), "; "-separated.
        effect: the observed effect in ``unit`` (w = √(χ²/n), |δ| in pp, median difference).
        unit: unit of ``mde`` and ``effect``: "w", "pp", or the data's unit.
    """

    __test__ = False  # not a pytest test class

    name: str
    statistic: float
    df: float
    p_value: float
    method: str
    n: int
    mde: float
    notes: str = ""
    effect: float = math.nan
    unit: str = ""

    def __post_init__(self) -> None:  # plain Python numbers (JSON-friendly), whatever numpy type came in
        for field in ("statistic", "df", "p_value", "mde", "effect"):
            object.__setattr__(self, field, float(getattr(self, field)))
        object.__setattr__(self, "n", int(self.n))

    def as_dict(self) -> dict:
        return asdict(self)


def _counts(x: np.ndarray | list, ndim: int) -> np.ndarray:
    a = np.asarray(x, float)
    if a.ndim != ndim or np.any(a < 0) or np.any(a != np.round(a)):
        raise ValueError(f"expected a {ndim}-d array of non-negative integer counts, got {x!r}")
    return a


def _mc_p(observed: float, simulated: np.ndarray) -> float:
    """Monte-Carlo p-value (1 + #{T* ≥ T})/(1 + n_sim) with a relative tolerance for ties."""
    hits = np.count_nonzero(simulated >= observed - _TOL * max(1.0, abs(observed)))
    return (1 + hits) / (1 + simulated.size)


def _w(chi2: float, n: float) -> float:
    return math.sqrt(chi2 / n) if n > 0 else math.nan


def chi2_gof(observed: np.ndarray | list, reference: np.ndarray | list, name: str = "χ² goodness of fit",
             alpha: float = 0.05, power: float = 0.8, n_sim: int = 20000, seed: int = 0) -> TestResult:
    """Pearson χ² goodness of fit of counts O_r to reference shares p0_r (``scipy.stats.chisquare`` semantics).

    χ² = Σ (O_r − E_r)²/E_r, E_r = N·p0_r, df = k − 1 over categories with p0_r > 0 (categories with p0 = 0 and no
    observation are dropped; an observation where p0 = 0 gives χ² = ∞, p = 0). If some E_r < 5 the p-value is a
    Monte-Carlo test: n_sim multinomial(N, p0) tables, same statistic. Effect and MDE in Cohen's w.
    """
    o, p = _counts(observed, 1), np.asarray(reference, float)
    if o.shape != p.shape or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("reference must be non-negative shares, one per observed category")
    p, n, notes = p / p.sum(), int(o.sum()), []
    if np.any(o[p == 0] > 0):
        return TestResult(name, math.inf, float(np.count_nonzero(p) - 1), 0.0, "observation outside reference", n,
                          mde_w(np.count_nonzero(p) - 1, n, alpha, power), "category with reference share 0 observed",
                          math.inf, "w")
    o, p = o[p > 0], p[p > 0]
    df = len(o) - 1
    if n == 0 or df < 1:
        return TestResult(name, math.nan, df, math.nan, "not run", n, math.nan, "no data or a single category")
    e = n * p
    chi2 = float(((o - e) ** 2 / e).sum())
    if e.min() >= MIN_EXPECTED:
        pval, method = float(stats.chi2.sf(chi2, df)), "Pearson χ² (asymptotic)"
    else:
        sims = np.random.default_rng(seed).multinomial(n, p, size=n_sim)
        pval = _mc_p(chi2, ((sims - e) ** 2 / e).sum(axis=1))
        method = f"Monte-Carlo multinomial ({n_sim} draws)"
        notes.append(f"{np.count_nonzero(e < MIN_EXPECTED)} expected count(s) < {MIN_EXPECTED:g}")
    return TestResult(name, chi2, df, pval, method, n, mde_w(df, n, alpha, power), "; ".join(notes), _w(chi2, n), "w")


def chi2_independence(table: np.ndarray | list, name: str = "χ² independence", alpha: float = 0.05,
                      power: float = 0.8, n_sim: int = 20000, seed: int = 0) -> TestResult:
    """Pearson χ² test of independence on an r×c table of real counts (for RDP: groups × {preserved, flipped}).

    χ² = Σ (n_ij − E_ij)²/E_ij, E_ij = n_i·n_j/N, df = (r − 1)(c − 1), no continuity correction, after dropping
    empty rows/columns. If some E_ij < 5: Fisher–Freeman–Halton test by Monte-Carlo — n_sim tables with the same
    margins (``scipy.stats.random_table``), p = share with hypergeometric probability ≤ the observed table's.
    Effect and MDE in Cohen's w.
    """
    t = _counts(table, 2)
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    n = int(t.sum())
    if t.shape[0] < 2 or t.shape[1] < 2:
        return TestResult(name, 0.0, 0, 1.0, "degenerate table", n, math.nan,
                          "fewer than two non-empty rows or columns: nothing to compare")
    df = (t.shape[0] - 1) * (t.shape[1] - 1)
    e = np.outer(t.sum(axis=1), t.sum(axis=0)) / n
    chi2, notes = float(((t - e) ** 2 / e).sum()), ""
    if e.min() >= MIN_EXPECTED:
        pval, method = float(stats.chi2.sf(chi2, df)), "Pearson χ² (asymptotic)"
    else:
        sims = stats.random_table(t.sum(axis=1), t.sum(axis=0), seed=seed).rvs(n_sim)
        # log P(table | margins) = const − Σ log n_ij!; "as extreme" = at most as probable as observed
        pval = _mc_p(float(special.gammaln(t + 1).sum()), special.gammaln(sims + 1).sum(axis=(1, 2)))
        method = f"Fisher–Freeman–Halton (Monte-Carlo, {n_sim} tables)"
        notes = f"{np.count_nonzero(e < MIN_EXPECTED)} expected cell(s) < {MIN_EXPECTED:g}"
    return TestResult(name, chi2, df, pval, method, n, mde_w(df, n, alpha, power), notes, _w(chi2, n), "w")


def mcnemar(table: np.ndarray | list, name: str = "McNemar", alpha: float = 0.05, power: float = 0.8) -> TestResult:
    """McNemar test on a paired 2×2 table t[input][output] (index 0 = "positive", e.g. White).

    b = t[0, 1], c = t[1, 0]; χ² = (b − c)²/(b + c), df 1, no continuity correction. When b + c < 25 the p-value is
    the exact two-sided binomial min(1, 2·P[Bin(b + c, ½) ≤ min(b, c)]). Effect |δ| = |b − c|/N and MDE (Connor)
    in percentage points of N pairs.
    """
    t = _counts(table, 2)
    if t.shape != (2, 2):
        raise ValueError("McNemar needs a 2×2 table")
    b, c, n = t[0, 1], t[1, 0], int(t.sum())
    mde = 100 * mde_mcnemar(n, (b + c) / n, alpha, power) if n else math.nan
    effect = 100 * abs(b - c) / n if n else math.nan
    if b + c == 0:
        return TestResult(name, 0.0, 1, 1.0, "no discordant pairs", n, mde, "", effect, "pp")
    chi2 = float((b - c) ** 2 / (b + c))
    if b + c < EXACT_DISCORDANT:
        pval = min(1.0, 2 * float(stats.binom.cdf(min(b, c), b + c, 0.5)))
        return TestResult(name, chi2, 1, pval, "exact binomial", n, mde, f"{int(b + c)} discordant pairs", effect, "pp")
    return TestResult(name, chi2, 1, float(stats.chi2.sf(chi2, 1)), "McNemar χ² (asymptotic)", n, mde, "", effect, "pp")


def stuart_maxwell(table: np.ndarray | list, name: str = "Stuart–Maxwell marginal homogeneity", alpha: float = 0.05,
                   power: float = 0.8) -> TestResult:
    """Stuart–Maxwell test that the row (input) and column (output) margins of a paired k×k table are equal.

    d_i = n_i· − n_·i; S_ii = n_i· + n_·i − 2n_ii, S_ij = −(n_ij + n_ji); χ² = dᵀ S⁺ d. S is the Laplacian of the
    graph of off-diagonal flows; the usual "drop one category and invert" equals the Moore–Penrose form on a
    connected graph. Categories with zero margins or perfect agreement (no off-diagonal mass) are isolated nodes and
    drop out, and df = rank(S) = k − #components (k − 1 when every category exchanges with the rest).
    Effect and MDE in Cohen's w on N pairs.
    """
    t = _counts(table, 2)
    if t.shape[0] != t.shape[1]:
        raise ValueError("Stuart–Maxwell needs a square table")
    n, flows = int(t.sum()), t + t.T
    np.fill_diagonal(flows, 0)
    n_comp = sparse.csgraph.connected_components(sparse.csr_matrix(flows), directed=False)[0]
    df = t.shape[0] - n_comp
    dropped = int(np.count_nonzero(flows.sum(axis=1) == 0))
    notes = f"{dropped} categor{'y' if dropped == 1 else 'ies'} without off-diagonal pairs dropped" if dropped else ""
    if df < 1:
        return TestResult(name, 0.0, 0, 1.0, "no off-diagonal pairs", n, math.nan, notes, 0.0, "w")
    s = np.diag(flows.sum(axis=1)) - flows
    d = t.sum(axis=1) - t.sum(axis=0)
    chi2 = float(d @ np.linalg.pinv(s, hermitian=True) @ d)
    offdiag = int(n - np.trace(t))
    if offdiag < EXACT_DISCORDANT:
        notes = "; ".join(filter(None, [notes, f"only {offdiag} discordant pairs: χ² approximation is rough"]))
    return TestResult(name, chi2, df, float(stats.chi2.sf(chi2, df)), "Stuart–Maxwell χ² (asymptotic)", n,
                      mde_w(df, n, alpha, power), notes, _w(chi2, n), "w")


def bowker(table: np.ndarray | list, name: str = "Bowker symmetry", alpha: float = 0.05, power: float = 0.8,
           n_sim: int = 20000, seed: int = 0) -> TestResult:
    """Bowker test that flips i→j are as common as j→i: χ² = Σ_{i<j} (n_ij − n_ji)²/(n_ij + n_ji), df = the number of
    pairs with n_ij + n_ji > 0 (empty pairs carry no information and are dropped; statsmodels keeps df = k(k−1)/2).

    If some pair has n_ij + n_ji < 25, the p-value is the exact conditional test by Monte-Carlo: given the pair
    totals m_ij, n_ij ~ Bin(m_ij, ½) independently under symmetry (for k = 2 this is the exact McNemar test).
    Effect and MDE in Cohen's w on N pairs.
    """
    t = _counts(table, 2)
    if t.shape[0] != t.shape[1]:
        raise ValueError("Bowker needs a square table")
    iu = np.triu_indices(t.shape[0], 1)
    upper, lower = t[iu], t.T[iu]
    m, n = upper + lower, int(t.sum())
    upper, m = upper[m > 0], m[m > 0]
    df = len(m)
    if df == 0:
        return TestResult(name, 0.0, 0, 1.0, "no off-diagonal pairs", n, math.nan, "", 0.0, "w")
    chi2 = float(((2 * upper - m) ** 2 / m).sum())
    if m.min() >= EXACT_DISCORDANT:
        pval, method, notes = float(stats.chi2.sf(chi2, df)), "Bowker χ² (asymptotic)", ""
    else:
        sims = np.random.default_rng(seed).binomial(m.astype(int), 0.5, size=(n_sim, df))
        pval = _mc_p(chi2, ((2 * sims - m) ** 2 / m).sum(axis=1))
        method = f"exact conditional (Monte-Carlo, {n_sim} draws)"
        notes = f"{np.count_nonzero(m < EXACT_DISCORDANT)} pair(s) with < {EXACT_DISCORDANT} discordant"
    return TestResult(name, chi2, df, pval, method, n, mde_w(df, n, alpha, power), notes, _w(chi2, n), "w")


def wilcoxon_signed_rank(differences: np.ndarray | list, name: str = "Wilcoxon signed-rank", unit: str = "",
                         alpha: float = 0.05, power: float = 0.8) -> TestResult:
    """Wilcoxon signed-rank test that paired differences are symmetric about 0 (``scipy.stats.wilcoxon`` with
    zero_method "wilcox": zero differences are dropped; exact null distribution for small n without ties).
    NaN differences are ignored. Effect = median difference; MDE = mean shift detectable (``mde_shift``), in
    ``unit``.
    """
    d = np.asarray(differences, float)
    d = d[np.isfinite(d)]
    n = len(d)
    mde = mde_shift(float(np.std(d, ddof=1)), n, alpha, power) if n > 1 else math.nan
    effect = float(np.median(d)) if n else math.nan
    if np.count_nonzero(d) == 0:
        return TestResult(name, math.nan, math.nan, math.nan, "not run", n, mde, "no non-zero differences", effect,
                          unit)
    res = stats.wilcoxon(d, zero_method="wilcox")
    notes = f"{n - np.count_nonzero(d)} zero difference(s) dropped" if np.count_nonzero(d) < n else ""
    return TestResult(name, float(res.statistic), math.nan, float(res.pvalue), "Wilcoxon signed-rank", n, mde, notes,
                      effect, unit)
