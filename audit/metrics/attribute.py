"""Input → output audit of one categorical attribute (race, gender, age bin, Monk tone …) over a run table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from audit.metrics.columns import ITEM, SAMPLE, classifier_column, require, truth_column
from audit.metrics.distribution import DistributionFit, first_sample, is_missing, one_hot
from audit.metrics.frame import MIN_N, Metric, MetricFrame
from audit.stats.divergences import DIVERGENCES
from audit.stats.intervals import Bootstrap, percentile_interval
from audit.stats.multitest import report_tests
from audit.stats.tests import TestResult, bowker, chi2_independence, mcnemar, stuart_maxwell

NO_FACE = "(no face)"


class AttributeAudit:
    """Transition matrix, preservation (RDP), output shares (PR), UCPR, divergences and tests for one attribute.

    Args:
        data: the run table, one row per input × sample.
        truth: column of the input label (dataset label or classifier on the original).
        output: column of the classifier's label on the output ("" / NaN: no face found).
        groups: group column(s) for by-group metrics, several for intersections (default: ``truth``).
        cluster: input id column; samples of one input are resampled together and tests use one of them.
        sample: sample index column; tests use each input's lowest sample.
        categories: label vocabulary in display order (default: sorted labels seen).
        reference: shares the output distribution is tested against (default: the inputs' own label shares).
        positive: a class for the binary McNemar collapse ("White" vs not); None skips it.
        uninformative: run table of uninformative inputs (e.g. 4×4 average faces) for UCPR, same columns.
        prior: reference for UCPR (default: ``reference``, or uniform when that is the input shares).
        missing_output: "drop" (default: rows without an output label leave label metrics; their rate is the
            ``no_face`` metric) or "category" (they become the class "(no face)": a flip in
            the transition matrix, preservation and paired tests; output shares (PR, UCPR) stay among found faces).
    Rows without an input label are excluded (``n_unlabelled``).
    """

    def __init__(self, data: pd.DataFrame, truth: str, output: str, *, groups: str | Sequence[str] | None = None,
                 cluster: str | None = ITEM, sample: str | None = SAMPLE, categories: Sequence[str] | None = None,
                 reference: Mapping[str, float] | Sequence[float] | None = None, positive: str | None = None,
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
        self.frame = MetricFrame(d, {"preservation": Metric("_preserved", "rate"), "no_face": Metric("_no_face", "rate")}, groups, cluster, n_boot,
                                 seed, confidence, min_n)
        self.data, self.groups = self.frame.data, groups
        self._truth_hot = one_hot(self.data[truth], self.categories)
        self._out_hot = one_hot(self.data[output].where(~is_missing(self.data[output]), ""), self.categories)
        self._test_rows = first_sample(self.data, cluster, sample)
        input_shares = self._truth_hot[self._test_rows].sum(axis=0)
        shared = [c for c in self.categories if c != NO_FACE]  # shares are among outputs where a face was found
        input_shares = input_shares[np.array([c != NO_FACE for c in self.categories], bool)]
        ref = reference if reference is not None else input_shares
        self.pr = DistributionFit(self.data[output], shared, ref, self.frame.bootstrap, self._test_rows,
                                  f"{self.name}: output shares (PR)", confidence, alpha, power, seed)
        self.input_shares = input_shares / max(input_shares.sum(), 1)
        self.ucpr, self._tests = None, None
        if uninformative is not None:
            require(uninformative, output, cluster)
            strata = uninformative[cluster].to_numpy() if cluster else None
            design = Bootstrap(len(uninformative), strata, None, n_boot, seed)
            self.ucpr = DistributionFit(uninformative[output], shared,
                                        prior if prior is not None else reference, design, None,
                                        f"{self.name}: uninformative inputs (UCPR)", confidence, alpha, power, seed)

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
        bootstrap interval, row_total, small (the input class has < min_n inputs)."""
        k = len(self.categories)
        pairs = (self._truth_hot[:, :, None] * self._out_hot[:, None, :]).reshape(len(self.data), k * k)
        reps = self.frame.bootstrap.sums(pairs).reshape(-1, k, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = reps / reps.sum(axis=2, keepdims=True)
            counts = self.transition().to_numpy()
            totals = counts.sum(axis=1, keepdims=True)
            rates = counts / totals
        low, high = percentile_interval(reps, self.confidence)
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
        """Output shares (PR) per category with intervals beside the input shares and the reference."""
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
        """k×k counts input → output over the test units (one sample per input, output label present)."""
        rows = self._test_rows
        return self._truth_hot[rows].T @ self._out_hot[rows]

    def tests(self) -> list[TestResult]:
        """χ² GOF of output shares vs reference (PR); k×2 independence of group × {preserved, flipped} on real
        counts (RDP); Stuart–Maxwell and Bowker on the paired table; McNemar for the ``positive`` collapse; χ² GOF
        for UCPR. All on independent units (one sample per input; UCPR uses all samples, see DistributionFit).
        Computed once and cached."""
        if self._tests is None:
            self._tests = self._run_tests()
        return list(self._tests)

    def _run_tests(self) -> list[TestResult]:
        kw = dict(alpha=self.alpha, power=self.power)
        rows = self._test_rows & np.isfinite(self.data["_preserved"].to_numpy(float))
        kept = self.data["_preserved"].to_numpy(float)[rows]
        codes = self.frame.codes[rows]
        correct = np.bincount(codes, weights=kept, minlength=self.frame.n_groups)
        total = np.bincount(codes, minlength=self.frame.n_groups)
        table = self.paired_table()
        out = [self.pr.test,
               chi2_independence(np.stack([correct, total - correct], axis=1),
                                 f"{self.name}: preservation equal across groups (RDP, k×2)", seed=self.seed, **kw),
               stuart_maxwell(table, f"{self.name}: input vs output margins (Stuart–Maxwell)", **kw),
               bowker(table, f"{self.name}: flip symmetry (Bowker)", seed=self.seed, **kw)]
        if self.positive is not None:
            i = self.categories.index(self.positive)
            pos, neg = table[i], np.delete(table, i, axis=0)
            collapsed = [[pos[i], pos.sum() - pos[i]], [neg[:, i].sum(), neg.sum() - neg[:, i].sum()]]
            out.append(mcnemar(collapsed, f"{self.name}: {self.positive} vs not, input vs output (McNemar)", **kw))
        if self.ucpr is not None:
            out.append(self.ucpr.test)
        return out

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
        notes += [f"{t.name}: {t.notes}" for t in self.tests() if t.notes]
        return notes
