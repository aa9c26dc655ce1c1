"""Statistics for audits: intervals, bootstrap, clustered (stratified, cluster-robust) means, max-|T| tests with
intervals that agree with them, minimum detectable effects, divergences and multiple-testing adjustment with three
verdicts. Independent of the run table's schema (arrays in, numbers out)."""

from audit.stats.between import range_interval, ratio_interval
from audit.stats.clustered import (
    ClusteredMean,
    clustered_mean,
    deff_floored_variance,
    indicator_floor,
    null_floored_variance,
    pooled_design_effect,
)
from audit.stats.divergences import DIVERGENCES, chebyshev, divergences, kl, pearson_chi2, total_variation
from audit.stats.intervals import (
    Bootstrap,
    bootstrap_interval,
    clopper_pearson_interval,
    effective_inputs,
    effective_size,
    effective_size_bounds,
    effective_size_interval,
    median_interval,
    median_se,
    order_statistic_rank,
    percentile_interval,
    rank_bounds,
    wilson_bounds,
    wilson_interval,
)
from audit.stats.multitest import adjust, adjusted_levels, benjamini_hochberg, holm, report_tests, verdicts
from audit.stats.power import mde_mcnemar, mde_shift, mde_w, noncentrality
from audit.stats.simultaneous import ScoreMaxT, WaldMaxT
from audit.stats.tests import (
    VERDICTS,
    TestResult,
    bowker,
    chi2_gof,
    chi2_independence,
    mcnemar,
    not_testable,
    score_max_test,
    stuart_maxwell,
    wald_max_test,
    wilcoxon_signed_rank,
)

__all__ = [
    "Bootstrap", "ClusteredMean", "DIVERGENCES", "ScoreMaxT", "TestResult", "VERDICTS", "WaldMaxT", "adjust",
    "adjusted_levels", "benjamini_hochberg", "bootstrap_interval", "bowker", "chebyshev", "chi2_gof",
    "chi2_independence", "clopper_pearson_interval", "clustered_mean", "deff_floored_variance", "divergences",
    "effective_inputs", "effective_size", "effective_size_bounds", "effective_size_interval", "holm", "indicator_floor",
    "kl", "mcnemar", "mde_mcnemar", "mde_shift", "mde_w", "median_interval", "median_se", "noncentrality",
    "not_testable", "null_floored_variance", "order_statistic_rank", "pearson_chi2", "percentile_interval",
    "pooled_design_effect", "range_interval", "rank_bounds", "ratio_interval", "report_tests", "score_max_test",
    "stuart_maxwell", "total_variation", "verdicts", "wald_max_test", "wilcoxon_signed_rank", "wilson_bounds",
    "wilson_interval",
]
