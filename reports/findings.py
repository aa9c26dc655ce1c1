"""Plain-language findings generated from a report dict (see :mod:`reports.analysis`).

A sentence states a finding only when its test rejects after the report's multiple-testing adjustment; every
other test gets a "nothing detected" line with its minimum detectable effect, so that silence is never read as
"no bias". Each sentence names the test id it rests on (``T3``), which is a row of the report's test table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reports.formatting import ci, mde, pct, pval, signed

ADJUSTMENT = {"Holm": "after Holm", "Benjamini–Hochberg": "after Benjamini–Hochberg"}


def _p(test: dict[str, Any]) -> str:
    return f"{pval(test['p_adjusted'])} {ADJUSTMENT.get(test['adjustment'], 'adjusted')}"


def _rate(rates: list[dict[str, Any]], source: str, target: str) -> dict[str, Any]:
    return next(r for r in rates if r["input"] == source and r["output"] == target)


def _flow(r: dict[str, Any]) -> str:
    return (f"inputs labelled {r['input']} came out labelled {r['output']} in {pct(r['rate'])} of cases "
            f"(95% CI {ci(r['ci_low'], r['ci_high'], True)}; {r['count']} of {r['row_total']} outputs)")


def _mcnemar(a: dict[str, Any], test: dict[str, Any]) -> str:
    cats, table, p = a["transition"]["categories"], np.asarray(a["paired_table"]), a["positive"]
    i = cats.index(p)
    into = int(table[:, i].sum() - table[i, i])
    away = int(table[i].sum() - table[i, i])
    others = [c for c in cats if c != p]
    if into >= away:
        best = max((_rate(a["transition_rates"], c, p) for c in others), key=lambda r: r["rate"] or 0)
    else:
        best = max((_rate(a["transition_rates"], p, c) for c in others), key=lambda r: r["rate"] or 0)
    return (f"{_flow(best)}. Over the test inputs, {into} of {int(table.sum() - table[i].sum())} not labelled {p} "
            f"became {p} and {away} of {int(table[i].sum())} labelled {p} became something else "
            f"(McNemar, {_p(test)}).")


def _largest_share_change(shares: list[dict[str, Any]], reference: str) -> dict[str, Any]:
    return max(shares, key=lambda r: abs((r["share"] or 0) - (r[reference] or 0)))


def _stuart_maxwell(a: dict[str, Any], test: dict[str, Any]) -> str:
    r = _largest_share_change(a["shares"], "input_share")
    return (f"the {a['attribute']} labels of the outputs are distributed differently from the inputs' "
            f"(Stuart–Maxwell, {_p(test)}): {r['category']} made up {pct(r['input_share'])} of the inputs and "
            f"{pct(r['share'])} of the outputs (95% CI {ci(r['ci_low'], r['ci_high'], True)}).")


def _bowker(a: dict[str, Any], test: dict[str, Any]) -> str:
    cats, counts = a["transition"]["categories"], np.asarray(a["transition"]["counts"])
    gap = np.abs(counts - counts.T)
    i, j = np.unravel_index(int(np.argmax(gap)), gap.shape)
    if counts[i, j] < counts[j, i]:
        i, j = j, i
    forward, back = _rate(a["transition_rates"], cats[i], cats[j]), _rate(a["transition_rates"], cats[j], cats[i])
    return (f"flips are not symmetric (Bowker, {_p(test)}): {_flow(forward)}, while the reverse flip "
            f"{cats[j]} → {cats[i]} happened in {pct(back['rate'])} "
            f"(95% CI {ci(back['ci_low'], back['ci_high'], True)}).")


def _gof(a: dict[str, Any], test: dict[str, Any], ucpr: bool) -> str:
    shares = a["ucpr_shares"] if ucpr else a["shares"]
    r = _largest_share_change(shares, "reference")
    what = "outputs of uninformative (average-face) inputs" if ucpr else "outputs"
    return (f"the {a['attribute']} shares of the {what} differ from the reference (χ² goodness of fit, {_p(test)}): "
            f"{r['category']} is {pct(r['share'])} of them (95% CI {ci(r['ci_low'], r['ci_high'], True)}) against a "
            f"reference share of {pct(r['reference'])}.")


def _rdp(rows: list[dict[str, Any]], test: dict[str, Any], where: str) -> str:
    rows = [r for r in rows if r["metric"] == "preservation" and r["value"] is not None]
    if not rows:
        return f"the label is preserved at different rates across {where} (χ² test, {_p(test)})."
    low, high = min(rows, key=lambda r: r["value"]), max(rows, key=lambda r: r["value"])
    return (f"the label is preserved at different rates across {where} (χ² test, {_p(test)}): lowest for "
            f"{low['group']}, {pct(low['value'])} (95% CI {ci(low['ci_low'], low['ci_high'], True)}), highest for "
            f"{high['group']}, {pct(high['value'])} (95% CI {ci(high['ci_low'], high['ci_high'], True)}).")


def _shift(s: dict[str, Any], test: dict[str, Any]) -> str:
    group = test["group"] or "all"
    mean = next((r for r in (s["table"] if test["group"] else s["overall"])
                 if r["metric"] == "mean" and (not test["group"] or r["group"] == group)), None)
    where = f"inputs in group {group}" if test["group"] else "all inputs"
    interval = (f" (mean {signed(mean['value'])}{s['unit']}, "
                f"95% CI {ci(mean['ci_low'], mean['ci_high'], unit=s['unit'])})") if mean else ""
    return (f"{s['name']} for {where}: median per-input change {signed(test['effect'])}{s['unit']}{interval}, "
            f"Wilcoxon signed-rank {_p(test)}; {s['meaning']}.")


def _found(report: dict[str, Any], test: dict[str, Any]) -> str:
    kind = test["kind"]
    if kind == "shift":
        return _shift(next(s for s in report["shifts"] if s["key"] == test["source"]), test)
    a = next(x for x in report["attributes"] if x["key"] == test["source"])
    head = f"{a['attribute']} ({a['classifier']}): "
    if kind == "mcnemar":
        return head + _mcnemar(a, test)
    if kind == "stuart_maxwell":
        return head + _stuart_maxwell(a, test)
    if kind == "bowker":
        return head + _bowker(a, test)
    if kind in ("pr_gof", "ucpr_gof"):
        return head + _gof(a, test, kind == "ucpr_gof")
    if kind == "rdp_intersectional":
        return head + _rdp(a["intersectional"]["by_group"], test, "intersectional groups")
    return head + _rdp(a["by_group"], test, "groups")


def _not_found(test: dict[str, Any], power: float) -> str:
    subject = test["name"]
    if test["p_value"] is None:
        return f"{subject}: not run ({test['method']}{'; ' + test['notes'] if test['notes'] else ''})."
    what = "a shift" if test["kind"] == "shift" else "an effect"
    return (f"{subject}: nothing detected ({_p(test)}, n = {test['n']}). {what.capitalize()} of "
            f"{mde(test['mde'], test['unit'])} "
            f"or more would have been detected with {pct(power, 0)} power; smaller ones could go unseen.")


def findings(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``found``: one sentence per test that rejects after adjustment; ``not_found``: the others, with MDEs."""
    found, not_found = [], []
    for test in report["tests"]:
        if test["reject"]:
            found.append({"test": test["id"], "kind": test["kind"], "source": test["source"],
                          "text": _found(report, test)})
        else:
            not_found.append({"test": test["id"], "kind": test["kind"], "source": test["source"],
                              "text": _not_found(test, report["settings"]["power"])})
    return {"found": found, "not_found": not_found}
