"""Hypothesis tests for input → output audits, each returning one tidy :class:`TestResult`.

Every test reports the minimum detectable effect (MDE) at its own n (α and power as given, defaults 0.05 / 0.8)
and the observed effect in the same unit. The report's tests are :func:`wald_max_test` (any estimate with a
covariance, e.g. a clustered mean from :mod:`audit.stats.clustered`: it uses every sample) and
:func:`score_max_test` (counts against a fixed reference); each carries the interval of its effect from the same
estimator, which excludes the null exactly when the test rejects at the same level (see
:mod:`audit.stats.simultaneous`). A test that cannot be run is :func:`not_testable` with its reason. The classical
one-sample-per-input tests below them (χ², McNemar, Stuart–Maxwell, Bowker, Wilcoxon) are kept as building blocks
and references. Small-sample fallbacks are Monte-Carlo tests with ``n_sim`` draws and a fixed seed; their p-value
(1 + #{T* ≥ T})/(1 + n_sim) is valid for any n_sim: P[p ≤ α] ≤ α under the null.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
from scipy import sparse, special, stats

from audit.stats.power import mde_mcnemar, mde_shift, mde_w
from audit.stats.simultaneous import N_SIM, ScoreMaxT, WaldMaxT

EXACT_DISCORDANT = 25  # McNemar / Bowker pairs below this use exact (binomial) null distributions
MIN_EXPECTED = 5.0  # Cochran's rule for χ² approximations
_TOL = 1e-9  # relative tolerance for "statistic at least as extreme" in Monte-Carlo p-values
VERDICTS = ("finding", "nothing detected", "not testable")
IntervalAt = Callable[[float], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TestResult:
    """One hypothesis test.

    Attributes:
        name: what was tested, e.g. "race: output shares vs reference".
        statistic: the test statistic (χ², max |T|, W …; NaN when not testable).
        df: degrees of freedom of the reference distribution (NaN when not applicable, ∞ for the normal).
        p_value: two-sided p-value in [0, 1] (NaN when the test could not be run).
        method: how p was obtained ("asymptotic χ²", "exact binomial", "Monte-Carlo …").
        n: number of independent units (inputs, or pairs) the test used.
        mde: minimum detectable effect at this n (at the test's own α, before any family adjustment), in ``unit``.
        notes: warnings (small expected counts, dropped categories, …), "; "-separated.
        effect: the observed effect in ``unit`` (for the max-|T| tests: the driving component's estimate − null).
        unit: unit of ``mde``, ``effect`` and the interval: "w", "pp" (percentage points), or the data's unit.
        kind: a stable key of what is tested (e.g. "margins", "preservation_gap", "shift"); never parsed from the
            name.
        reason: why the test could not be run; non-empty exactly when the test is not testable (then p is NaN and
            the test is left out of the multiple-testing family).
        effect_label: what ``effect`` is, with its sign convention (e.g. "output share − input share").
        component: the category, group or pair ``effect`` refers to (the one with the largest |T|).
        ci_low, ci_high: interval of ``effect`` at ``confidence`` from the same estimator and design as the test,
            simultaneous over the test's components, not adjusted for the report's family.
        confidence: the level of that interval.
        components: per component (label, effect, ci_low, ci_high, t): every category/group/pair of the test.
        n_samples: rows (outputs) the test used (≥ n when inputs have several samples).
        interval_at: level → (lows, highs) of every component's effect (for adjusted intervals); not serialised.
        effect_bound: the largest |effect| the quantity can take, in ``unit`` (100 for a difference of shares in
            pp, 180 for a change of ITA°; ∞ when unbounded). An ``mde`` above it means that no possible effect is
            detected with the stated power: report that, never the number.
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
    kind: str = "other"
    reason: str = ""
    effect_label: str = ""
    component: str = ""
    ci_low: float = math.nan
    ci_high: float = math.nan
    confidence: float = math.nan
    components: tuple[dict, ...] = ()
    n_samples: int = -1
    interval_at: IntervalAt | None = field(default=None, compare=False, repr=False)
    effect_bound: float = math.inf

    def __post_init__(self) -> None:  # plain Python numbers (JSON-friendly), whatever numpy type came in
        for name in ("statistic", "df", "p_value", "mde", "effect", "ci_low", "ci_high", "confidence",
                     "effect_bound"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "n_samples", int(self.n if self.n_samples < 0 else self.n_samples))
        if not self.reason and not math.isfinite(self.p_value):  # a legacy "not run" result
            object.__setattr__(self, "reason", "; ".join(filter(None, [self.method, self.notes])) or "not run")

    @property
    def testable(self) -> bool:
        return not self.reason

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "interval_at"}
        out["components"] = [dict(c) for c in self.components]
        return out


def not_testable(name: str, kind: str, reason: str, n: int = 0, n_samples: int = -1, unit: str = "",
                 effect_label: str = "") -> TestResult:
    """A test that could not be run, with its reason (no data, one group, no variation …)."""
    return TestResult(name, math.nan, math.nan, math.nan, "not run", n, math.nan, "", math.nan, unit, kind, reason,
                      effect_label, n_samples=n_samples)


def _components(labels: Sequence[str], effect: np.ndarray, low: np.ndarray, high: np.ndarray,
                t: np.ndarray) -> tuple[dict, ...]:
    return tuple({"label": str(lab), "effect": float(e), "ci_low": float(lo), "ci_high": float(hi), "t": float(z)}
                 for lab, e, lo, hi, z in zip(labels, effect, low, high, t))


def wald_max_test(estimate: np.ndarray, cov: np.ndarray, labels: Sequence[str], *, name: str, kind: str,
                  effect_label: str, n: int, n_samples: int = -1, null: np.ndarray | float = 0.0,
                  df: float = math.inf, scale: float = 100.0, unit: str = "pp", notes: str = "",
                  bounds: tuple[float, float] = (-math.inf, math.inf), confidence: float = 0.95, alpha: float = 0.05,
                  power: float = 0.8, n_sim: int = N_SIM, seed: int = 0) -> TestResult:
    """Max-|T| Wald test that every component of ``estimate`` equals ``null`` (see :class:`WaldMaxT`), with
    simultaneous intervals of estimate − null (× ``scale``, in ``unit``) from the same covariance.

    Components with se = 0 are left out (noted); none left, or df < 1, is not testable. Intervals are clipped to
    ``bounds`` (the effect's possible range, in ``unit``, e.g. ±100 pp for a difference of shares), which never
    changes whether they exclude the null, and give the result's ``effect_bound``. MDE: the shift of any one
    component that the test detects with probability ``power`` at level ``alpha``, (c_α + z_power)·max se.
    """
    labels = [str(x) for x in labels]
    if n <= 0:
        return not_testable(name, kind, "no data", n, n_samples, unit, effect_label)
    if df < 1:
        return not_testable(name, kind, "variance not estimable (fewer than two inputs per stratum)", n, n_samples,
                            unit, effect_label)
    m = WaldMaxT(estimate, cov, null, df, n_sim, seed)
    if not m.k:
        return not_testable(name, kind, "no component varies (no outputs to compare)", n, n_samples, unit,
                            effect_label)
    dropped = [lab for lab, a in zip(labels, m.active) if not a]
    note = "; ".join(filter(None, [notes, f"left out (nothing observed): {', '.join(dropped)}" if dropped else ""]))

    def interval_at(level: float) -> tuple[np.ndarray, np.ndarray]:
        low, high = m.intervals(level)
        return np.clip(scale * (low - m.null), *bounds), np.clip(scale * (high - m.null), *bounds)

    low, high = interval_at(confidence)
    i = m.driver
    mde = scale * (m.critical(1 - alpha) + stats.norm.ppf(power)) * float(m.se[m.active].max())
    method = ("Wald " + ("z" if math.isinf(df) else f"t (df {df:g})") if m.k == 1 else
              f"max-|T| Wald, cluster-robust covariance, {'normal' if math.isinf(df) else f'multivariate t df {df:g}'}"
              f" reference ({n_sim} draws)")
    return TestResult(name, m.statistic, df, m.p_value, method, n, mde, note, scale * (m.estimate[i] - m.null[i]),
                      unit, kind, "", effect_label, labels[i], low[i], high[i], confidence,
                      _components(labels, scale * (m.estimate - m.null), low, high, m.t), n_samples, interval_at,
                      effect_bound=max(-bounds[0], bounds[1]))


def score_max_test(counts: np.ndarray, reference: np.ndarray, labels: Sequence[str], *, name: str, kind: str,
                   effect_label: str = "share − reference share", n_units: int | None = None, notes: str = "",
                   confidence: float = 0.95, alpha: float = 0.05, power: float = 0.8, n_sim: int = N_SIM,
                   seed: int = 0) -> TestResult:
    """Max-|T| score test that multinomial ``counts`` follow fixed ``reference`` shares (see :class:`ScoreMaxT`);
    effect and intervals in percentage points of share − reference. Categories with reference 0 cannot be tested
    against it (any count there is "impossible"): they are left out with a note and the shares are taken among the
    other categories. Fewer than two categories or no counts left is not testable."""
    x, ref = np.asarray(counts, float), np.asarray(reference, float)
    labels = [str(v) for v in labels]
    inside = ref > 0
    outside = [f"{lab} ({int(c)})" for lab, c, ok in zip(labels, x, inside) if not ok and c > 0]
    note = "; ".join(filter(None, [notes, f"outputs in categories outside the reference left out: "
                                          f"{', '.join(outside)}" if outside else ""]))
    x, ref, kept = x[inside], ref[inside], [lab for lab, ok in zip(labels, inside) if ok]
    n = int(x.sum())
    units = n if n_units is None else n_units
    if n == 0 or len(x) < 2:
        return not_testable(name, kind, "no outputs in the reference's categories" if n == 0 else
                            "the reference has a single category", units, n, "pp", effect_label)
    m = ScoreMaxT(x, ref, n_sim, seed)

    def interval_at(level: float) -> tuple[np.ndarray, np.ndarray]:
        low, high = m.intervals(level)
        return 100 * (low - m.null), 100 * (high - m.null)

    low, high = interval_at(confidence)
    i = m.driver
    se0 = np.sqrt(m.null * (1 - m.null) / n)
    mde = 100 * (m.critical(1 - alpha) + stats.norm.ppf(power)) * float(se0.max())
    return TestResult(name, m.statistic, math.nan, m.p_value, f"max-|T| score, exact multinomial Monte-Carlo "
                      f"({n_sim} draws)", units, mde, note, 100 * (m.estimate[i] - m.null[i]), "pp", kind, "",
                      effect_label, kept[i], low[i], high[i], confidence,
                      _components(kept, 100 * (m.estimate - m.null), low, high, m.t), n, interval_at,
                      effect_bound=100.0)


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
