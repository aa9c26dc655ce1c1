"""Statistics for audits: intervals, bootstrap, hypothesis tests with minimum detectable effects, divergences and
multiple-testing adjustment. Independent of the run table's schema (arrays in, numbers out)."""

from audit.stats.divergences import DIVERGENCES, chebyshev, divergences, kl, pearson_chi2, total_variation
from audit.stats.intervals import (Bootstrap, bootstrap_interval, clopper_pearson_interval, percentile_interval,
                                   weighted_median, wilson_interval)
from audit.stats.multitest import adjust, benjamini_hochberg, holm, report_tests
from audit.stats.power import mde_mcnemar, mde_shift, mde_w, noncentrality
from audit.stats.tests import (TestResult, bowker, chi2_gof, chi2_independence, mcnemar, stuart_maxwell,
                               wilcoxon_signed_rank)

__all__ = [
    "DIVERGENCES", "Bootstrap", "TestResult", "adjust", "benjamini_hochberg", "bootstrap_interval", "bowker",
    "chebyshev", "chi2_gof", "chi2_independence", "clopper_pearson_interval", "divergences", "holm", "kl",
    "mcnemar", "mde_mcnemar", "mde_shift", "mde_w", "noncentrality", "pearson_chi2", "percentile_interval",
    "report_tests", "stuart_maxwell", "total_variation", "weighted_median", "wilcoxon_signed_rank", "wilson_interval",
]
