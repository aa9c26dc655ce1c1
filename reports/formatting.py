"""Number formatting shared by findings sentences and templates (registered as Jinja filters)."""

from __future__ import annotations

from typing import Any

MISSING = "–"
INFINITE = {"inf": "∞", "-inf": "−∞"}  # how report.json writes ±∞ (see reports.tables.clean)


def _ok(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _infinite(x: Any) -> str | None:
    if isinstance(x, str) and x in INFINITE:
        return INFINITE[x]
    if isinstance(x, float) and abs(x) == float("inf"):
        return "∞" if x > 0 else "−∞"
    return None


def pct(x: Any, digits: int = 1) -> str:
    """A proportion as a percentage, e.g. 0.4123 → "41.2%"."""
    return f"{100 * x:.{digits}f}%" if _ok(x) else MISSING


def num(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (integers as they are; ±∞ as ∞ / −∞)."""
    if _infinite(x):
        return _infinite(x)
    if isinstance(x, bool) or not _ok(x):
        return MISSING if not isinstance(x, bool) else str(x).lower()
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}"


def signed(x: Any, digits: int = 3) -> str:
    """A number with its sign, e.g. +2.31 / −0.5."""
    if not _ok(x):
        return MISSING
    text = num(abs(x), digits)
    return ("+" if x > 0 else "−" if x < 0 else "") + text


def pval(p: Any) -> str:
    """A p-value: "p < 0.001" or "p = 0.012"."""
    if not _ok(p):
        return "p not computed"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.995 else "p = 1"


def ci(low: Any, high: Any, as_pct: bool = False, unit: str = "") -> str:
    """An interval "35.0–47.1%" (``as_pct``) or "1.2 to 3.4°"; a zero-width interval is not an interval and is
    printed as "not estimable"."""
    if not (_ok(low) and _ok(high)):
        return MISSING
    if low == high:
        return "not estimable"
    if as_pct:
        return f"{100 * low:.1f}–{100 * high:.1f}%"
    return f"{num(low)} to {num(high)}{unit}"


def beyond_range(value: Any, bound: Any) -> bool:
    """Whether a minimum detectable effect exceeds ``bound``, the largest effect possible (∞, "inf" or missing:
    unbounded): then no possible effect reaches the stated power and the number itself means nothing."""
    return _ok(value) and _ok(bound) and value > bound


def amount(value: Any, unit: str) -> str:
    """A size with its unit spelled out: "100 percentage points", "180°"."""
    return f"{num(value)} percentage points" if unit == "pp" else f"{num(value)}{unit}"


def mde(value: Any, unit: str, bound: Any = None) -> str:
    """A minimum detectable effect with its unit spelled out; beyond the possible range (see :func:`beyond_range`)
    it says so instead of printing an impossible size."""
    if not _ok(value):
        return "not computable"
    if beyond_range(value, bound):
        return f"none within the possible range (±{amount(bound, unit)})"
    if unit == "w":
        return f"Cohen's w = {value:.2f}"
    if unit == "pp":
        return f"{value:.1f} percentage points"
    return f"{num(value)}{unit}"


def detectable(value: Any, bound: Any = None) -> str:
    """A table cell for a minimum detectable effect (the unit follows in its own cell or text): the number, or
    "none within ±bound" beyond the possible range."""
    return f"none within ±{num(bound)}" if beyond_range(value, bound) else num(value)


FILTERS = {"pct": pct, "num": num, "signed": signed, "pval": pval, "ci": ci, "mde": mde,
           "detectable": detectable}
