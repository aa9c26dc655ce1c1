"""An independent float64 reference for Clopper–Pearson bounds at a non-whole effective size (Korn & Graubard's
interval, :func:`audit.stats.intervals.effective_size_interval`): root finding on the regularised incomplete beta
function, not through a quantile function."""

from __future__ import annotations

from scipy import optimize, special


def beta_interval(p_hat: float, size: float, tail: float = 0.025) -> tuple[float, float]:
    """Clopper–Pearson bounds at x = p̂·size of ``size``: I_low(x, size − x + 1) = tail and I_high(x + 1, size − x) =
    1 − tail, with 0 at x = 0 and 1 at x = size."""
    x = p_hat * size
    low = 0.0 if x == 0 else optimize.brentq(lambda q: special.betainc(x, size - x + 1, q) - tail, 0, 1, xtol=1e-16)
    high = 1.0 if x == size else optimize.brentq(lambda q: special.betainc(x + 1, size - x, q) - (1 - tail), 0, 1,
                                                 xtol=1e-16)
    return low, high
