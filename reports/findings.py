"""Plain-language findings generated from a report dict (see :mod:`reports.analysis`).

Three verdicts, one list each: a *finding* is stated only when its test rejects after the report's multiple-testing
adjustment, and names the category, group or pair that drives the test with its effect and intervals; *nothing
detected* gives the minimum detectable effect, so that silence is never read as "no bias"; *not testable* says why
(no data, no variation …) and is neither counted in the family nor worded as "nothing detected". Each sentence
names the test id it rests on (``T3``), a row of the report's test table.
"""

from __future__ import annotations

from typing import Any

from reports.formatting import amount, beyond_range, ci, mde, pct, pval, signed

ADJUSTMENT = {"Holm": "after Holm", "Benjamini–Hochberg": "after Benjamini–Hochberg"}


def _p(test: dict[str, Any]) -> str:
    return f"{pval(test['p_adjusted'])} {ADJUSTMENT.get(test['adjustment'], 'adjusted')}"


def _effect(test: dict[str, Any]) -> str:
    """"+15.8 pp (output share − input share; 95% CI 12.5 to 19.2 pp over the 4 categories of this test; 12.0 to
    19.7 pp at the Holm-adjusted level)"."""
    unit = f" {test['unit']}" if test["unit"] == "pp" else test["unit"]
    over = (f" simultaneous over the {len(test['components'])} {_what(test)} of this test"
            if len(test["components"]) > 1 else "")
    level = round(100 * (test["confidence"] or 0.95))
    adjusted = ci(test["adjusted_ci_low"], test["adjusted_ci_high"], unit=unit)
    return (f"{signed(test['effect'])}{unit} ({test['effect_label']}; {level}% CI "
            f"{ci(test['ci_low'], test['ci_high'], unit=unit)}{over}; {adjusted} at the "
            f"{test['adjustment']}-adjusted level)")


NOUNS = {"flip_symmetry": ("pair", "pairs"), "preservation_gap": ("group", "groups"),
         "preservation_gap_intersectional": ("group", "groups"), "shift": ("group", "groups")}


def _what(test: dict[str, Any], plural: bool = True) -> str:
    """What the components of a test are: categories, groups or pairs."""
    return NOUNS.get(test["kind"], ("category", "categories"))[plural]


def _row(rows: list[dict[str, Any]] | None, key: str, value: str) -> dict[str, Any] | None:
    return next((r for r in rows or [] if str(r.get(key)) == value), None)


def _margins(a: dict[str, Any], test: dict[str, Any]) -> str:
    c = test["component"]
    share = _row(a["shares"], "category", c) or {}
    more = "more" if (test["effect"] or 0) > 0 else "less"
    how = ("test of this class alone" if test["kind"] == "positive_share" else
           f"the category that drives the test over all {len(test['components'])} categories")
    return (f"outputs are labelled {c} {more} often than the inputs ({how}, {test['n_samples']} outputs of "
            f"{test['n']} inputs, {_p(test)}): {c} is {pct(share.get('share'))} of the outputs against "
            f"{pct(share.get('input_share'))} of the inputs, a difference of {_effect(test)}.")


def _flips(a: dict[str, Any], test: dict[str, Any]) -> str:
    i, _, rest = test["component"].partition(" → ")
    j = rest.removesuffix(" vs back")
    if (test["effect"] or 0) < 0:
        i, j = j, i
    forward = _row([r for r in a["transition_rates"] if r["input"] == i], "output", j) or {}
    back = _row([r for r in a["transition_rates"] if r["input"] == j], "output", i) or {}
    return (f"flips are not symmetric ({_p(test)}): inputs labelled {i} came out {j} in {pct(forward.get('rate'))} "
            f"of their outputs (95% CI {ci(forward.get('ci_low'), forward.get('ci_high'), True)}), inputs labelled "
            f"{j} came out {i} in {pct(back.get('rate'))} (95% CI {ci(back.get('ci_low'), back.get('ci_high'), True)}"
            f"); as shares of all outputs the difference is {_effect(test)}.")


