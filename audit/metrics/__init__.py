"""Metrics over a run table (one row per input × sample): by-group frames with intervals, attribute audits
(transition, RDP, PR, UCPR, divergences, tests), paired continuous shifts, upsampler diagnostics, image quality and
the classifier's noise floor. Column names are passed in; :mod:`audit.metrics.columns` maps attribute + classifier
to the run table's names."""

from audit.metrics.attribute import NO_FACE, AttributeAudit
from audit.metrics.classifier import corrected_shares, noise_floor, project_to_simplex
from audit.metrics.continuous import PairedShift, mean_per_input, upsampler_metrics
from audit.metrics.distribution import DistributionFit, first_sample
from audit.metrics.frame import Metric, MetricFrame
from audit.stats.multitest import report_tests
from audit.vision.image_quality import psnr, ssim

__all__ = [
    "NO_FACE", "AttributeAudit", "DistributionFit", "Metric", "MetricFrame", "PairedShift", "corrected_shares",
    "first_sample", "mean_per_input", "noise_floor", "project_to_simplex", "psnr", "report_tests", "ssim",
    "upsampler_metrics",
]
