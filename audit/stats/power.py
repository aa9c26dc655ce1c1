"""Minimum detectable effects (MDE) at a run's sample size: the smallest true effect a test of level α detects
with the given power (defaults α = 0.05, power 0.8). Reported beside every test so that "not significant" is never
read as "no bias" when the run was too small to see one.
"""

from __future__ import annotations

import math
from functools import lru_cache

from scipy import optimize, stats


@lru_cache(maxsize=1024)
def noncentrality(df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """λ such that a χ²(df) test at level α rejects with probability ``power`` under the noncentral χ²(df, λ):
    P[χ²(df, λ) > χ²_{1−α}(df)] = power (``scipy.stats.ncx2``). E.g. df 1 → 7.85, df 6 → 13.62."""
    if df <= 0:
        return math.nan
    critical = stats.chi2.isf(alpha, df)
    upper = 10.0
    while stats.ncx2.sf(critical, df, upper) < power:
        upper *= 2
    return float(optimize.brentq(lambda lam: stats.ncx2.sf(critical, df, lam) - power, 1e-9, upper, xtol=1e-10))


def mde_w(df: float, n: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable Cohen's w = √(λ/n) for a χ² test with ``df`` degrees of freedom on n observations.

    w² = Σ_r (p_r − p0_r)²/p0_r is the Pearson χ² divergence between the true and null distributions (for a
    contingency table, between the joint and the product of its margins), so the test statistic ≈ n·w² and the
    noncentrality is λ = n·w². Unitless, ≥ 0; NaN when df = 0 or n = 0.
    """
    if n <= 0 or df <= 0:
        return math.nan
    return math.sqrt(noncentrality(df, alpha, power) / n)


def mde_mcnemar(n: int, discordant_share: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable difference of paired proportions δ = p10 − p01 (as a proportion; ×100 for pp) for McNemar.

    Connor (1987), Biometrics 43:207–211: n = [z_{1−α/2}·√ψ + z_{power}·√(ψ − δ²)]² / δ², with ψ = p10 + p01 the
    discordant share, solved for δ ∈ (0, √ψ). ψ is the observed share floored at 1/n (so that a run with no
    discordant pair still reports a finite MDE). If the root exceeds ψ, no feasible effect reaches the power
    (|δ| ≤ ψ); the root is returned anyway as a lower bound. NaN when n < 4.
    """
    if n < 4:
        return math.nan
    psi = min(1.0, max(discordant_share, 1.0 / n))
    za, zb = stats.norm.isf(alpha / 2), stats.norm.ppf(power)

    def gap(delta: float) -> float:
        return (za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta * delta, 0.0))) / delta - math.sqrt(n)

    return float(optimize.brentq(gap, 1e-12, math.sqrt(psi)))


def mde_shift(sd: float, n: int, alpha: float = 0.05, power: float = 0.8, efficiency: float = 3 / math.pi) -> float:
    """Minimum detectable mean shift of paired differences, in the data's own unit (e.g. degrees ITA, years):
    δ = (z_{1−α/2} + z_{power})·sd/√(n·e), the normal approximation of the two-sided one-sample test, inflated by
    the asymptotic relative efficiency e of the Wilcoxon signed-rank test vs the t test (3/π ≈ 0.955 under
    normality; ≥ 0.864 for any symmetric distribution). NaN when n < 2."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return float((stats.norm.isf(alpha / 2) + stats.norm.ppf(power)) * sd / math.sqrt(n * efficiency))
