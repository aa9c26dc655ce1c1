"""Input → output audit of one categorical attribute (race, gender, age bin, Monk tone …) over a run table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from audit.metrics.columns import ITEM, SAMPLE, classifier_column, require, truth_column
from audit.metrics.distribution import DistributionFit, first_sample, is_missing, one_hot
from audit.metrics.frame import MIN_N, Metric, MetricFrame
from audit.stats.clustered import (
    ClusteredMean,
    clustered_mean,
    deff_floored_variance,
    indicator_floor,
    null_floored_variance,
)
from audit.stats.divergences import DIVERGENCES
from audit.stats.intervals import (
    Bootstrap,
    cluster_rows,
    effective_size_interval,
    least_effective_size,
    percentile_interval,
)
from audit.stats.multitest import report_tests
from audit.stats.tests import TestResult, not_testable, wald_max_test

NO_FACE = "(no face)"


class AttributeAudit:
    """Transition matrix, preservation (RDP), output shares (PR), UCPR, divergences and tests for one attribute.

    Args:
        data: the run table, one row per input × sample.
        truth: column of the input label (dataset label or classifier on the original).
        output: column of the classifier's label on the output ("" / NaN: no face found).
        groups: group column(s) for by-group metrics, several for intersections (default: ``truth``).
        cluster: input id column; samples of one input belong together (clustered designs use every sample).
        sample: sample index column (``paired_table`` uses each input's lowest sample).
        categories: label vocabulary in display order (default: sorted labels seen).
        positive: a class whose output share is tested against its input share on its own ("White"); None skips it.
        uninformative: run table of uninformative inputs (e.g. 4×4 average faces) for UCPR, same columns.
        prior: the stated reference of the UCPR test (e.g. the groups the average faces were made from). Without it
            the UCPR shares are a descriptive table and nothing is tested: no population is uniform over age bins.
        missing_output: "drop" (default: rows without an output label leave label metrics; their rate is the
            ``no_face`` metric) or "category" (they become the class "(no face)": a flip in
            the transition matrix, preservation and paired tests; output shares (PR, UCPR) stay among found faces).
    Rows without an input label are excluded (``n_unlabelled``).
    """

    def __init__(self, data: pd.DataFrame, truth: str, output: str, *, groups: str | Sequence[str] | None = None,
                 cluster: str | None = ITEM, sample: str | None = SAMPLE, categories: Sequence[str] | None = None,
                 positive: str | None = None,
                 uninformative: pd.DataFrame | None = None, prior: Mapping[str, float] | None = None,
                 missing_output: str = "drop", n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
                 alpha: float = 0.05, power: float = 0.8, min_n: int = MIN_N, name: str | None = None) -> None:
        groups = [groups] if isinstance(groups, str) else list(groups or [truth])
        require(data, truth, output, cluster, sample, *groups)
        if missing_output not in ("drop", "category"):
            raise ValueError("missing_output must be 'drop' or 'category'")
        self.truth, self.output, self.cluster, self.sample, self.positive = truth, output, cluster, sample, positive
        self.name = name or f"{output} vs {truth}"
        self.alpha, self.power, self.seed, self.confidence = alpha, power, seed, confidence
        labelled = ~is_missing(data[truth])
        self.n_unlabelled = int((~labelled).sum())
        d = data.loc[labelled].copy()
        missing = is_missing(d[output])
        if missing_output == "category":
            d[output] = d[output].where(~missing, NO_FACE)
        out = d[output].where(~is_missing(d[output]), "")
        seen = sorted(set(d[truth].astype(str)) | set(out[out != ""].astype(str)) - {NO_FACE})
        self.categories = list(categories) if categories is not None else seen
        if missing_output == "category" and NO_FACE not in self.categories:
            self.categories.append(NO_FACE)
        d["_no_face"] = missing.astype(float)
        d["_preserved"] = np.where(out == "", np.nan, (d[truth].astype(str) == out.astype(str)).astype(float))
        self.frame = MetricFrame(d, {"preservation": Metric("_preserved", "rate"),
                                     "no_face": Metric("_no_face", "rate")}, groups, cluster, n_boot,
                                 seed, confidence, min_n)
        self.data, self.groups = self.frame.data, groups
        self._truth_hot = one_hot(self.data[truth], self.categories)
        self._out_hot = one_hot(self.data[output].where(~is_missing(self.data[output]), ""), self.categories)
        self._test_rows = first_sample(self.data, cluster, sample)
        shared = [c for c in self.categories if c != NO_FACE]  # shares are among outputs where a face was found
        self._shared = np.array([c != NO_FACE for c in self.categories], bool)
        self._clusters = self.data[cluster].to_numpy() if cluster else None
        self._strata = self.data[truth].astype(str).to_numpy()
        input_counts = self._truth_hot[self._test_rows][:, self._shared].sum(axis=0)
        self.input_shares = input_counts / max(input_counts.sum(), 1)
        self.pr = DistributionFit(self.data[output], shared, self.input_shares, self.frame.bootstrap,
                                  self._clusters, self._strata, name=f"{self.name}: output shares (PR)",
                                  confidence=confidence)
        self.ucpr, self._tests = None, None
        if uninformative is not None:
            require(uninformative, output, cluster)
            items = uninformative[cluster].to_numpy() if cluster else None
            design = Bootstrap(len(uninformative), items, None, n_boot, seed)
            self.ucpr = DistributionFit(uninformative[output], shared, prior, design, None, items,
                                        test=prior is not None, name=f"{self.name}: uninformative inputs (UCPR)",
                                        kind="ucpr", confidence=confidence, alpha=alpha, power=power, seed=seed)

    @classmethod
    def from_run(cls, data: pd.DataFrame, attribute: str, classifier: str, truth: str = "label",
                 **kwargs: object) -> AttributeAudit:
        """Audit ``attribute`` as read by ``classifier`` on the outputs, against the dataset label (``truth="label"``)
        or the same classifier on the originals (``truth="in"``); keyword arguments go to the constructor."""
        return cls(data, truth_column(attribute, classifier, truth), classifier_column("out", classifier, attribute),
                   name=kwargs.pop("name", f"{attribute}/{classifier}"), **kwargs)

    # --- label distributions -------------------------------------------------------------------------------------
    def transition(self) -> pd.DataFrame:
        """Counts input label (rows) → output label (columns) over every sample with an output label."""
        counts = self._truth_hot.T @ self._out_hot
        return pd.DataFrame(counts.astype(int), index=pd.Index(self.categories, name="input"),
                            columns=pd.Index(self.categories, name="output"))

    def transition_rates(self) -> pd.DataFrame:
        """Tidy transition table: input, output, count, rate = count / row total (P[output | input]) with a
        Clopper–Pearson interval at the effective sample size (clustered by input: every sample counts, correlated
        samples count less; Korn–Graubard degrees of freedom, floored at the size of the largest variance the clustering
        allows: :func:`audit.stats.intervals.effective_size_interval`; never zero width), row_total, small (the input
        class has < min_n inputs). A cell's design effect is at least its row's pooled one (≥ 1, see
        :func:`deff_floored_variance`): a rare transition's own, from a few events, is too noisy and mostly too
        small."""
        k = len(self.categories)
        counts = self.transition().to_numpy()
        totals = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = counts / totals
        low, high = np.full((k, k), np.nan), np.full((k, k), np.nan)
        found = self._out_hot.sum(axis=1) > 0
        for i in range(k):
            rows = found & (self._truth_hot[:, i] > 0)
            if rows.any():
                clusters = None if self._clusters is None else self._clusters[rows]
                cm = clustered_mean(self._out_hot[rows], clusters)
                var = deff_floored_variance(rates[i], cm.se**2, totals[i])
                least = least_effective_size(cluster_rows(clusters, int(rows.sum())))
                low[i], high[i] = effective_size_interval(rates[i], var, totals[i, 0], cm.n_clusters,
                                                          self.confidence, cm.df, least)
        inputs = self._truth_hot[self._test_rows].sum(axis=0)
        idx = pd.MultiIndex.from_product([self.categories, self.categories], names=["input", "output"])
        return pd.DataFrame({"count": counts.ravel(), "rate": rates.ravel(), "ci_low": low.ravel(),
                             "ci_high": high.ravel(), "row_total": np.repeat(totals.ravel(), k),
                             "small": np.repeat(inputs < self.frame.min_n, k)}, index=idx).reset_index()

    def confusion(self) -> np.ndarray:
        """Row-normalised transition matrix C[i, j] = P[output j | input i] (NaN rows for absent inputs)."""
        counts = self.transition().to_numpy(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return counts / counts.sum(axis=1, keepdims=True)

    def shares(self) -> pd.DataFrame:
        """Output shares (PR) per category with intervals beside the input shares (column ``reference`` repeats
        them: the PR divergences are taken from the inputs' own shares)."""
        table = self.pr.table
        table.insert(4, "input_share", self.input_shares)
        return table

    # --- preservation (RDP) --------------------------------------------------------------------------------------
    def overall(self) -> pd.DataFrame:
        """Preservation and no-face rates over all groups, with intervals (see ``MetricFrame.overall``)."""
        return self.frame.overall

    def by_group(self) -> pd.DataFrame:
        """Per group: preservation rate (RDP accuracy) and no-face rate with intervals (see ``MetricFrame``)."""
        return self.frame.by_group

    def _p_rdp(self) -> tuple[np.ndarray, np.ndarray]:
        point, reps = self.frame.value("preservation").to_numpy(), self.frame.replicates("preservation")
        with np.errstate(invalid="ignore", divide="ignore"):
            return point / np.nansum(point), reps / np.nansum(reps, axis=1, keepdims=True)

    def rdp(self) -> pd.DataFrame:
        """Per group: preservation rate with interval and its normalised distribution
        P_RDP(g) = acc_g / Σ_g' acc_g' with a bootstrap interval (RDP holds iff P_RDP is uniform)."""
        table = self.frame.by_group.query("metric == 'preservation'").drop(columns="metric").reset_index(drop=True)
        point, reps = self._p_rdp()
        table["p_rdp"] = point
        table["p_rdp_low"], table["p_rdp_high"] = percentile_interval(reps, self.confidence)
        return table

    def differences(self) -> pd.DataFrame:
        """max − min over groups of each metric, with intervals."""
        return self.frame.difference()

    def ratios(self) -> pd.DataFrame:
        """min / max over groups of each metric, with intervals."""
        return self.frame.ratio()

    def divergences(self) -> pd.DataFrame:
        """Divergences (Pearson χ², Chebyshev, KL, TV) with intervals: PR shares vs reference, P_RDP vs uniform,
        and UCPR shares vs prior when uninformative inputs were given. Columns target, divergence, value, ci_*."""
        point, reps = self._p_rdp()
        uniform = np.full(len(point), 1 / len(point))
        rdp = {}
        for key, f in DIVERGENCES.items():
            low, high = percentile_interval(f(reps, uniform), self.confidence)
            rdp[key] = dict(value=float(f(point, uniform)), ci_low=low, ci_high=high)
        parts = {"PR": self.pr.divergences, "P_RDP": pd.DataFrame.from_dict(rdp, orient="index")}
        if self.ucpr is not None:
            parts["UCPR"] = self.ucpr.divergences
        return pd.concat(parts, names=["target", "divergence"]).reset_index()

    # --- tests ---------------------------------------------------------------------------------------------------
    def paired_table(self) -> np.ndarray:
        """k×k counts input → output over each input's lowest sample (output label present)."""
        rows = self._test_rows
        return self._truth_hot[rows].T @ self._out_hot[rows]

    def tests(self) -> list[TestResult]:
        """Max-|T| Wald tests over every sample, clustered by input and stratified by the input label (conditional
        on the inputs' labels), each with simultaneous intervals from the same covariance:

        * ``margins``: output share − input share per category (marginal homogeneity, the clustered Stuart–Maxwell
          / Bhapkar test; categories without inputs are allowed: their difference is their output share);
        * ``positive_share``: the same difference for the ``positive`` class alone;
        * ``flip_symmetry``: share of outputs flipped i → j − share flipped j → i per pair (Bowker's question);
        * ``preservation_gap``: each group's preservation rate − the pooled rate (RDP);
        * ``ucpr``: outputs of uninformative inputs against the stated ``prior`` (score test), when given.

        Computed once and cached."""
        if self._tests is None:
            self._tests = self._run_tests()
        return list(self._tests)

    def _kw(self) -> dict:
        """Settings shared by every test; effects are differences of shares, within ±100 pp."""
        return {"alpha": self.alpha, "power": self.power, "confidence": self.confidence, "seed": self.seed,
                "bounds": (-100.0, 100.0)}

    def _paired_rows(self) -> np.ndarray:
        """Rows with an input label and an output label in the vocabulary."""
        return (self._out_hot.sum(axis=1) > 0) & (self._truth_hot.sum(axis=1) > 0)

    def _margin_design(self) -> tuple[ClusteredMean, np.ndarray]:
        rows = self._paired_rows()
        truth, out = self._truth_hot[rows][:, self._shared], self._out_hot[rows][:, self._shared]
        strata = self._strata[rows]
        keys = np.unique(strata)
        clusters = None if self._clusters is None else self._clusters[rows]
        per = [(out[strata == h].sum(axis=0), (strata == h).sum(),
                len(np.unique(clusters[strata == h])) if clusters is not None else (strata == h).sum()) for h in keys]
        seen = (truth.sum(axis=0) + out.sum(axis=0)) > 0
        floor = np.array([indicator_floor(x, m, c) * seen for x, m, c in per]).reshape(len(keys), -1)
        return clustered_mean(out - truth, clusters, strata, floor), seen

    def _run_tests(self) -> list[TestResult]:
        rows = self._paired_rows()
        n_in = len(np.unique(self._clusters[rows])) if self._clusters is not None else int(rows.sum())
        shared = [c for c in self.categories if c != NO_FACE]
        out = []
        name = f"{self.name}: output vs input shares"
        what = "output share − input share (outputs with a face)"
        if not rows.any():
            out.append(not_testable(name, "margins", "no output with a face and a label", 0, 0, "pp", what))
        else:
            cm, seen = self._margin_design()
            unseen = [c for c, s in zip(shared, seen) if not s]
            note = f"no input or output in: {', '.join(unseen)}" if unseen else ""
            out.append(wald_max_test(cm.estimate, cm.cov, shared, name=name, kind="margins", effect_label=what,
                                     n=n_in, n_samples=int(rows.sum()), df=cm.df, notes=note, **self._kw()))
            if self.positive is not None and self.positive in shared:
                i = shared.index(self.positive)
                out.append(wald_max_test(cm.estimate[[i]], cm.cov[np.ix_([i], [i])], [self.positive],
                                         name=f"{self.name}: share of {self.positive}, output vs input",
                                         kind="positive_share", n=n_in, n_samples=int(rows.sum()), df=cm.df,
                                         effect_label=f"output share − input share of {self.positive}",
                                         **self._kw()))
        out.append(self._flip_test(rows, n_in))
        out.append(self.preservation_test())
        if self.ucpr is not None and self.ucpr.test is not None:
            out.append(self.ucpr.test)
        return out

    def _flip_test(self, rows: np.ndarray, n_in: int) -> TestResult:
        name, what = f"{self.name}: flip symmetry", "share of outputs flipped i → j − share flipped j → i"
        truth, out = self._truth_hot[rows], self._out_hot[rows]
        counts = truth.T @ out
        pairs = [(i, j) for i in range(len(self.categories)) for j in range(i + 1, len(self.categories))
                 if counts[i, j] + counts[j, i] > 0]
        if not pairs:
            reason = "no output with a face and a label" if not rows.any() else "no flip in either direction"
            return not_testable(name, "flip_symmetry", reason, n_in, int(rows.sum()), "pp", what)
        a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        y = truth[:, a] * out[:, b] - truth[:, b] * out[:, a]
        strata = self._strata[rows]
        keys = np.unique(strata)
        clusters = None if self._clusters is None else self._clusters[rows]
        code = {c: i for i, c in enumerate(self.categories)}
        floor = np.zeros((len(keys), len(pairs)))
        for h, key in enumerate(keys):
            m = strata == key
            c = len(np.unique(clusters[m])) if clusters is not None else m.sum()
            g = code.get(key, -1)
            for p, (i, j) in enumerate(pairs):
                if g in (i, j):
                    floor[h, p] = indicator_floor(out[m][:, j if g == i else i].sum(), m.sum(), c)
        cm = clustered_mean(y, clusters, strata, floor)
        labels = [f"{self.categories[i]} → {self.categories[j]} vs back" for i, j in pairs]
        return wald_max_test(cm.estimate, cm.cov, labels, name=name, kind="flip_symmetry", effect_label=what,
                             n=n_in, n_samples=int(rows.sum()), df=cm.df, **self._kw())

    def preservation_test(self) -> TestResult:
        """Preservation rate of each group − the pooled rate (weights: the groups' shares of rows), max-|T| test
        with each group's variance from :func:`null_floored_variance` (groups are independent strata): its
        cluster-robust variance, but never below its value under the null of equal rates. The intervals are
        gap ∓ c·se from that same covariance, so a test rejects exactly when one of them excludes 0."""
        name = f"{self.name}: preservation equal across groups"
        what = "group's preservation rate − pooled rate of all groups"
        design = self.frame.design("preservation").iloc[:-1]
        kept = design[design["n"] > 0]
        n_in, n_rows = int(kept["n_clusters"].sum()), int(kept["n"].sum())
        if len(kept) < 2:
            return not_testable(name, "preservation_gap", "fewer than two groups with an output label", n_in,
                                n_rows, "pp", what)
        p, m, c = kept["value"].to_numpy(float), kept["n"].to_numpy(float), kept["n_clusters"].to_numpy(float)
        var = np.maximum(null_floored_variance(p, kept["se"].to_numpy(float) ** 2, m), indicator_floor(p * m, m, c))
        w = m / m.sum()
        contrast = np.eye(len(p)) - w[None, :]
        labels = [str(g) for g in kept.index]
        return wald_max_test(contrast @ p, contrast @ np.diag(var) @ contrast.T, labels, name=name,
                             kind="preservation_gap", effect_label=what, n=n_in, n_samples=n_rows,
                             df=float(c.sum() - len(c)), **self._kw())

    def report_tests(self, method: str = "holm") -> pd.DataFrame:
        """This audit's tests with adjusted p-values (for a whole report pass every audit to
        :func:`audit.stats.multitest.report_tests` so that they form one family)."""
        return report_tests(self, method=method, alpha=self.alpha)

    def warnings(self) -> list[str]:
        """Plain-language small-sample and data warnings."""
        notes = [f"{self.n_unlabelled} row(s) without an input label excluded"] if self.n_unlabelled else []
        if self.frame.n_dropped:
            notes.append(f"{self.frame.n_dropped} row(s) without a group value excluded")
        small = self.frame.by_group.query("metric == 'preservation' and small")
        for _, row in small.iterrows():
            label = ", ".join(str(row[g]) for g in self.groups)
            notes.append(f"group {label}: only {row['n_clusters']} inputs (< {self.frame.min_n}); intervals are wide")
        if self.pr.n_outside:
            notes.append(f"{self.pr.n_outside} output label(s) outside the vocabulary ignored")
        if self.ucpr is not None and self.ucpr.test is None:
            notes.append("UCPR shares are descriptive: no stated reference for this attribute, so nothing is tested")
        notes += [f"{t.name}: {t.notes}" for t in self.tests() if t.notes]
        notes += [f"{t.name}: not testable ({t.reason})" for t in self.tests() if not t.testable]
        return notes