def _preservation(rows: list[dict[str, Any]], test: dict[str, Any], where: str) -> str:
    g = test["component"]
    row = _row([r for r in rows if r["metric"] == "preservation"], "group", g) or {}
    word = "less" if (test["effect"] or 0) < 0 else "more"
    return (f"the label is preserved at different rates across {where} ({_p(test)}): {g} keeps it {word} often, "
            f"{pct(row.get('value'))} (95% CI {ci(row.get('ci_low'), row.get('ci_high'), True)}), "
            f"{_effect(test)}.")


def _ucpr(a: dict[str, Any], test: dict[str, Any]) -> str:
    c = test["component"]
    share = _row(a["ucpr_shares"], "category", c) or {}
    return (f"outputs of uninformative (average-face) inputs are not distributed like the groups the average faces "
            f"were made from ({_p(test)}): {c} is {pct(share.get('share'))} of them against a reference share of "
            f"{pct(share.get('reference'))}, {_effect(test)}.")


def _shift(s: dict[str, Any], test: dict[str, Any]) -> str:
    where = f"inputs in group {test['group']}" if test["group"] else "all inputs"
    return f"{s['name']} for {where} ({_p(test)}): mean {_effect(test)}; {s['meaning']}."


def _found(report: dict[str, Any], test: dict[str, Any]) -> str:
    kind = test["kind"]
    if kind == "shift":
        return _shift(next(s for s in report["shifts"] if s["key"] == test["source"]), test)
    a = next(x for x in report["attributes"] if x["key"] == test["source"])
    head = f"{a['attribute']} ({a['classifier']}): "
    if kind in ("margins", "positive_share"):
        return head + _margins(a, test)
    if kind == "flip_symmetry":
        return head + _flips(a, test)
    if kind == "ucpr":
        return head + _ucpr(a, test)
    if kind == "preservation_gap_intersectional":
        return head + _preservation(a["intersectional"]["by_group"], test, "intersectional groups")
    if kind == "preservation_gap":
        return head + _preservation(a["by_group"], test, "groups")
    return head + f"{test['name']} ({_p(test)}): {_effect(test)}."


def _nothing(test: dict[str, Any], power: float) -> str:
    what = "shift" if test["kind"] == "shift" else "effect"
    head = f"{test['name']}: nothing detected ({_p(test)}; {test['n']} inputs, {test['n_samples']} outputs). "
    bound = test.get("effect_bound")
    if beyond_range(test["mde"], bound):  # an MDE beyond what is possible is not a size: say what it means
        return (head + f"No {what} within the possible range (up to {amount(bound, test['unit'])} in any one "
                f"{_what(test, False)}) would have been detected with {pct(power, 0)} power at α before "
                f"adjustment: with this sample even the largest possible {what} could go unseen.")
    return (head + f"A{'n' if what == 'effect' else ''} {what} of {mde(test['mde'], test['unit'])} or more in any "
            f"one {_what(test, False)} would have been detected with {pct(power, 0)} power at α before adjustment; "
            f"smaller ones could go unseen.")


def _untestable(test: dict[str, Any]) -> str:
    return f"{test['name']}: not testable ({test['reason']}); not counted among the report's tests."


def findings(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``found`` (verdict "finding"), ``not_found`` ("nothing detected", with MDEs) and ``not_testable`` (with the
    reason), one sentence per test."""
    out: dict[str, list[dict[str, Any]]] = {"found": [], "not_found": [], "not_testable": []}
    for test in report["tests"]:
        entry = {"test": test["id"], "kind": test["kind"], "source": test["source"], "verdict": test["verdict"]}
        if test["verdict"] == "finding":
            out["found"].append({**entry, "text": _found(report, test)})
        elif test["verdict"] == "nothing detected":
            out["not_found"].append({**entry, "text": _nothing(test, report["settings"]["power"])})
        else:
            out["not_testable"].append({**entry, "text": _untestable(test)})
    return out
